"""One task: build (or load from the cache) the condensed sets of one column's seeds, retrain them
as one stacked population, and write a record per finished (seed, evaluation) at once; a task
that raises leaves a failure record per seed instead (the rerun redoes exactly those)."""
from __future__ import annotations

import copy
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_torch_save, atomic_write_json, confined
from .config import BenchConfig, to_dict
from .data import ImageDataset, load_dataset
from .images import save_grid
from .methods import METHODS, BuildContext, CondensedSet, MethodFailed, MethodSpec
from .models import create_model
from .plan import Job, Task, derive_seed, device_of, needs_pretrained, own_theta, record_name, resolve
from .pretrain import Pretrained, dataset_fingerprint, load_or_pretrain
from .process import peak_memory_mb, peak_rss_mb
from .progress import progress_bar
from .registry import first_line
from .provenance import method_source, provenance
from .setcache import load_cached_set, save_cached_set, set_claims, set_problem
from .training import per_class_accuracy, predict, retrain_engine, retrain_passes, retrain_population


def theta_for(config: BenchConfig, spec: MethodSpec, dataset: ImageDataset, run_pretrained: Pretrained | None,
              progress: bool = False) -> Pretrained | None:
    """The θ* method ``spec`` works with: its own (architecture + pretraining recipe it names,
    trained once and cached like any θ*) or the run's."""
    own = own_theta(config, spec)
    if own is None:
        return run_pretrained
    return load_or_pretrain(dataset, *own, config.cache_dir, device_of(config), progress)


def prepare(config: BenchConfig, progress: bool = True,
            dataset: ImageDataset | None = None) -> tuple[ImageDataset, Pretrained | None]:
    """Load the dataset (unless given) and, when a method needs it, the pretrained model, training it once."""
    dataset = dataset if dataset is not None else load_dataset(config.data, config.cache_dir)
    need_model, need_dynamics = needs_pretrained(config)
    pretrained = None
    if need_model:
        pretrained = load_or_pretrain(dataset, config.model, config.pretrain, config.cache_dir,
                                      device_of(config), progress, require_dynamics=need_dynamics)
    for method in config.methods:   # methods' own θ*: trained here once, so workers find them cached
        theta_for(config, METHODS.get(method), dataset, pretrained, progress)
    return dataset, pretrained


def run_task(config: BenchConfig, task: Task, progress: bool = True,
             loaded: tuple[ImageDataset, Pretrained | None] | None = None) -> list[dict[str, Any]]:
    """Build (or load) the sets of the task's seeds, then retrain every pending (set, eval) of
    them as one stacked population; one record per (seed, eval), written as soon as it exists."""
    provenance()   # pinned when the task starts (a worker's first record may come much later)
    with confined(config.out, config.cache_dir):   # in worker processes too: nothing written elsewhere
        return _run_task(config, task, progress, loaded)


def _run_task(config: BenchConfig, task: Task, progress: bool,
              loaded: tuple[ImageDataset, Pretrained | None] | None) -> list[dict[str, Any]]:
    dataset, run_pretrained = loaded or prepare(config, progress=False)
    column = resolve(config).column(task.method)
    spec, recipe, evaluation = column.spec, column.recipe, column.eval_recipe
    pretrained = theta_for(config, spec, dataset, run_pretrained)
    device = device_of(config)
    out = Path(config.out)
    todo = []   # (job, set key, eval key, pending eval indices)
    for job in task.jobs:
        key = column.set_key(dataset, job.seed)
        ekey = column.eval_key(key)
        pending = [e for e in range(config.evals_per_set)
                   if not (out / "records" / f"{record_name(job, e, ekey)}.json").exists()]
        if pending:
            todo.append((job, key, ekey, pending))
    if not todo:
        return []
    built = _build_or_load(config, spec, recipe, dataset, pretrained, [(job, key) for job, key, _, _ in todo],
                           progress)
    items, infos = [], []
    for (job, key, ekey, pending), (condensed, build_info) in zip(todo, built):
        diagnostics = _diagnostics(condensed, pretrained, dataset)
        class_accuracy = diagnostics.pop("theta_class_test_accuracy", None)   # Fig. 4, kept in the set's json
        _export_set(out / "sets" / (f"ipc{config.ipc}" if config.ipc_grid else ""), job, condensed, dataset, key,
                    class_accuracy)
        soft = evaluation.soft_labels and condensed.soft_labels is not None   # the recipe asks, the set has them
        learned = evaluation.lr_from_set and condensed.lr is not None
        infos.append({**build_info, **diagnostics, "retrain_lr": condensed.lr if learned else evaluation.lr,
                      "retrain_lr_from": "set" if learned else "recipe",
                      **({"retrain_soft_labels": soft} if evaluation.soft_labels else {})})
        images = condensed.images.to(device)
        labels = (condensed.soft_labels if soft else condensed.labels).to(device)
        items += [(job, key, ekey, e, images, labels, infos[-1]) for e in pending]
    generators = [torch.Generator().manual_seed(derive_seed(job.seed, "retrain", e)) for job, _, _, e, *_ in items]
    models = [create_model(config.retrain_model, dataset.shape, g).to(device) for g in generators]
    sets = [(item[4], item[5]) for item in items]
    lrs = [item[6]["retrain_lr"] for item in items]
    seeds = ",".join(str(s) for s in dict.fromkeys(job.seed for job, *_ in items))
    engine = retrain_engine(config.retrain_engine, models[0], sets[0][0])
    with progress_bar(total=retrain_passes(models, sets, evaluation, engine), disable=not progress, unit="pass",
                      desc=f"retrain {spec.name} seed {seeds} ({len(models)} models, {evaluation.name})") as bar:
        results = retrain_population(models, generators, sets, dataset.test_x.to(device), dataset.test_y.to(device),
                                     evaluation, on_epoch=bar.update if progress else None, lrs=lrs, engine=engine)
    records = []
    for (job, key, ekey, eval_index, _, _, info), result in zip(items, results):
        record = {
            "method": spec.name, "table_name": spec.table_name, "group": spec.group, "order": spec.order,
            "method_version": spec.version, "seed": job.seed, "eval_index": eval_index,
            "test_accuracy": result.test_accuracy,
            "set_train_accuracy": result.train_accuracy, "retrain_seconds": result.seconds,
            "retrain_population": len(items), "retrain_engine": engine,
            "dataset": dataset.name, "ipc": config.ipc, "model": config.model,
            "eval_model": config.retrain_model, "needs": spec.needs, "device": str(device),
            "set_key": key, "eval_key": ekey, "pretrain_key": pretrained.key if pretrained else None,
            "theta_model": (column.theta or (config.model,))[0] if pretrained else None,
            "theta_train_accuracy": pretrained.train_accuracy if pretrained else None,
            "theta_test_accuracy": pretrained.test_accuracy if pretrained else None,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **provenance(), **info,
            **({"method_source": source} if (source := method_source(spec.build)) else {}),   # a plug-in's code
            **{f"eval.{k}": v for k, v in to_dict(evaluation).items()},
            **{f"recipe.{k}": v for k, v in to_dict(recipe).items()},
        }
        atomic_write_json(out / "records" / f"{record_name(job, eval_index, ekey)}.json", record)
        records.append(record)
    return records


def make_context(config: BenchConfig, spec: MethodSpec, seed: int, dataset: ImageDataset,
                 pretrained: Pretrained | None, progress: Any = None) -> BuildContext:
    """The context a method gets for ``seed``: only what it declared, a generator seeded from ``seed``."""
    device = device_of(config)
    return BuildContext(
        method=spec.name, num_classes=dataset.num_classes, ipc=config.ipc, shape=dataset.shape,
        generator=torch.Generator().manual_seed(seed), device=device, model_name=config.model,
        dataset_name=dataset.name, mean=dataset.mean, std=dataset.std, data_fingerprint=dataset_fingerprint(dataset),
        progress=progress or (lambda **metrics: None),
        cache_dir=pretrained.cache_dir if pretrained else Path(config.cache_dir) / "method-cache",
        _train=(dataset.train_x.to(device), dataset.train_y.to(device)) if spec.needs_data else None,
        _pretrained=copy.deepcopy(pretrained.model).to(device).eval() if (pretrained and spec.needs_model) else None,
        _dynamics=pretrained.dynamics if (pretrained and spec.needs_dynamics) else None)


def _build_or_load(config, spec, recipe, dataset, pretrained, jobs_keys, progress):
    """(set, build_info) per (job, key): from the cache, else built — all uncached seeds in one
    ``build_all`` call (batched when the method has ``build_many``) and cached one by one."""
    cache = {key: Path(config.cache_dir) / "sets" / f"{spec.name}-{key}.pt" for _, key in jobs_keys}
    claims = {key: set_claims(key, spec.name, job.seed, config.ipc, dataset) for job, key in jobs_keys}
    found = {}
    for _, key in jobs_keys:
        cached = load_cached_set(cache[key], claims[key]) if cache[key].exists() else None
        if cached is not None:
            found[key] = cached
    missing = [(job, key) for job, key in jobs_keys if key not in found]
    if missing:
        device = device_of(config)
        bars: list = []  # created on the first report, so methods without progress show none
        seeds = ",".join(str(job.seed) for job, _ in missing)

        def report(step: int | None = None, total: int | None = None, **metrics: Any) -> None:
            if not progress:
                return
            if not bars:
                bars.append(progress_bar(total=total, desc=f"{spec.name} seed {seeds}"))
            bar = bars[0]
            if total is not None and bar.total != total:
                bar.reset(total=total)
            if step is not None:
                bar.update(step - bar.n)
            if metrics:
                bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in metrics.items()},
                                refresh=False)

        contexts = [make_context(config, spec, job.seed, dataset, pretrained, report) for job, _ in missing]
        # batched: all missing seeds in one call; otherwise one by one, each set cached as it is done
        groups = [list(range(len(missing)))] if spec.batched_on(device) else [[i] for i in range(len(missing))]
        try:
            for group in groups:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                before = peak_rss_mb()
                start = time.perf_counter()
                sets = spec.build_all([contexts[i] for i in group], recipe)
                seconds = time.perf_counter() - start
                for i, condensed in zip(group, sets):
                    problem = set_problem(condensed, claims[missing[i][1]]["image_shape"], dataset.num_classes)
                    if problem:
                        raise MethodFailed(f"{spec.name} built a set that {problem}")
                    build_info = {"build_seconds": seconds / len(group), "build_batch": len(group),
                                  **_peak_memory(device, before)}
                    key = missing[i][1]
                    save_cached_set(cache[key], condensed, build_info, claims[key])
                    found[key] = (condensed, build_info)
        finally:
            for bar in bars:
                bar.close()
    return [found[key] for _, key in jobs_keys]


def _peak_memory(device: torch.device, before: float) -> dict[str, Any]:
    """The build's memory: on CUDA the peak allocated during it; on the CPU the process's peak RSS at its end,
    with ``peak_memory_raised`` False when the build did not raise it (the peak was set earlier in the
    process: θ*, the polish, another column; the tables then print it as an upper bound, "≤")."""
    peak = peak_memory_mb(device)
    if device.type == "cuda":
        return {"peak_memory_mb": peak, "peak_memory_kind": "cuda max allocated during build", "peak_memory_raised": True}
    return {"peak_memory_mb": peak, "peak_memory_kind": "process peak RSS (CPU)", "peak_memory_raised": peak > before}


def _diagnostics(condensed: CondensedSet, pretrained: Pretrained | None,
                 dataset: ImageDataset) -> dict[str, Any]:
    """Scalar metadata of the set, plus what θ* says about it (label agreement, Fig. 4's ρ and, under
    ``theta_class_test_accuracy``, the per-class test accuracies it is computed from)."""
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
        out["theta_class_test_accuracy"] = [round(a, 4) for a in class_acc]
    return out


def _pearson(a: list[float], b: list[float]) -> float:
    x, y = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = (x.norm() * y.norm()).item()
    return float((x @ y).item() / denominator) if denominator > 0 else float("nan")


def _export_set(out: Path, job: Job, condensed: CondensedSet, dataset: ImageDataset, key: str,
                class_accuracy: list[float] | None = None) -> None:
    """``sets/<method>-seed<s>`` (``sets/ipc<k>/…`` in an IPC grid): .pt, .json (the method's metadata, its set key, the class names that the
    .png's rows follow, θ*'s per-class test accuracy when Fig. 4 needs it) and .png; the figures read these."""
    stem = out / f"{job.method}-seed{job.seed}"
    atomic_torch_save(condensed.state_dict(), stem.with_suffix(".pt"))
    extra = {"theta_class_test_accuracy": class_accuracy} if class_accuracy is not None else {}
    atomic_write_json(stem.with_suffix(".json"), {**condensed.metadata, "set_key": key,
                                                  "class_names": list(dataset.class_names), **extra})
    save_grid(dataset.denormalize(condensed.images.cpu()), condensed.labels.cpu(),
              dataset.num_classes, stem.with_suffix(".png"))


def failure_path(out: Path, job: Job) -> Path:
    return out / "records" / "failed" / f"{job.method}-seed{job.seed}.json"


def run_task_safely(config: BenchConfig, task: Task, progress: bool, loaded=None) -> dict[str, Any]:
    """Run one task; any exception becomes a failure record for its seeds (the other tasks go on)."""
    out = Path(config.out)
    try:
        for job in task.jobs:
            failure_path(out, job).unlink(missing_ok=True)
        records = run_task(config, task, progress, loaded)
        return {"task": task, "records": records, "error": None}
    except Exception as error:  # noqa: BLE001 - reported per task, others continue
        message = first_line(error, with_type=True)
        return {"task": task, "records": [], "error": write_failures(out, task, message, traceback.format_exc())}


def write_failures(out: Path, task: Task, message: str, trace: str) -> str:
    """A failure record per seed of ``task`` (the rerun redoes them); returns ``message``, extended
    when the records cannot be written."""
    try:
        for job in task.jobs:
            atomic_write_json(failure_path(out, job), {"method": job.method, "seed": job.seed,
                                                       "error": message, "traceback": trace})
    except OSError as write_error:   # e.g. --out made read-only mid-run: said, not a traceback
        message += f" (and its failure record could not be written: {write_error.strerror or write_error})"
    return message


def announce(outcome: dict[str, Any]) -> None:
    task = outcome["task"]
    if outcome["error"]:
        seeds = ", ".join(map(str, task.seeds))
        print(f"[failed] {task.method} seed {seeds}: {outcome['error']}", file=sys.stderr, flush=True)
    for record in outcome["records"]:
        print(f"[done] {task.method} seed {record['seed']} eval {record['eval_index']}: "
              f"{record['test_accuracy']:.2f}% (build {record['build_seconds']:.1f}s, "
              f"retrain {record['retrain_seconds']:.1f}s)", file=sys.stderr, flush=True)
