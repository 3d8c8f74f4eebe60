"""Time each method's build, seed by seed and batched, and optionally the retraining.

    python benchmarks/bench_methods.py --dataset digits --methods dsvg dc --seeds 3
    python benchmarks/bench_methods.py --dataset digits --methods dsvg --set dsvg.steps=200 --device cuda
    python benchmarks/bench_methods.py --dataset folder --data-root data/cifar10-jpeg --reference-dataset cifar10 \\
        --methods random --retrain 10 --eval-epochs 50 --device cuda

Per method: seconds per seed built one by one (``spec.build`` per seed) and batched
(``spec.build_all``, i.e. the method's ``build_many``), batched ÷ one-by-one, steps/s
where the recipe has ``steps`` or ``iterations`` (seeds × steps / seconds), and peak
memory (CUDA: max allocated during that build; CPU: the process's peak RSS so far, which
never goes down).  Each timing gets fresh contexts and a fresh method cache folder, as a
fresh run would.  ``--retrain N`` times ``retrain_population`` on N random sets
(10 training images per class each) against N ``retrain`` calls, once per evaluation recipe
of the chosen columns.  Budgets are the published ones unless ``--set`` /
``--eval-epochs`` / ``--pretrain-epochs`` reduce them, which the output says.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import dsvbench  # noqa: F401  (first: it asks torch for huge pages before torch loads, dsvbench.process)
import torch
from tabulate import tabulate

from dsvbench.options import config_from_flags
from dsvbench.runinfo import budget_notes
from dsvbench.config import BenchConfig, to_dict
from dsvbench.data import ImageDataset
from dsvbench.plan import column_eval_recipe, method_recipe
from dsvbench.tasks import make_context, prepare
from dsvbench.methods import METHODS, MethodSpec
from dsvbench.models import create_model
from dsvbench.process import allocator_note, keep_freed_memory, peak_memory_mb
from dsvbench.registry import UserError
from dsvbench.training import retrain, retrain_population

RETRAIN_IPC = 10   # images per class in each random set that --retrain trains on


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--dataset", default="digits")
    add("--data-root", default="data")
    add("--reference-dataset")
    add("--methods", nargs="+", default=["all"], help="method ids or 'all'")
    add("--seeds", type=int, default=3, help="seeds 0..N-1 timed per method (default 3)")
    add("--ipc", type=int, default=1)
    add("--model", default="convnet")
    add("--set", dest="overrides", action="append", default=[], metavar="METHOD.FIELD=VALUE")
    add("--device", default="cpu")
    add("--pretrain-epochs", type=int)
    add("--eval-epochs", type=int, help="retraining epochs for --retrain (default: the recipe's)")
    add("--cache-dir", default=".dsvbench_cache")
    add("--retrain", type=int, default=0, metavar="N", help="also time retraining N random sets")
    return parser.parse_args()


def make_config(args: argparse.Namespace, out: str) -> BenchConfig:
    """The run's config exactly as ``run_bench.py`` would build it from the same flags."""
    return config_from_flags(**{k: v for k, v in vars(args).items() if k != "retrain"}, out=out)


def measure(device: torch.device, work: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, peak MB) of ``work()``; CUDA peak is reset first, CPU peak RSS is the process's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    result = work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return result, seconds, peak_memory_mb(device)


def step_count(recipe: Any) -> int | None:
    for name in ("steps", "iterations"):
        if isinstance(getattr(recipe, name, None), int):
            return getattr(recipe, name)
    return None


def time_method(config: BenchConfig, spec: MethodSpec, dataset: ImageDataset, pretrained, scratch: Path) -> list:
    """One table row: one-by-one and batched builds of all seeds, from fresh contexts each."""
    recipe = method_recipe(config, spec, config.defaults_dataset)
    device = torch.device(config.device)

    def contexts(mode: str):
        return [replace(make_context(config, spec, seed, dataset, pretrained), cache_dir=scratch / spec.name / mode)
                for seed in config.seeds]

    seeds, steps = len(config.seeds), step_count(recipe)
    single = contexts("one-by-one")
    _, one_seconds, one_peak = measure(device, lambda: [spec.build(ctx, recipe) for ctx in single])
    del single
    row = [spec.name, seeds, f"{one_seconds / seeds:.2f}"]
    if spec.build_many is None or seeds < 2:
        why = "no batched builder" if spec.build_many is None else "needs 2+ seeds"
        return row + [why, "-", _rate(steps, seeds, one_seconds), "-", f"{one_peak:.0f}", "-"]
    together = contexts("batched")
    _, batch_seconds, batch_peak = measure(device, lambda: spec.build_all(together, recipe))
    return row + [f"{batch_seconds / seeds:.2f}", f"{batch_seconds / one_seconds:.2f}",
                  _rate(steps, seeds, one_seconds), _rate(steps, seeds, batch_seconds),
                  f"{one_peak:.0f}", f"{batch_peak:.0f}"]


def _rate(steps: int | None, seeds: int, seconds: float) -> str:
    return "-" if steps is None else f"{steps * seeds / seconds:.1f}"


def eval_recipes(config: BenchConfig) -> dict[Any, list[str]]:
    """Each distinct evaluation recipe of the chosen columns -> the columns retrained with it."""
    columns: dict[Any, list[str]] = {}
    for name in config.methods:
        columns.setdefault(column_eval_recipe(config, METHODS.get(name), config.defaults_dataset), []).append(name)
    return columns


def warm_up(config: BenchConfig, dataset: ImageDataset) -> None:
    """One epoch of retraining per recipe, untimed, so that the first timing pays no start-up
    (thread pools, CUDA context, cuDNN autotuning) that the later ones are spared."""
    device = torch.device(config.device)
    test = dataset.test_x[:256].to(device), dataset.test_y[:256].to(device)
    sets = [_random_set(dataset, seed, device) for seed in range(2)]
    for evaluation in eval_recipes(config):
        one_epoch = replace(evaluation, epochs=1)
        (model, _), (generator, _) = _fresh_models(config, dataset, 2, device)
        retrain(model, *sets[0], *test, one_epoch, generator)
        retrain_population(*_fresh_models(config, dataset, 2, device), sets, *test, one_epoch)


def time_retraining(config: BenchConfig, dataset: ImageDataset, population: int) -> list[list]:
    """Per evaluation recipe of the chosen columns: ``population`` random sets retrained as one
    stacked population vs one ``retrain`` call each (same models, generators and sets)."""
    device = torch.device(config.device)
    columns = eval_recipes(config)
    test = dataset.test_x.to(device), dataset.test_y.to(device)
    sets = [_random_set(dataset, seed, device) for seed in range(population)]
    rows = []
    for evaluation, names in columns.items():
        models, generators = _fresh_models(config, dataset, population, device)
        sequential, seq_seconds, _ = measure(device, lambda: [
            retrain(m, x, y, *test, evaluation, g) for m, g, (x, y) in zip(models, generators, sets)])
        models, generators = _fresh_models(config, dataset, population, device)
        stacked, pop_seconds, peak = measure(
            device, lambda: retrain_population(models, generators, sets, *test, evaluation))
        accuracy = {k: sum(r.test_accuracy for r in v) / population
                    for k, v in (("seq", sequential), ("pop", stacked))}
        rows.append([evaluation.name, " ".join(names), population, evaluation.epochs,
                     f"{seq_seconds / population:.2f}", f"{pop_seconds / population:.2f}",
                     f"{pop_seconds / seq_seconds:.2f}", f"{accuracy['seq']:.1f} / {accuracy['pop']:.1f}",
                     f"{peak:.0f}"])
    return rows


def _fresh_models(config: BenchConfig, dataset: ImageDataset, count: int, device: torch.device):
    """``count`` freshly initialized retraining networks and their generators (same seeds every call)."""
    generators = [torch.Generator().manual_seed(1000 + i) for i in range(count)]
    return [create_model(config.retrain_model, dataset.shape, g).to(device) for g in generators], generators


def _random_set(dataset: ImageDataset, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.cat([members[torch.randperm(len(members), generator=generator)[:RETRAIN_IPC]]
                        for members in (torch.nonzero(dataset.train_y == c).flatten()
                                        for c in range(dataset.num_classes))])
    return dataset.train_x[chosen].to(device), dataset.train_y[chosen].to(device)


def main() -> int:
    args = parse_args()
    kept = keep_freed_memory()   # as every dsvbench process does; DSVBENCH_MALLOC=system for the C library's defaults
    with tempfile.TemporaryDirectory(prefix="bench-methods-") as scratch:
        try:
            config = make_config(args, out=str(Path(scratch) / "out"))
        except UserError as error:
            print(f"bench_methods: error: {error}", file=sys.stderr)
            return 2
        print(f"{config.data.name} (defaults of {config.defaults_dataset}), IPC {config.ipc}, "
              f"seeds {list(config.seeds)}, device {config.device}, torch threads {torch.get_num_threads()}, "
              + (allocator_note() if kept else "freed memory returned (C library defaults)"))
        for name in config.methods:
            print(f"  {name}: {to_dict(method_recipe(config, METHODS.get(name), config.defaults_dataset))}")
        for note in budget_notes(config) or ["published budgets (no --set / --eval-epochs / --pretrain-epochs)"]:
            print(f"  budget: {note}")
        print("loading the dataset and θ* (pretrained once, then cached) ...", flush=True)
        dataset, pretrained = prepare(config, progress=False)
        warm_up(config, dataset)
        headers = ["method", "seeds", "s/seed 1-by-1", "s/seed batched", "batched/1-by-1",
                   "steps/s 1-by-1", "steps/s batched", "peak MB 1-by-1", "peak MB batched"]
        rows = []
        for name in config.methods:
            try:
                rows.append(time_method(config, METHODS.get(name), dataset, pretrained, Path(scratch)))
            except Exception as error:  # noqa: BLE001 - one method failing leaves the others' rows
                rows.append([name, len(config.seeds), f"failed: {type(error).__name__}: {error}"] + ["-"] * 6)
            print(f"  timed {name}", flush=True)
        memory = "CUDA max allocated" if config.device.startswith("cuda") else "process peak RSS so far"
        print(f"\nbuilds ({memory}):\n" + tabulate(rows, headers, disable_numparse=True))
        if args.retrain:
            print(f"\nretraining {args.retrain} random sets of {RETRAIN_IPC} images/class "
                  f"({'epochs reduced by --eval-epochs' if config.eval_epochs else 'recipe epochs'}):")
            print(tabulate(time_retraining(config, dataset, args.retrain),
                           ["recipe", "columns", "sets", "epochs", "s/set sequential", "s/set population",
                            "population/sequential", "mean acc seq / pop", "peak MB"], disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
