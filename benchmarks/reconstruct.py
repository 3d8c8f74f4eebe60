"""Training-data reconstruction benchmark (Haim et al. 2022's setting, through our DeepKKT engine).

    python benchmarks/reconstruct.py --case mnist-binary --data-root ../shared/datasets/mnist --out results/recon-mnist

CPU defaults (minutes): 50 training images per class, width 200, 2N candidates, 3000 steps.
The published size: --per-class 250 --width 1000 --steps 50000 (Haim et al.).  Writes
``summary.json``, ``table.md`` and PNG pairs (training image over its reconstruction) into --out.
``--engine`` picks dsvg's builder (``dsvg``), Haim et al.'s loop written out on its own
(``haim``) or both; ``--set field=value`` changes one dsvg field (the ladder, docs/reconstruction.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from dsvbench.process import configure
from dsvbench.recon_scores import save_pairs, score
from dsvbench.reconstruction import (CASES, HAIM_FIELDS, HaimMLP, TrainRecipe, engine_reconstruct, haim_reference,
                                     load_case, save_json, train_theta)

NOTE_FULL = "published size: 250 per class, width 1000, 50 000 steps (Haim et al.)"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=CASES, default="mnist-binary")
    parser.add_argument("--data-root", required=True, help="MNIST IDX folder (or extracted CIFAR-10 image folder)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--heldout-per-class", type=int, default=500)
    parser.add_argument("--width", type=int, default=200)
    parser.add_argument("--init", type=float, default=1e-4, help="first-layer init scale (Haim et al.: 1e-4)")
    parser.add_argument("--train-steps", type=int, default=20000)
    parser.add_argument("--train-lr", type=float, default=0.01)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--scale-cap", type=float, default=1000.0, help="θ* steps × min(1/loss, cap); 1 = plain GD")
    parser.add_argument("--steps", type=int, default=3000, help="reconstruction steps")
    parser.add_argument("--candidates-factor", type=int, default=2, help="candidates = factor × N")
    parser.add_argument("--engine", choices=("dsvg", "haim", "both"), default="both")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a dsvg recipe field")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    for value, name in ((args.per_class, "--per-class"), (args.width, "--width"), (args.steps, "--steps"),
                        (args.candidates_factor, "--candidates-factor"), (args.threads, "--threads")):
        if value < 1:
            parser.exit(2, f"reconstruct.py: error: {name} must be >= 1, got {value}\n")
    args.overrides = {}
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep or field not in HAIM_FIELDS and field not in ("tv_weight", "l2_weight", "lambda_warmup", "chunk"):
            parser.exit(2, f"reconstruct.py: error: --set {item!r}: FIELD=VALUE with a dsvg field\n")
        default = HAIM_FIELDS.get(field, 0.0)
        args.overrides[field] = type(default)(value) if not isinstance(default, bool) else value == "true"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    configure(args.threads)
    out = Path(args.out)
    case = load_case(args.case, args.per_class, args.heldout_per_class, args.data_root)
    binary = case.name.endswith("binary")
    generator = torch.Generator().manual_seed(args.seed)
    model = HaimMLP(case.shape, args.width, outputs=1 if binary else case.num_classes, init=args.init,
                    generator=generator)
    fit = train_theta(model, case, TrainRecipe(args.train_steps, args.train_lr, args.weight_decay, args.scale_cap))
    print(f"theta: {json.dumps(fit)}", flush=True)
    per_class = args.candidates_factor * args.per_class
    rows = []
    engines = ["dsvg", "haim"] if args.engine == "both" else [args.engine]
    for engine in engines:
        if engine == "haim" and not binary:
            continue
        start = time.perf_counter()
        if engine == "dsvg":
            images, _, info = engine_reconstruct(model, case, per_class, args.overrides, args.seed, args.steps)
        else:
            images, _, info = haim_reference(model, case, per_class, args.seed, args.steps)
        seconds = time.perf_counter() - start
        scores, haim = score(case.train_x, case.heldout_x, images, case.mean, torch.Generator().manual_seed(1))
        save_pairs(case.train_x, images, case.mean, haim, out / f"pairs-{engine}.png")
        row = {"engine": engine, **scores, "seconds": round(seconds, 1),
               "steps_per_s": round(args.steps / seconds, 1)}
        print(json.dumps(row), flush=True)
        rows.append({**row, "info": info})
    config = {k: v for k, v in vars(args).items() if k not in ("set",)}
    save_json(out / "summary.json", {"config": config, "theta": fit, "rows": rows,
                                     "budget": "full" if args.per_class >= 250 and args.width >= 1000 and args.steps >= 50000
                                     else f"reduced ({NOTE_FULL})"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
