"""Plan (method × seed) jobs, build condensed sets, retrain, write records (resumable).

Each finished evaluation is written atomically as its own JSON record under
``<out>/records/``; a rerun of the same command skips every record that exists, and
condensed sets are cached by the hash of everything that determines them.  Jobs fan
out through joblib (any backend by name); each worker reloads the cached dataset and
pretrained model.
"""
from __future__ import annotations

import copy
import hashlib
import resource
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from joblib import Parallel, delayed

from .atomic import atomic_torch_save, atomic_write_json
from .config import BenchConfig, config_hash, eval_recipe, to_dict
from .data import ImageDataset, load_dataset
from .images import save_grid
from .methods import METHODS, BuildContext, CondensedSet, MethodSpec, load_methods
from .models import create_model
from .pretrain import Pretrained, dataset_fingerprint, load_or_pretrain
from .progress import progress_bar
from .training import per_class_accuracy, predict, retrain_many


@dataclass(frozen=True)
class Job:
    method: str
    seed: int


def derive_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (same on every machine and run)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def method_recipe(config: BenchConfig, spec: MethodSpec, dataset_name: str) -> Any:
    overrides = {field: value for method, field, value in config.method_overrides if method == spec.name}
    return spec.make_recipe(dataset_name, overrides)


def column_eval_recipe(config: BenchConfig, spec: MethodSpec, dataset_name: str):
    """The recipe the column is retrained with: its published one unless one is forced.

    A method recipe may adjust its column's evaluation with ``eval_overrides()`` (DC with
    ``dsa=True`` is evaluated as DSA was: DSA augmentation, 1000 epochs); ``--eval-recipe``
    replaces the recipe and ``--eval-epochs`` the epoch count whatever the method asks.
    """
    overrides = {}
    if config.eval_recipe is None:
        hook = getattr(method_recipe(config, spec, dataset_name), "eval_overrides", None)
        overrides.update(hook() if hook else {})
    if config.eval_epochs is not None:
        overrides["epochs"] = config.eval_epochs
    return eval_recipe(config.eval_recipe or spec.eval_recipe, dataset_name, **overrides)


def needs_pretrained(config: BenchConfig) -> tuple[bool, bool]:
    load_methods()
    specs = [METHODS.get(m) for m in config.methods]
    return any(s.needs_model or s.needs_dynamics for s in specs), any(s.needs_dynamics for s in specs)


def plan(config: BenchConfig) -> list[Job]:
    return [Job(method, seed) for method in config.methods for seed in config.seeds]


def device_of(config: BenchConfig) -> torch.device:
    return torch.device(config.device)


def prepare(config: BenchConfig, progress: bool = True,
            dataset: ImageDataset | None = None) -> tuple[ImageDataset, Pretrained | None]:
    """Load the dataset (unless given) and, when a method needs it, the pretrained model, training it once."""
    dataset = dataset if dataset is not None else load_dataset(config.data, config.cache_dir)
    need_model, need_dynamics = needs_pretrained(config)
    pretrained = None
    if need_model:
        pretrained = load_or_pretrain(dataset, config.model, config.pretrain, config.cache_dir,
                                      device_of(config), progress, require_dynamics=need_dynamics)
    return dataset, pretrained


def set_key(config: BenchConfig, spec: MethodSpec, recipe: Any, dataset: ImageDataset,
            pretrained: Pretrained | None, seed: int) -> str:
    """Everything that determines a condensed set (device excluded: same seed, same numbers per device)."""
    model_key = pretrained.key if (pretrained and (spec.needs_model or spec.needs_dynamics)) else None
    return config_hash(spec.name, recipe, dataset.name, dataset_fingerprint(dataset), config.model,
                       model_key, config.ipc, seed, config.device)


def record_name(job: Job, eval_index: int, key: str) -> str:
    return f"{job.method}-seed{job.seed}-eval{eval_index}-{key}"


def eval_key(config: BenchConfig, set_key_: str, recipe: Any) -> str:
    return config_hash(set_key_, recipe, config.retrain_model)


def run_job(config: BenchConfig, job: Job, progress: bool = True,
            loaded: tuple[ImageDataset, Pretrained | None] | None = None) -> list[dict[str, Any]]:
    """Build (or load) one condensed set and retrain on it ``evals_per_set`` times."""
    load_methods()
    dataset, pretrained = loaded or prepare(config, progress=False)
    spec = METHODS.get(job.method)
    device = device_of(config)
    recipe = method_recipe(config, spec, config.defaults_dataset)
    key = set_key(config, spec, recipe, dataset, pretrained, job.seed)
    out = Path(config.out)
    evaluation = column_eval_recipe(config, spec, config.defaults_dataset)
    ekey = eval_key(config, key, evaluation)
    pending = [e for e in range(config.evals_per_set)
               if not (out / "records" / f"{record_name(job, e, ekey)}.json").exists()]
    if not pending:
        return []
    condensed, build_info = _build_or_load(config, spec, recipe, key, dataset, pretrained, job, progress)
    _export_set(out, job, condensed, dataset)
    diagnostics = _diagnostics(condensed, pretrained, dataset)
    test_x, test_y = dataset.test_x.to(device), dataset.test_y.to(device)
    images, labels = condensed.images.to(device), condensed.labels.to(device)
    records = []
    generators = [torch.Generator().manual_seed(derive_seed(job.seed, "retrain", e)) for e in pending]
    models = [create_model(config.retrain_model, dataset.shape, g).to(device) for g in generators]
    results = retrain_many(models, generators, images, labels, test_x, test_y, evaluation)
    for eval_index, result in zip(pending, results):
        record = {
            "method": spec.name, "table_name": spec.table_name, "group": spec.group, "order": spec.order,
            "seed": job.seed, "eval_index": eval_index, "test_accuracy": result.test_accuracy,
            "set_train_accuracy": result.train_accuracy, "retrain_seconds": result.seconds,
            "dataset": dataset.name, "ipc": config.ipc, "model": config.model,
            "eval_model": config.retrain_model, "needs": spec.needs, "device": str(device),
            "set_key": key, "pretrain_key": pretrained.key if pretrained else None,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **build_info, **diagnostics,
            **{f"eval.{k}": v for k, v in to_dict(evaluation).items()},
            **{f"recipe.{k}": v for k, v in to_dict(recipe).items()},
        }
        atomic_write_json(out / "records" / f"{record_name(job, eval_index, ekey)}.json", record)
        records.append(record)
    return records


def _build_or_load(config, spec, recipe, key, dataset, pretrained, job, progress):
    cache_file = Path(config.cache_dir) / "sets" / f"{spec.name}-{key}.pt"
    if cache_file.exists():
        state = torch.load(cache_file, weights_only=False)
        return CondensedSet.from_state_dict(state["set"]), state["build_info"]
    device = device_of(config)
    generator = torch.Generator().manual_seed(job.seed)
    bars: list = []  # created on the first report, so methods without progress show none

    def report(step: int | None = None, total: int | None = None, **metrics: Any) -> None:
        if not progress:
            return
        if not bars:
            bars.append(progress_bar(total=total, desc=f"{spec.name} seed {job.seed}"))
        bar = bars[0]
        if total is not None and bar.total != total:
            bar.reset(total=total)
        if step is not None:
            bar.update(step - bar.n)
        if metrics:
            bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in metrics.items()},
                            refresh=False)

    ctx = BuildContext(
        method=spec.name, num_classes=dataset.num_classes, ipc=config.ipc, shape=dataset.shape,
        generator=generator, device=device, model_name=config.model, dataset_name=dataset.name,
        mean=dataset.mean, std=dataset.std, progress=report,
        cache_dir=pretrained.cache_dir if pretrained else Path(config.cache_dir) / "method-cache",
        _train=(dataset.train_x.to(device), dataset.train_y.to(device)) if spec.needs_data else None,
        _pretrained=copy.deepcopy(pretrained.model).to(device).eval() if (pretrained and spec.needs_model) else None,
        _dynamics=pretrained.dynamics if (pretrained and spec.needs_dynamics) else None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        condensed = spec.build(ctx, recipe)
    finally:
        for bar in bars:
            bar.close()
    build_info = {"build_seconds": time.perf_counter() - start, **_peak_memory(device)}
    atomic_torch_save({"set": condensed.state_dict(), "build_info": build_info}, cache_file)
    return condensed, build_info


def _peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20,
                "peak_memory_kind": "cuda max allocated during build"}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB on Linux
    return {"peak_memory_mb": peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024,
            "peak_memory_kind": "process peak RSS (CPU)"}


def _diagnostics(condensed: CondensedSet, pretrained: Pretrained | None,
                 dataset: ImageDataset) -> dict[str, Any]:
    """Scalar metadata of the set, plus what θ* says about it (label agreement, Fig. 4's ρ)."""
    out = {f"meta.{k}": v for k, v in condensed.metadata.items()
           if isinstance(v, (int, float, str, bool)) or v is None}
    if pretrained is None:
        return out
    model = pretrained.model
    device = next(model.parameters()).device
    logits = predict(model, condensed.images.to(device))
    out["pretrained_agreement"] = 100.0 * (logits.argmax(1).cpu() == condensed.labels.cpu()).float().mean().item()
    sums = condensed.metadata.get("class_lambda_sums")
    if sums is not None:
        class_acc = per_class_accuracy(model, dataset.test_x.to(device), dataset.test_y.to(device),
                                       dataset.num_classes)
        out["lambda_class_acc_pearson"] = _pearson(list(map(float, sums)), class_acc)
    return out


def _pearson(a: list[float], b: list[float]) -> float:
    x, y = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = (x.norm() * y.norm()).item()
    return float((x @ y).item() / denominator) if denominator > 0 else float("nan")


def _export_set(out: Path, job: Job, condensed: CondensedSet, dataset: ImageDataset) -> None:
    stem = out / "sets" / f"{job.method}-seed{job.seed}"
    atomic_torch_save(condensed.state_dict(), stem.with_suffix(".pt"))
    atomic_write_json(stem.with_suffix(".json"), condensed.metadata)
    save_grid(dataset.denormalize(condensed.images.cpu()), condensed.labels.cpu(),
              dataset.num_classes, stem.with_suffix(".png"))


def failure_path(out: Path, job: Job) -> Path:
    return out / "records" / "failed" / f"{job.method}-seed{job.seed}.json"


def _run_job_safely(config: BenchConfig, job: Job, progress: bool, loaded=None) -> dict[str, Any]:
    """Run one job; any exception becomes a failure record (the other jobs go on)."""
    out = Path(config.out)
    failure_path(out, job).unlink(missing_ok=True)
    try:
        records = run_job(config, job, progress, loaded)
        return {"job": job, "records": records, "error": None}
    except Exception as error:  # noqa: BLE001 - reported per job, others continue
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        atomic_write_json(failure_path(out, job), {"method": job.method, "seed": job.seed, "error": message,
                                                   "traceback": traceback.format_exc()})
        return {"job": job, "records": [], "error": message}


def run(config: BenchConfig, progress: bool = True,
        loaded: tuple[ImageDataset, Pretrained | None] | None = None) -> list[dict[str, Any]]:
    """Run every pending job; returns one outcome per job ({job, records, error})."""
    loaded = loaded or prepare(config, progress)
    jobs = plan(config)
    if config.jobs == 1:
        outcomes = []
        for job in jobs:
            outcomes.append(_run_job_safely(config, job, progress, loaded))
            _announce(outcomes[-1])
        return outcomes
    threads = max(1, torch.get_num_threads() // config.jobs)
    parallel = Parallel(n_jobs=config.jobs, backend=config.backend, return_as="generator_unordered")
    outcomes = []
    for outcome in parallel(delayed(_worker)(config, job, threads) for job in jobs):
        outcomes.append(outcome)
        _announce(outcome)
    return outcomes


def _worker(config: BenchConfig, job: Job, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    return _run_job_safely(config, job, progress=False)


def _announce(outcome: dict[str, Any]) -> None:
    job = outcome["job"]
    if outcome["error"]:
        print(f"[failed] {job.method} seed {job.seed}: {outcome['error']}", file=sys.stderr, flush=True)
    for record in outcome["records"]:
        print(f"[done] {job.method} seed {job.seed} eval {record['eval_index']}: "
              f"{record['test_accuracy']:.2f}% (build {record['build_seconds']:.1f}s, "
              f"retrain {record['retrain_seconds']:.1f}s)", file=sys.stderr, flush=True)

