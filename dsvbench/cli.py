"""Command line: argparse -> BenchConfig -> harness -> writers.

Bad input is one line on stderr and exit code 2, checked before any work starts.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib.util
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import __version__
from .atomic import confined, read_json_object
from .config import EVAL_RECIPES, PRECISIONS, BenchConfig, DataConfig, PretrainRecipe, to_dict
from .data import DATASETS, load_dataset
from .harness import method_recipe, needs_pretrained, prepare, provenance, run, usable_cores
from .fulldata import full_data_accuracies, load_full_data
from .methods import METHODS, load_methods
from .models import MODELS
from .plan import Plan, resolve
from .process import keep_freed_memory
from .ranges import RangeError, check_bench_config, check_seeds
from .registry import UserError
from .report import render_report
from .results import (CODE_NOTE, DC_PAPER_PROTOCOL, SPLIT_NOTE, load_failures, load_records, merge_runs, remove_outputs, render_text,
                      select_records, set_aside_unreadable, table_notes, write_outputs)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (the usage block runs to many), exit code 2 as usual."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# --protocol: models retrained per set (the DC paper: ``--num_eval 20`` of its reference main.py)
PROTOCOLS = {"suite": 1, "dc-paper": DC_PAPER_PROTOCOL[1]}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="dsvbench", description=(
        "Dataset distillation / coreset selection at tiny budgets: reproduces Table 1 of "
        "'Deep Support Vectors' and compares your methods with it."))
    add = parser.add_argument
    add("--dataset", default="cifar10", help="dataset name (see --list-datasets); default cifar10")
    add("--data-root", default="data", help="folder holding the dataset files (default ./data)")
    add("--download", action="store_true", help="fetch the dataset through torchvision if missing")
    add("--reference-dataset", help="use this dataset's defaults and paper figures (e.g. cifar10 for "
        "the CIFAR-10 JPEG image folder)")
    add("--methods", nargs="+", default=["all"], help="method ids or 'all' (see --list-methods)")
    add("--seeds", type=int, default=5, help="number of seeds 0..N-1 (default 5)")
    add("--seed-list", type=int, nargs="+", help="explicit seeds (overrides --seeds)")
    add("--ipc", type=int, default=1, help="images per class (default 1)")
    add("--model", default="convnet", help="architecture of θ* and of the condensation (default convnet)")
    add("--eval-model", help="architecture retrained on the sets (cross-architecture); default --model")
    add("--evals-per-set", type=int, help="fresh networks retrained per condensed set (default 1; "
        "--protocol dc-paper: 20)")
    add("--protocol", choices=list(PROTOCOLS), default="suite",
        help="models per set: suite = --evals-per-set (default 1); dc-paper = the DC paper's 20 freshly "
             "initialised models per set (its --num_eval 20; with --seeds 5, its 5 × 20)")
    add("--eval-recipe", choices=EVAL_RECIPES, help="force one retraining recipe on every column")
    add("--preset", choices=["seed", "neurips", "recon"], default="seed",
        help="DSV recipe preset: seed = the arXiv paper's reading (default); neurips = the NeurIPS 2024 "
             "version (per-parameter L1, output-margin stationarity, all parameters of a norm-free θ*, "
             "α_x 2e-3, retraining with Adam 1e-4); recon = Haim et al. 2022's reconstruction regime "
             "(docs/reconstruction.md); --set overrides it")
    add("--eval-epochs", type=int, help="retraining epochs (reduced budget; default: the recipe's)")
    add("--eval-precision", choices=list(PRECISIONS), default="fp32",
        help="arithmetic of retraining and test evaluation: fp32 (default, exact), tf32 (CUDA: TF32 + cuDNN "
             "autotuning), bf16 (bfloat16 autocast); stored in every record's eval recipe")
    add("--pretrain-epochs", type=int, help="epochs of θ* pretraining (default: per dataset)")
    add("--force", action="store_true", help="accept counts past the work bounds this suite checks "
        "(seeds, epochs, steps, sizes far above any published budget); never values outside a range")
    add("--set", dest="overrides", action="append", default=[], metavar="METHOD.FIELD=VALUE",
        help="override a method recipe field, e.g. --set dc.iterations=200 (repeatable)")
    add("--herding-features", choices=["pretrained", "random-init", "pixels"],
        help="feature space for herding (shortcut for --set herding.features=...)")
    add("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    add("--jobs", type=int, help="CPU: parallel workers through joblib, each column's seeds split "
        "among them (default 1; with --scheduler the cluster's worker threads); GPU: must be 1 (one process "
        "per GPU, seeds batched inside each method)")
    add("--backend", default="loky", help="joblib backend: loky, threading, ray, ...; dask: a dask.distributed "
        "cluster (--scheduler, else a LocalCluster of --jobs processes)")
    add("--scheduler", metavar="ADDRESS", help="with --backend dask: the address of a running dask scheduler "
        "(tcp://HOST:8786); its workers must see --out, --cache-dir and --data-root at the same paths")
    add("--out", help="output folder (default results/<dataset>-ipc<k>)")
    add("--cache-dir", default=".dsvbench_cache", help="cache of datasets, θ*, condensed sets")
    add("--from", dest="from_dirs", nargs="+", metavar="DIR",
        help="re-render stored run(s) instead of running; several are merged into --out (a new folder)")
    add("--in-place", action="store_true", help="with --from: allow writing the outputs into an input folder "
        "(the first one when --out is not given)")
    add("--replay", metavar="RUN_JSON", help="re-run exactly the configuration a run recorded in its run.json "
        "(recipes, seeds, budgets, data) into a new --out; only --out, --device, --jobs, --backend, --scheduler, "
        "--cache-dir and --quiet may be given with it")
    add("--scores", action="store_true", help="also train the retrained architecture on the whole training set "
        "(each column's recipe, per seed; cached) for DD-Ranking's HLR and DDRS rows; IOR needs no extra training")
    add("--ddrs-weight", type=float, metavar="W", help="weight w of IOR against HLR in DDRS (default 0.5, "
        "DD-Ranking's); with --from: re-scores the stored runs")
    add("--list-methods", action="store_true", help="list registered methods and exit")
    add("--list-models", action="store_true", help="list registered models and exit")
    add("--list-datasets", action="store_true", help="list dataset readers and exit")
    add("--quiet", action="store_true", help="no progress bars")
    return parser


def preset_overrides(preset: str, methods: Sequence[str]) -> tuple[tuple[str, str, str], ...]:
    """(method, field, value) of a DSV preset for the DSV methods in the run (before any --set)."""
    from .methods.kkt_recipe import PRESETS
    return tuple((method, field, value) for method, fields in PRESETS[preset].items() if method in methods
                 for field, value in fields.items())


def parse_overrides(items: Sequence[str]) -> tuple[tuple[str, str, str], ...]:
    parsed = []
    for item in items:
        target, sep, value = item.partition("=")
        method, dot, field = target.partition(".")
        if not (sep and dot and method and field):
            raise UserError(f"--set {item!r}: expected METHOD.FIELD=VALUE, e.g. dc.iterations=200")
        METHODS.get(method)
        parsed.append((method, field, value))
    return tuple(parsed)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Validate names and numbers and build the frozen config (no data is read here)."""
    load_methods()
    methods = (sorted(METHODS.names(), key=lambda m: (METHODS.get(m).group != "selection", METHODS.get(m).order))
               if args.methods == ["all"] else args.methods)
    for method in methods:
        METHODS.get(method)
    if not args.seed_list:
        try:   # before building the tuple
            check_seeds(args.seeds, force=args.force)
        except RangeError as error:
            raise UserError(f"--{error}") from None
    seeds = tuple(args.seed_list) if args.seed_list else tuple(range(args.seeds))
    evals_per_set = PROTOCOLS[args.protocol] if args.evals_per_set is None else args.evals_per_set
    if args.protocol != "suite" and evals_per_set != PROTOCOLS[args.protocol]:
        raise UserError(f"--protocol {args.protocol} retrains {PROTOCOLS[args.protocol]} models per set; "
                        f"--evals-per-set {evals_per_set} contradicts it (drop one of them)")
    for name, value in (("--seeds", len(seeds)), ("--ipc", args.ipc), ("--evals-per-set", evals_per_set),
                        ("--jobs", args.jobs), ("--eval-epochs", args.eval_epochs),
                        ("--pretrain-epochs", args.pretrain_epochs)):
        if value is not None and value < 1:  # 0 is an error, not "the default"
            raise UserError(f"{name} must be at least 1, got {value}")
    overrides = preset_overrides(args.preset, methods) + parse_overrides(args.overrides)
    if args.herding_features:
        overrides += (("herding", "features", args.herding_features),)
    like = args.reference_dataset or args.dataset
    pretrain_overrides = {"epochs": args.pretrain_epochs} if args.pretrain_epochs is not None else {}
    config = BenchConfig(
        data=DataConfig(args.dataset, args.data_root, args.download), model=args.model,
        eval_model=args.eval_model, pretrain=PretrainRecipe.for_dataset(like, **pretrain_overrides),
        methods=tuple(dict.fromkeys(methods)), seeds=seeds, ipc=args.ipc, evals_per_set=evals_per_set,
        eval_recipe=args.eval_recipe, eval_epochs=args.eval_epochs, eval_precision=args.eval_precision,
        method_overrides=overrides,
        device=args.device, jobs=_worker_count(args.jobs or 1, len(methods) * len(seeds), local=not args.scheduler),
        backend=args.backend, scheduler=args.scheduler,
        out=args.out or f"results/{args.dataset}-ipc{args.ipc}", cache_dir=args.cache_dir,
        reference_dataset=args.reference_dataset, preset=args.preset, scores=args.scores,
        ddrs_weight=ddrs_weight(args), force=args.force)
    return check_config(config, args.jobs)


def check_config(config: BenchConfig, jobs_requested: int | None) -> BenchConfig:
    """The checks of a built configuration, shared by flags and ``--replay``, before any work: names,
    every recipe override, backend / scheduler / device / precision, writable folders.  With a
    scheduler and no ``jobs_requested``, ``jobs`` becomes the cluster's worker threads."""
    load_methods()
    try:   # types and ranges of every field (a hand-edited run.json too), before anything uses them
        check_bench_config(config)
    except RangeError as error:
        raise UserError(str(error)) from None
    if config.eval_recipe is not None and config.eval_recipe not in EVAL_RECIPES:
        raise UserError(f"eval recipe {config.eval_recipe!r} is unknown; known: {', '.join(EVAL_RECIPES)}")
    if config.eval_precision not in PRECISIONS:
        raise UserError(f"eval precision {config.eval_precision!r} is unknown; known: {', '.join(PRECISIONS)}")
    DATASETS.get(config.data.name)
    for model in (config.model, config.eval_model):
        if model:
            MODELS.get(model)
    _check_reference_dataset(config.reference_dataset)
    _check_backend(config.backend)
    if config.eval_precision == "tf32" and not str(config.device).startswith("cuda"):
        raise UserError(f"--eval-precision tf32 needs a CUDA device (got --device {config.device}); "
                        "on other devices it would be fp32 under another name")
    if config.scheduler and config.backend != "dask":
        raise UserError(f"--scheduler applies to --backend dask only (got --backend {config.backend}); "
                        "add --backend dask or drop --scheduler")
    # recipe overrides parse now, not halfway through the run: also those of methods not in this run
    for method in dict.fromkeys([*config.methods, *(m for m, _, _ in config.method_overrides)]):
        method_recipe(config, METHODS.get(method), config.defaults_dataset)
    _check_device(config.device)
    if config.device != "cpu" and (jobs_requested or 1) > 1:   # a LocalCluster too: --jobs workers on one GPU
        raise UserError(f"--jobs {jobs_requested} with --device {config.device}: one process per GPU (processes "
                        "sharing a GPU slow each other down); seeds are batched inside each method, use --jobs 1 "
                        "(on several GPUs: one dask worker per GPU and --scheduler, see the README)")
    _check_apart(config)
    _check_writable(Path(config.out), "--out")
    _check_writable(Path(config.cache_dir), "--cache-dir")
    if config.scheduler:   # last: connecting takes up to cluster.CONNECT_TIMEOUT seconds
        from .cluster import check_scheduler
        threads = check_scheduler(config.scheduler, config.device)
        if jobs_requested is None and config.device == "cpu":   # split seed-by-seed columns over every worker
            tasks = len(config.methods) * len(config.seeds)
            config = dataclasses.replace(config, jobs=_worker_count(threads, tasks, local=False))
    return config


def _worker_count(jobs: int, tasks: int, local: bool = True) -> int:
    """``--jobs`` capped by the number of (method, seed) pairs and, for processes on this machine, by
    its usable cores: ``--jobs 1000`` must not start 1000 processes."""
    return max(1, min(jobs, usable_cores() if local else jobs, tasks))


def ddrs_weight(args: argparse.Namespace) -> float:
    """``--ddrs-weight`` (default 0.5), in [0, 1]; in a run it needs ``--scores`` (DDRS needs full data)."""
    weight = 0.5 if args.ddrs_weight is None else args.ddrs_weight
    if not 0.0 <= weight <= 1.0:
        raise UserError(f"--ddrs-weight {weight:g}: w weighs IOR against HLR and must lie in [0, 1]")
    if args.ddrs_weight is not None and not args.scores and not args.from_dirs:
        raise UserError("--ddrs-weight: DDRS needs the full-data accuracy, add --scores")
    return weight


def _check_reference_dataset(name: str | None) -> None:
    known = [n for n in DATASETS.names() if n != "folder"]  # a folder has no defaults or paper figures
    if name is not None and name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"--reference-dataset {name!r} is not a known dataset{hint}; known: {', '.join(known)}")


def _check_backend(backend: str) -> None:
    """A joblib backend registered here, or dask/ray when their packages import (joblib registers them)."""
    from joblib.parallel import BACKENDS
    external = {"dask": "distributed", "ray": "ray"}
    known = sorted(set(BACKENDS) | set(external))
    if backend not in known:
        raise UserError(f"--backend {backend!r} is not a joblib backend; known: {', '.join(known)}")
    if backend in external and importlib.util.find_spec(external[backend]) is None:
        raise UserError(f"--backend {backend} needs the {external[backend]!r} package; install it or use loky")
    if backend == "ray" and backend not in BACKENDS:
        from ray.util.joblib import register_ray
        register_ray()


def _check_device(device: str) -> None:
    """cpu, or an accelerator this machine has: a device that fails later would fail after pretraining."""
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                        f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    available = {"mps": lambda: torch.backends.mps.is_available(),
                 "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available()}
    if parsed.type in available and not available[parsed.type]():
        raise UserError(f"--device {device}: {parsed.type} is not available on this machine; use --device cpu")
    if parsed.type not in ("cpu", "cuda", *available):
        raise UserError(f"--device {device}: dsvbench runs on cpu, cuda[:N], mps or xpu, not {parsed.type}")


EMBEDDED_DATASETS = ("digits",)   # read nothing under --data-root


def _check_apart(config: BenchConfig) -> None:
    """--out and --cache-dir neither inside the data root nor holding it: a run writes records/,
    sets/, figures/ … and the next read of the data would take them for classes or files."""
    if config.data.name in EMBEDDED_DATASETS:
        return
    root = Path(config.data.root).expanduser().resolve()
    for flag, folder in (("--out", config.out), ("--cache-dir", config.cache_dir)):
        path = Path(folder).expanduser().resolve()
        if path == root or root in path.parents or path in root.parents:
            inside = "is" if path == root else ("is inside" if root in path.parents else "holds")
            raise UserError(f"{flag} {folder} {inside} the data root {config.data.root}; "
                            "keep outputs and data apart (choose another folder)")


def _check_writable(folder: Path, flag: str) -> None:
    """``folder`` exists (created if needed) and takes a file, checked before any work starts."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{flag} {folder} is a file, not a folder; choose a folder (it is created if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-")   # O_EXCL: never through a link
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise UserError(f"{flag} {folder}: cannot write there ({error.strerror or error}); "
                        f"choose another folder") from None


def check_ipc(config: BenchConfig, class_counts: torch.Tensor) -> None:
    if len(class_counts) < 2:
        raise UserError(f"{config.data.name} at {config.data.root} has {len(class_counts)} class(es); "
                        "a benchmark needs at least 2 (one class is 100 % by construction)")
    smallest = int(class_counts.min())
    if config.ipc > smallest:
        raise UserError(f"--ipc {config.ipc} is larger than the smallest class of {config.data.name} "
                        f"({smallest} training images); use --ipc {smallest} or less")


def list_methods() -> str:
    """Id, Table 1 name, group, needs, retraining recipe and the first docstring line of each method."""
    from tabulate import tabulate
    load_methods()
    specs = sorted((METHODS.get(n) for n in METHODS.names()), key=lambda s: (s.group != "selection", s.order))
    rows = [[s.name, s.version, s.table_name, s.group, s.needs, s.eval_recipe,
             _first_line(s.build.__doc__ or s.recipe.__doc__)] for s in specs]
    return tabulate(rows, ["id", "version", "Table 1 name", "group", "needs", "retrained with", "description"])


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def run_info(plan: Plan, started: float, pretrained: Any, dataset: Any = None) -> dict[str, Any]:
    config = plan.config
    return {
        "config": to_dict(config), "command": sys.argv,
        "recipes": {c.method: to_dict(c.recipe) for c in plan.columns},
        "eval_recipes": {c.method: to_dict(c.eval_recipe) for c in plan.columns},
        "method_versions": {c.method: c.spec.version for c in plan.columns},
        "pretrained": None if pretrained is None else {
            "key": pretrained.key, "train_accuracy": pretrained.train_accuracy,
            "test_accuracy": pretrained.test_accuracy, "seconds_per_epoch": pretrained.seconds_per_epoch,
            "epochs": config.pretrain.epochs},
        "versions": {"dsvbench": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__},
        **{k: v for k, v in provenance().items() if k != "dsvbench_version"},
        "device": _device_name(config.device), "host": platform.node(),
        "torch_threads": torch.get_num_threads(), "cwd": os.getcwd(), "dataset": _dataset_info(dataset),
        "wall_seconds": time.time() - started,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _dataset_info(dataset: Any) -> dict[str, Any] | None:
    """The data a run read (name, content hash, split sizes): ``--replay`` checks it reads the same."""
    if dataset is None:
        return None
    from .pretrain import dataset_fingerprint
    return {"name": dataset.name, "fingerprint": dataset_fingerprint(dataset), "train": len(dataset.train_y),
            "test": len(dataset.test_y)}


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def budget_notes(config: BenchConfig) -> list[str]:
    """Everything that deviates from the published budgets, said in the output."""
    notes = []
    if config.eval_epochs is not None:
        from .harness import column_eval_recipe
        unforced = dataclasses.replace(config, eval_epochs=None)
        defaults = {}
        for method in config.methods:
            recipe = column_eval_recipe(unforced, METHODS.get(method), config.defaults_dataset)
            defaults.setdefault(recipe.name, recipe.epochs)
        said = ", ".join(f"{name} {epochs}" for name, epochs in defaults.items())
        notes.append(f"REDUCED/CHANGED BUDGET: retraining for {config.eval_epochs} epochs (recipe default: {said})")
    preset = set(preset_overrides(config.preset, config.methods))
    if preset:
        fields = ", ".join(f"{m}.{f}={v}" for m, f, v in config.method_overrides if (m, f, v) in preset)
        notes.append(f"PRESET {config.preset}: {fields} (the {config.preset} version's recipe, not the default)")
    for method, field, value in config.method_overrides:
        if method not in config.methods or (method, field, value) in preset:  # validated / said above
            continue
        notes.append(f"CHANGED RECIPE: {method}.{field}={value} (not the published default)")
    default_pretrain = PretrainRecipe.for_dataset(config.defaults_dataset)
    if config.pretrain != default_pretrain and any(needs_pretrained(config)):
        notes.append(f"CHANGED PRETRAINING: {config.pretrain.epochs} epochs (default {default_pretrain.epochs})")
    if config.eval_recipe:
        notes.append(f"every column retrained with the '{config.eval_recipe}' recipe (not the published per-column recipes)")
    return notes


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (0 ok, 1 a job failed, 2 bad input, 130 Ctrl-C)."""
    args = build_parser().parse_args(argv)
    keep_freed_memory()   # dsvbench.process: measured 20–25 % off the CPU hot loops
    args.argv = list(sys.argv[1:] if argv is None else argv)   # --replay: which flags were given
    try:
        return _main(args)
    except UserError as error:
        print(f"dsvbench: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:   # a full disk, an I/O error: one line; finished records stay valid
        where = f" ({error.filename})" if error.filename else ""
        print(f"dsvbench: error: {error.strerror or error}{where}; no table or run.json was left that looks "
              "complete — finished records are kept, rerun to complete", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # every finished record is on disk already: say so, no traceback
        records = Path(args.out or f"results/{args.dataset}-ipc{args.ipc}") / "records"
        finished = sum(1 for _ in records.glob("*.json")) if records.is_dir() and not args.from_dirs else 0
        print(f"dsvbench: interrupted; {finished} records finished in {records}, rerun to resume",
              file=sys.stderr, flush=True)
        return 130


def _main(args: argparse.Namespace) -> int:
    if args.list_methods or args.list_models or args.list_datasets:
        load_methods()
        if args.list_methods:
            print(list_methods())
        if args.list_models:
            print("\n".join(f"{n:16s} {(MODELS.get(n).__doc__ or '').strip()}" for n in MODELS.names()))
        if args.list_datasets:
            print("\n".join(DATASETS.names()))
        return 0
    if args.replay and args.from_dirs:
        raise UserError("--replay and --from: one at a time (--from re-renders stored records, --replay runs again)")
    if args.from_dirs:
        return _rerender(args)
    if args.in_place:
        raise UserError("--in-place only applies to --from (a run writes into --out anyway)")
    started = time.time()
    replayed = None
    if args.replay:   # the configuration a run recorded (dsvbench.replay), checked like one from flags
        from .replay import replay_config
        config, replayed = replay_config(args)
    else:
        config = config_from_args(args)
    with confined(config.out, config.cache_dir):   # dsvbench.atomic: every write lands under these two
        return _run(args, config, replayed, started)


def _run(args: argparse.Namespace, config: BenchConfig, replayed: Any, started: float) -> int:
    provenance()   # the commit of the code this process loaded, asked now, not when a record is written
    plan = resolve(config)
    dataset = load_dataset(config.data, config.cache_dir)
    check_ipc(config, dataset.class_counts())
    if replayed is not None:
        replayed.check(plan, dataset)   # same data, θ* and set keys as recorded, else a warning line each
    _print_config(plan)
    dataset, pretrained = prepare(config, progress=not args.quiet, dataset=dataset)
    if pretrained is not None:
        print(f"θ*: {config.model} on {dataset.name}: train {pretrained.train_accuracy:.2f}%, "
              f"test {pretrained.test_accuracy:.2f}%, {pretrained.seconds_per_epoch:.2f} s/epoch")
    set_aside_unreadable(config.out)  # a damaged record is a job to redo, not a finished one
    outcomes = run(config, progress=not args.quiet, loaded=(dataset, pretrained))
    records = select_records(load_records(config.out), plan.record_keys(dataset), config.evals_per_set)
    notes = budget_notes(config) + table_notes(records)
    full_data = full_data_accuracies(plan, dataset, not args.quiet) if config.scores and records else []
    info = run_info(plan, started, pretrained, dataset)
    if replayed is not None:
        info["replayed_from"] = str(replayed.path)
    summary = write_outputs(config.out, records, info, notes, config.reference_dataset, full_data=full_data,
                            ddrs_weight=config.ddrs_weight)
    if not summary.empty:
        print(render_text(summary, notes))
        try:
            render_report(config.out, summary, records, [config.out])   # figures/ and report.html
        except OSError:
            remove_outputs(config.out)
            raise
    failed = [o for o in outcomes if o["error"]]
    for outcome in failed:
        seeds = ", ".join(map(str, outcome["task"].seeds))
        print(f"dsvbench: {outcome['task'].method} seed {seeds} failed: {outcome['error']}",
              file=sys.stderr)
    print(f"outputs in {config.out} ({time.time() - started:.0f} s)")
    return 1 if failed else 0


def _print_config(plan: Plan) -> None:
    config = plan.config
    print(f"dsvbench {__version__}: {config.data.name} IPC={config.ipc}, model {config.model} -> "
          f"retrain {config.retrain_model}, seeds {list(config.seeds)}, device {config.device}, out {config.out}")
    print(f"  pretraining: {to_dict(config.pretrain)}")
    for column in plan.columns:
        print(f"  {column.method} (v{column.spec.version}): {to_dict(column.recipe)}; "
              f"retrain {column.eval_recipe.name}: {to_dict(column.eval_recipe)}")
    for note in budget_notes(config):
        print(f"  NOTE: {note}")


def _rerender(args: argparse.Namespace) -> int:
    """Re-render stored runs, several merged: each model counted once, a method whose records differ
    in recipe, evaluation, code version or θ* split into columns, nothing written into an input
    folder unless ``--in-place``, and one line per folder saying what was left out."""
    for folder in args.from_dirs:
        if not (Path(folder) / "records").is_dir():
            raise UserError(f"--from {folder}: no records/ folder there; point it at a run's --out folder")
    out = _rerender_target(args)
    records, left_out = merge_runs(args.from_dirs)
    for line in left_out:
        print(f"dsvbench: {line}", file=sys.stderr)
    if not records:
        raise UserError(f"--from {' '.join(args.from_dirs)}: no finished records to render")
    notes, info = [], {}
    for folder in args.from_dirs:
        info = _read_run_json(Path(folder) / "run.json") or info
        notes += [n for n in info.get("notes", []) if n not in notes and not n.startswith((CODE_NOTE, SPLIT_NOTE))]
    notes += table_notes(records)  # recomputed: merged runs may come from different code and recipes
    reference = args.reference_dataset or (info.get("config", {}).get("reference_dataset"))
    info.update(rendered_from=list(args.from_dirs), left_out=left_out)
    weight = ddrs_weight(args) if args.ddrs_weight is not None else info.get("config", {}).get("ddrs_weight", 0.5)
    summary = write_outputs(out, records, info, notes, reference, full_data=load_full_data(args.from_dirs),
                            ddrs_weight=weight)
    print(render_text(summary, notes))
    render_report(out, summary, records, args.from_dirs)   # figures/ and report.html, from the stored sets
    for failure in sum((load_failures(f) for f in args.from_dirs), []):
        print(f"failed job {failure['method']} seed {failure['seed']}: {failure['error']}")
    damaged = [line for line in left_out if "unreadable record" in line]
    return 1 if damaged else 0   # a table rendered without a damaged record is not a clean result


def _rerender_target(args: argparse.Namespace) -> Path:
    """The folder ``--from`` writes into: ``--out``, never an input folder unless ``--in-place``."""
    out = Path(args.out or args.from_dirs[0])
    if out.resolve() in {Path(folder).resolve() for folder in args.from_dirs} and not args.in_place:
        where = f"--out {args.out} is an input folder" if args.out else f"without --out the outputs go to {out}"
        raise UserError(f"--from: {where}, whose run.json and tables would be overwritten; "
                        f"give --out NEW_FOLDER, or --in-place to rewrite {out}")
    _check_writable(out, "--out")
    return out


def _read_run_json(path: Path) -> dict[str, Any] | None:
    """A run's ``run.json`` (notes, config), None when absent or unreadable (said in one line)."""
    if not path.exists():
        return None
    info = read_json_object(path)
    if info is None:
        print(f"dsvbench: {path} is unreadable; rendering without its notes", file=sys.stderr)
        return None
    return info
