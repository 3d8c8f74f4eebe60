"""The checks of a run's configuration before any work starts (rule: bad input is one line and exit
code 2, nothing read or written first): names, recipe fields, backend, scheduler, device, folders."""
from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import tempfile
from pathlib import Path

import torch

from .config import EVAL_RECIPES, PRECISIONS, RETRAIN_ENGINES, BenchConfig
from .data import DATASETS
from .methods import METHODS
from .models import MODELS
from .plan import method_recipe
from .process import usable_cores
from .ranges import RangeError, check_bench_config
from .registry import UserError


def check_config(config: BenchConfig, jobs_requested: int | None) -> BenchConfig:
    """The checks of a built configuration, shared by flags and ``--replay``, before any work: names,
    every recipe override, backend / scheduler / device / precision, writable folders.  With a
    scheduler and no ``jobs_requested``, ``jobs`` becomes the cluster's worker threads."""
    try:   # types and ranges of every field (a hand-edited run.json too), before anything uses them
        check_bench_config(config)
    except RangeError as error:
        raise UserError(str(error)) from None
    if config.eval_recipe is not None and config.eval_recipe not in EVAL_RECIPES:
        raise UserError(f"eval recipe {config.eval_recipe!r} is unknown; known: {', '.join(EVAL_RECIPES)}")
    if config.eval_precision not in PRECISIONS:
        raise UserError(f"eval precision {config.eval_precision!r} is unknown; known: {', '.join(PRECISIONS)}")
    if config.retrain_engine not in RETRAIN_ENGINES:
        raise UserError(f"retrain engine {config.retrain_engine!r} is unknown; known: {', '.join(RETRAIN_ENGINES)}")
    DATASETS.get(config.data.name)
    for model in (config.model, config.eval_model, *config.eval_models):
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
    dynamics = [m for m in config.methods if METHODS.get(m).needs_dynamics]
    if dynamics and config.pretrain.epochs < 2:   # each example must be presented twice to be forgotten
        raise UserError(f"--pretrain-epochs {config.pretrain.epochs}: {', '.join(dynamics)} reads θ*'s training "
                        "dynamics, which need at least 2 epochs (an example is forgotten between two presentations); "
                        "use --pretrain-epochs 2 or more")
    _check_device(config.device)
    if config.device != "cpu" and (jobs_requested or 1) > 1:   # a LocalCluster too: --jobs workers on one GPU
        raise UserError(f"--jobs {jobs_requested} with --device {config.device}: one process per GPU (processes "
                        "sharing a GPU slow each other down); seeds are batched inside each method, use --jobs 1 "
                        "(on several GPUs: one dask worker per GPU and --scheduler, see docs/cluster.md)")
    _check_apart(config)
    check_writable(Path(config.out), "--out")
    check_writable(Path(config.cache_dir), "--cache-dir")
    if config.scheduler:   # last: connecting takes up to cluster.CONNECT_TIMEOUT seconds
        from .cluster import check_scheduler
        threads = check_scheduler(config.scheduler, config.device)
        if jobs_requested is None and config.device == "cpu":   # split seed-by-seed columns over every worker
            tasks = len(config.methods) * len(config.seeds)
            config = dataclasses.replace(config, jobs=worker_count(threads, tasks, local=False))
    return config


def worker_count(jobs: int, tasks: int, local: bool = True) -> int:
    """``--jobs`` capped by the number of (method, seed) pairs and, for processes on this machine, by
    its usable cores: ``--jobs 1000`` must not start 1000 processes."""
    return max(1, min(jobs, usable_cores() if local else jobs, tasks))


def ddrs_weight(value: float | None, scores: bool, rerendering: bool) -> float:
    """``--ddrs-weight`` (default 0.5), in [0, 1]; in a run it needs ``--scores`` (DDRS needs full data)."""
    weight = 0.5 if value is None else value
    if not 0.0 <= weight <= 1.0:
        raise UserError(f"--ddrs-weight {weight:g}: w weighs IOR against HLR and must lie in [0, 1]")
    if value is not None and not scores and not rerendering:
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


def check_writable(folder: Path, flag: str) -> None:
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
