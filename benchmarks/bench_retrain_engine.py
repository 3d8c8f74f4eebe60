"""The two retraining engines side by side: CPU seconds per model and epoch, epochs/s, peak memory.

    OMP_NUM_THREADS=1 python benchmarks/bench_retrain_engine.py --shape 1 28 --images 10 --models 5 --epochs 40

Trains ``--models`` fresh networks on random images of the given shape (``--images`` per set, one set per
model) with a retraining recipe (``dc`` by default, DC's augmentation) through ``retrain_population`` with
``engine="stacked"`` and ``engine="plain"``, after a two-epoch warm-up of each, one process, ``--threads``, and
prints a row per engine plus the engine ``auto`` picks.  The test pass is left out (``--epochs`` of training
only).  The table of ``docs/performance.md#the-retraining-engine`` is this script's output.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import torch
from tabulate import tabulate

from dsvbench.config import eval_recipe
from dsvbench.models import MODELS, InputShape, activation_bytes, create_model
from dsvbench.process import configure, peak_rss_mb
from dsvbench.training import retrain_engine, retrain_population


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--shape", type=int, nargs=2, default=[1, 28], metavar=("CHANNELS", "SIZE"), help="image shape (default 1 28)")
    add("--model", default="convnet", choices=MODELS.names())
    add("--images", type=int, default=10, help="images per set (10 = IPC 1 with 10 classes)")
    add("--models", type=int, default=5, help="models in the population (default 5: five seeds)")
    add("--epochs", type=int, default=40)
    add("--recipe", default="dc")
    add("--threads", type=int, default=1, help="torch threads (default 1, as a --jobs worker or a busy machine)")
    args = parser.parse_args(argv)
    if min(args.shape + [args.images, args.models, args.epochs, args.threads]) < 1:
        parser.exit(2, "bench_retrain_engine.py: error: every count must be at least 1\n")
    return args


def train(engine: str, models, sets, recipe) -> None:
    """``retrain_population`` with ``engine``, on an empty test split (its test pass left out)."""
    generators = [torch.Generator().manual_seed(i) for i in range(len(models))]
    no_test = sets[0][0][:0], sets[0][1][:0]
    retrain_population(models, generators, sets, *no_test, recipe, engine=engine)


def main(argv=None) -> int:
    args = parse_args(argv)
    configure(args.threads)
    channels, size = args.shape
    shape = InputShape(channels, size, 10)
    dataset = "mnist" if (channels, size) == (1, 28) else "digits" if size == 8 else "cifar10"
    recipe = dataclasses.replace(eval_recipe(args.recipe, dataset), extra_pass=False)
    generator = torch.Generator().manual_seed(0)
    sets = [(torch.randn(args.images, channels, size, size, generator=generator),
             torch.arange(args.images) % 10) for _ in range(args.models)]
    rows = []
    for engine in ("stacked", "plain"):
        models = [create_model(args.model, shape, torch.Generator().manual_seed(i)) for i in range(args.models)]
        train(engine, models, sets, dataclasses.replace(recipe, epochs=2))
        timed = dataclasses.replace(recipe, epochs=args.epochs)
        cpu, wall = time.process_time(), time.perf_counter()
        train(engine, models, sets, timed)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        rows.append([engine, f"{1000 * cpu / args.epochs / args.models:.2f}", f"{wall:.2f}",
                     f"{args.epochs * args.models / wall:.1f}"])
    probe = create_model(args.model, shape)
    print(f"{args.model} on {channels}x{size}x{size}, {args.images} images per set, {args.models} models, "
          f"{args.threads} thread(s), "
          f"{args.epochs} epochs of the {args.recipe} recipe; {activation_bytes(probe, sets[0][0][:1]) // 1024} KiB "
          f"of activations per image; auto picks {retrain_engine('auto', probe, sets[0][0])}; peak RSS of the process "
          f"(both engines) {peak_rss_mb():.0f} MB")
    print(tabulate(rows, ["engine", "CPU ms per model-epoch", "wall s", "model-epochs/s"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
