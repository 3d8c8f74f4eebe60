"""Training-data reconstruction benchmark (Haim et al. 2022's setting, through our DeepKKT engine).

    python benchmarks/reconstruct.py --case mnist-binary --data-root ../shared/datasets/mnist --out results/recon-mnist

CPU defaults (minutes): 50 training images per class, width 200, 2N candidates, 3000 steps.
The published size: --per-class 250 --width 1000 --steps 50000 (Haim et al.).  Writes
``summary.json`` (``benchmarks/recon_table.py`` tabulates several) and PNG pairs (training image over its reconstruction) into --out.
``--engine`` picks dsvg's builder (``dsvg``), Haim et al.'s loop written out on its own
(``haim``) or both; ``--set field=value`` changes one dsvg field (the ladder, docs/reconstruction.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

from dsvbench.atomic import atomic_write_json
from dsvbench.methods.base import parse_field_value
from dsvbench.models import create_model
from dsvbench.registry import UserError
from dsvbench.process import configure
from dsvbench.recon_scores import save_pairs, score
from dsvbench.reconstruction import (CASES, HaimMLP, TrainRecipe, dsv_theta, engine_reconstruct, haim_reference,
                                     load_case, retrain_accuracy, train_theta)

NOTE_FULL = "published size: 250 per class, width 1000, 50 000 steps (Haim et al.)"


def parse_fields(items: list[str]) -> dict:
    """FIELD=VALUE strings → {field: typed value} for DSVgRecipe fields (``base=dsvg`` kept as is)."""
    from dsvbench.methods.dsvg import DSVgRecipe
    types = {f.name: f.type for f in dataclasses.fields(DSVgRecipe)}
    parsed = {}
    for item in items:
        field, sep, value = item.partition("=")
        if field == "base" and value in ("haim", "dsvg"):
            parsed[field] = value
            continue
        if not sep or field not in types:
            raise ValueError(f"{item!r}: expected FIELD=VALUE with a dsvg recipe field")
        parsed[field] = parse_field_value(value, types[field], f"dsvg.{field}")   # as run_bench's --set
    return parsed


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=CASES, default="mnist-binary")
    parser.add_argument("--data-root", required=True, help="MNIST IDX folder (or extracted CIFAR-10 image folder)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--heldout-per-class", type=int, default=500)
    parser.add_argument("--width", type=int, default=200)
    parser.add_argument("--model", default="haim-mlp", help="haim-mlp (Haim et al.'s MLP) or a registered model")
    parser.add_argument("--retrain-ipc", default="", help="e.g. 1,10: retraining accuracy of the top-λ candidates")
    parser.add_argument("--theta", choices=("gd", "dsv", "dsv-polished"), default="gd",
                        help="gd: full-batch GD on the case (Haim et al.); dsv: the θ* of DSV's methods (--model "
                             "trained by the suite's pretraining on the full split, classifier polish); "
                             "dsv-polished: the same with the all-layer polish")
    parser.add_argument("--cache-dir", default=".dsvbench_cache", help="θ* cache of --theta dsv (run_bench's default)")
    parser.add_argument("--init", type=float, default=1e-4, help="first-layer init scale (Haim et al.: 1e-4)")
    parser.add_argument("--train-steps", type=int, default=20000)
    parser.add_argument("--train-lr", type=float, default=0.01)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--scale-cap", type=float, default=1000.0, help="θ* steps × min(1/loss, cap); 1 = plain GD")
    parser.add_argument("--steps", type=int, default=3000, help="reconstruction steps")
    parser.add_argument("--candidates-factor", type=int, default=2, help="candidates = factor × N")
    parser.add_argument("--engine", choices=("dsvg", "haim", "both"), default="both")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a dsvg recipe field for every engine run (repeatable)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:FIELD=VALUE,...",
                        help="one more engine run on the same θ* with these fields changed (repeatable); "
                             "base=dsvg starts from dsvg's defaults instead of Haim et al.'s fields")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.theta != "gd" and (args.model == "haim-mlp" or args.per_class != 0):
        parser.exit(2, "reconstruct.py: error: --theta dsv needs a registered --model and --per-class 0 (DSV's θ* "
                       "is trained on the whole training split)\n")
    if args.engine == "haim" and not args.case.endswith("binary"):
        parser.exit(2, "reconstruct.py: error: --engine haim is Haim et al.'s binary loop; use a *-binary case\n")
    if args.theta != "gd" and not args.case.startswith(("digits", "mnist")):
        parser.exit(2, "reconstruct.py: error: --theta dsv is available for the digits and mnist cases\n")
    if args.per_class < 0:
        parser.exit(2, f"reconstruct.py: error: --per-class must be >= 0 (0 = all), got {args.per_class}\n")
    for value, name in ((args.width, "--width"), (args.steps, "--steps"),
                        (args.candidates_factor, "--candidates-factor"), (args.threads, "--threads")):
        if value < 1:
            parser.exit(2, f"reconstruct.py: error: {name} must be >= 1, got {value}\n")
    try:
        args.overrides = parse_fields(args.set)
        args.variants = [(name, parse_fields(fields.split(",") if fields else []))
                         for name, _, fields in (v.partition(":") for v in args.variant)]
    except (ValueError, UserError) as error:
        parser.exit(2, f"reconstruct.py: error: {error}\n")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    configure(args.threads)
    out = Path(args.out)
    case = load_case(args.case, args.per_class, args.heldout_per_class, args.data_root)
    binary = case.name.endswith("binary")
    generator = torch.Generator().manual_seed(args.seed)
    if args.model == "haim-mlp":
        model = HaimMLP(case.shape, args.width, outputs=1 if binary else case.num_classes, init=args.init,
                        generator=generator)
    else:
        model = create_model(args.model, case.shape, generator)
    if args.theta == "gd":
        fit = train_theta(model, case, TrainRecipe(args.train_steps, args.train_lr, args.weight_decay, args.scale_cap))
    else:
        model, fit = dsv_theta(case, args.model, args.data_root, args.cache_dir,
                               "all" if args.theta == "dsv-polished" else "classifier")
    print(f"theta: {json.dumps(fit)}", flush=True)
    per_class = args.candidates_factor * math.ceil(len(case.train_y) / case.num_classes)   # 2N candidates
    config = {k: v for k, v in vars(args).items() if k not in ("set", "variant")}
    full = args.per_class >= 250 and args.width >= 1000 and args.steps >= 50000
    budget = "full" if full else f"reduced ({NOTE_FULL})"
    runs = [("dsvg", "dsvg", args.overrides)] if args.engine != "haim" else []
    runs += [("haim", "haim", {})] if args.engine != "dsvg" and binary else []
    runs += [(name, "dsvg", {**args.overrides, **fields}) for name, fields in args.variants]
    rows = []
    for name, engine, overrides in runs:
        start = time.perf_counter()
        if engine == "dsvg":
            images, labels, info = engine_reconstruct(model, case, per_class, overrides, args.seed, args.steps)
        else:
            images, labels, info = haim_reference(model, case, per_class, args.seed, args.steps)
        seconds = time.perf_counter() - start
        scores, haim = score(case.train_x, case.heldout_x, images, case.mean, torch.Generator().manual_seed(1))
        save_pairs(case.train_x, images, case.mean, haim, out / f"pairs-{name}.png")
        if args.retrain_ipc and engine == "dsvg":
            scores["retrain_dc"] = retrain_accuracy(case, images, labels, [int(v) for v in args.retrain_ipc.split(",")],
                                                    case.name.split("-")[0], args.data_root, args.seed)
        row = {"run": name, "engine": engine, "changed": dict(overrides), **scores,
               "seconds": round(seconds, 1), "steps_per_s": round(args.steps / seconds, 1)}
        print(json.dumps(row), flush=True)
        rows.append({**row, "info": info})
        atomic_write_json(out / "summary.json", {"config": config, "theta": fit, "rows": rows, "budget": budget})  # each run
    return 0


if __name__ == "__main__":
    sys.exit(main())
