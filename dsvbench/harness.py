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
import json
import os
import resource
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from joblib import Parallel, delayed

from .atomic import atomic_torch_save, atomic_write_json, confined
from .config import BenchConfig, PretrainRecipe, config_hash, eval_recipe, to_dict
from .data import ImageDataset, load_dataset
from .images import save_grid
from .methods import METHODS, BuildContext, CondensedSet, MethodFailed, MethodSpec, load_methods
from .models import create_model
from .pretrain import Pretrained, dataset_fingerprint, load_or_pretrain
from .process import configure
from .progress import progress_bar
from .training import per_class_accuracy, predict, retrain_population


@dataclass(frozen=True)
class Job:
    method: str
    seed: int


@dataclass(frozen=True)
class Task:
    """One unit of work: build the sets of ``seeds`` of one column (batched when the method can),
    then retrain all of them as one stacked population."""
    method: str
    seeds: tuple[int, ...]

    @property
    def jobs(self) -> list[Job]:
        return [Job(self.method, seed) for seed in self.seeds]


def derive_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (same on every machine and run)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def method_recipe(config: BenchConfig, spec: MethodSpec, dataset_name: str) -> Any:
    overrides = {field: value for method, field, value in config.method_overrides if method == spec.name}
    return spec.make_recipe(dataset_name, overrides, config.force)


def column_eval_recipe(config: BenchConfig, spec: MethodSpec, dataset_name: str):
    """The recipe the column is retrained with: its published one unless one is forced.

    A method recipe may name its column's recipe with a ``retrain`` attribute (the DSV columns'
    field; DC with ``dsa=True`` names ``dsa``, evaluated as DSA was); ``--eval-recipe`` replaces
    the recipe and ``--eval-epochs`` the epoch count whatever the method asks.  Defaults that
    depend on the retrained architecture (DC's augmentation for a batch-norm ConvNet) follow it.
    """
    overrides, recipe = {}, method_recipe(config, spec, dataset_name)
    if config.eval_epochs is not None:
        overrides["epochs"] = config.eval_epochs
    if config.eval_precision != "fp32":
        overrides["precision"] = config.eval_precision
    name = config.eval_recipe or getattr(recipe, "retrain", None) or spec.eval_recipe
    return eval_recipe(name, dataset_name, config.retrain_model, **overrides)


def needs_pretrained(config: BenchConfig) -> tuple[bool, bool]:
    """(the run's θ* is needed, its training dynamics are needed); a method that names its own θ*
    (``recipe.pretrained_spec()``) does not need the run's for its model."""
    load_methods()
    specs = [METHODS.get(m) for m in config.methods]
    own = {s.name for s in specs if own_theta(config, s) is not None}
    return (any((s.needs_model and s.name not in own) or s.needs_dynamics for s in specs),
            any(s.needs_dynamics for s in specs))


def theta_for(config: BenchConfig, spec: MethodSpec, dataset: ImageDataset, run_pretrained: Pretrained | None,
              progress: bool = False) -> Pretrained | None:
    """The θ* method ``spec`` works with: its own (architecture + pretraining recipe it names,
    trained once and cached like any θ*) or the run's."""
    own = own_theta(config, spec)
    if own is None:
        return run_pretrained
    return load_or_pretrain(dataset, *own, config.cache_dir, device_of(config), progress)


def own_theta(config: BenchConfig, spec: MethodSpec) -> tuple[str, PretrainRecipe] | None:
    """(architecture, pretraining recipe) of the θ* method ``spec`` names for itself; None: the run's."""
    hook = getattr(method_recipe(config, spec, config.defaults_dataset), "pretrained_spec", None)
    own = hook() if (hook and spec.needs_model) else None
    return None if own is None else (own[0], PretrainRecipe.for_dataset(config.defaults_dataset, **own[1]))


def plan(config: BenchConfig) -> list[Task]:
    """One task per column with all its seeds.  With ``--jobs N`` on the CPU, a column whose
    method builds seed by seed there is split into N chunks that run in parallel; a column built
    in one batched call keeps all its seeds together, so its sets do not depend on ``--jobs``
    (a batch's floating-point sums depend on its size, and a 4000-step optimization amplifies
    the last bits: seed s's set is reproducible for a given seed list, not across seed lists)."""
    load_methods()
    device = device_of(config)
    tasks = []
    for method in config.methods:
        split = config.jobs > 1 and device.type == "cpu" and not METHODS.get(method).batched_on(device)
        size = max(1, -(-len(config.seeds) // config.jobs)) if split else len(config.seeds)
        tasks += [Task(method, tuple(config.seeds[i:i + size])) for i in range(0, len(config.seeds), size)]
    # longest first (LPT): the workers then finish together; a seed's build estimated by its
    # method's ``cost``, plus about half a second of retraining
    return sorted(tasks, key=lambda task: -(METHODS.get(task.method).cost + 0.5) * len(task.seeds))


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
    for method in config.methods:   # methods' own θ*: trained here once, so workers find them cached
        theta_for(config, METHODS.get(method), dataset, pretrained, progress)
    return dataset, pretrained


def set_key(config: BenchConfig, spec: MethodSpec, recipe: Any, dataset: ImageDataset,
            theta_key: str | None, seed: int) -> str:
    """Everything that determines a condensed set, the method's code version included (version 1
    adds nothing, so the sets of methods never bumped keep the keys they had before versions)."""
    model_key = theta_key if (spec.needs_model or spec.needs_dynamics) else None
    version = (spec.version,) if spec.version != 1 else ()
    return config_hash(spec.name, recipe, dataset.name, dataset_fingerprint(dataset), config.model,
                       model_key, config.ipc, seed, config.device, *version)


def record_name(job: Job, eval_index: int, key: str) -> str:
    return f"{job.method}-seed{job.seed}-eval{eval_index}-{key}"


def eval_key(config: BenchConfig, set_key_: str, recipe: Any) -> str:
    return config_hash(set_key_, recipe, config.retrain_model)


def run_task(config: BenchConfig, task: Task, progress: bool = True,
             loaded: tuple[ImageDataset, Pretrained | None] | None = None) -> list[dict[str, Any]]:
    """Build (or load) the sets of the task's seeds, then retrain every pending (set, eval) of
    them as one stacked population; one record per (seed, eval), written as soon as it exists."""
    provenance()   # pinned when the task starts (a worker's first record may come much later)
    with confined(config.out, config.cache_dir):   # in worker processes too: nothing written elsewhere
        return _run_task(config, task, progress, loaded)


def _run_task(config: BenchConfig, task: Task, progress: bool,
              loaded: tuple[ImageDataset, Pretrained | None] | None) -> list[dict[str, Any]]:
    from .plan import resolve   # the plan reads this module's key functions
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
        _export_set(out, job, condensed, dataset, key, class_accuracy)
        infos.append({**build_info, **diagnostics})
        images, labels = condensed.images.to(device), condensed.labels.to(device)
        items += [(job, key, ekey, e, images, labels, infos[-1]) for e in pending]
    generators = [torch.Generator().manual_seed(derive_seed(job.seed, "retrain", e)) for job, _, _, e, *_ in items]
    models = [create_model(config.retrain_model, dataset.shape, g).to(device) for g in generators]
    results = retrain_population(models, generators, [(item[4], item[5]) for item in items],
                                 dataset.test_x.to(device), dataset.test_y.to(device), evaluation)
    records = []
    for (job, key, ekey, eval_index, _, _, info), result in zip(items, results):
        record = {
            "method": spec.name, "table_name": spec.table_name, "group": spec.group, "order": spec.order,
            "method_version": spec.version, "seed": job.seed, "eval_index": eval_index,
            "test_accuracy": result.test_accuracy,
            "set_train_accuracy": result.train_accuracy, "retrain_seconds": result.seconds,
            "retrain_population": len(items),
            "dataset": dataset.name, "ipc": config.ipc, "model": config.model,
            "eval_model": config.retrain_model, "needs": spec.needs, "device": str(device),
            "set_key": key, "eval_key": ekey, "pretrain_key": pretrained.key if pretrained else None,
            "theta_model": (column.theta or (config.model,))[0] if pretrained else None,
            "theta_train_accuracy": pretrained.train_accuracy if pretrained else None,
            "theta_test_accuracy": pretrained.test_accuracy if pretrained else None,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **provenance(), **info,
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
        dataset_name=dataset.name, mean=dataset.mean, std=dataset.std,
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
        cached = _load_cached_set(cache[key], claims[key]) if cache[key].exists() else None
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
                start = time.perf_counter()
                sets = spec.build_all([contexts[i] for i in group], recipe)
                seconds = time.perf_counter() - start
                for i, condensed in zip(group, sets):
                    problem = set_problem(condensed, claims[missing[i][1]]["image_shape"], dataset.num_classes)
                    if problem:
                        raise MethodFailed(f"{spec.name} built a set that {problem}")
                    build_info = {"build_seconds": seconds / len(group), "build_batch": len(group),
                                  **_peak_memory(device)}
                    key = missing[i][1]
                    state = condensed.state_dict()
                    atomic_torch_save({"set": state, "build_info": build_info, "claims": claims[key],
                                       "sha256": set_digest(state, claims[key])}, cache[key])
                    found[key] = (condensed, build_info)
        finally:
            for bar in bars:
                bar.close()
    return [found[key] for _, key in jobs_keys]


def _peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"peak_memory_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20,
                "peak_memory_kind": "cuda max allocated during build"}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB on Linux
    return {"peak_memory_mb": peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024,
            "peak_memory_kind": "process peak RSS (CPU)"}


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
    """``sets/<method>-seed<s>``: .pt, .json (the method's metadata, its set key, the class names that the
    .png's rows follow, θ*'s per-class test accuracy when Fig. 4 needs it) and .png; the figures read these."""
    stem = out / "sets" / f"{job.method}-seed{job.seed}"
    atomic_torch_save(condensed.state_dict(), stem.with_suffix(".pt"))
    extra = {"theta_class_test_accuracy": class_accuracy} if class_accuracy is not None else {}
    atomic_write_json(stem.with_suffix(".json"), {**condensed.metadata, "set_key": key,
                                                  "class_names": list(dataset.class_names), **extra})
    save_grid(dataset.denormalize(condensed.images.cpu()), condensed.labels.cpu(),
              dataset.num_classes, stem.with_suffix(".png"))


def failure_path(out: Path, job: Job) -> Path:
    return out / "records" / "failed" / f"{job.method}-seed{job.seed}.json"


def _run_task_safely(config: BenchConfig, task: Task, progress: bool, loaded=None) -> dict[str, Any]:
    """Run one task; any exception becomes a failure record for its seeds (the other tasks go on)."""
    out = Path(config.out)
    try:
        for job in task.jobs:
            failure_path(out, job).unlink(missing_ok=True)
        records = run_task(config, task, progress, loaded)
        return {"task": task, "records": records, "error": None}
    except Exception as error:  # noqa: BLE001 - reported per task, others continue
        message = f"{type(error).__name__}: {error}".splitlines()[0]
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


def run(config: BenchConfig, progress: bool = True,
        loaded: tuple[ImageDataset, Pretrained | None] | None = None) -> list[dict[str, Any]]:
    """Run every pending task; returns one outcome per task ({task, records, error})."""
    loaded = loaded or prepare(config, progress)
    tasks = plan(config)
    if config.jobs == 1 and config.backend != "dask":
        outcomes = []
        for task in tasks:
            outcomes.append(_run_task_safely(config, task, progress, loaded))
            _announce(outcomes[-1])
        return outcomes
    if config.backend == "dask":   # an existing scheduler, or a LocalCluster of --jobs processes
        from .cluster import run_tasks
        finished = run_tasks(config, tasks)
    else:
        threads = max(1, torch.get_num_threads() // config.jobs)
        run = (socket.gethostname(), os.getpid())
        finished = _parallel(config)(delayed(_worker)(config, task, threads, run) for task in tasks)
    outcomes = []
    for outcome in finished:
        outcomes.append(outcome)
        _announce(outcome)
    return outcomes


def _parallel(config: BenchConfig) -> Parallel:
    """Outcomes as each task finishes; a backend that cannot yield them (ray's, multiprocessing) gives
    them all at the end — its workers still write every record as soon as it exists."""
    try:
        return Parallel(n_jobs=config.jobs, backend=config.backend, return_as="generator_unordered")
    except ValueError as error:
        if "does not support return_as" not in str(error):
            raise
        return Parallel(n_jobs=config.jobs, backend=config.backend, return_as="list")


def _worker(config: BenchConfig, task: Task, threads: int, run: tuple[str, int]) -> dict[str, Any]:
    _exit_with_run(*run)
    configure(threads)
    return _run_task_safely(config, task, progress=False)


_WATCHING: list[int] = []


def _exit_with_run(host: str, run_pid: int) -> None:
    """A worker whose run (process ``run_pid`` on ``host``) died — ``kill -9`` — ends within a
    second instead of going on as an orphan (its finished records are already on disk; a rerun
    resumes).  A worker started as the run's child watches its parent id; one started otherwise
    (a ray worker, or a loky worker whose run died while it was still importing torch, already
    re-parented) watches the run's pid.  Nothing to watch inside the run itself (joblib's threading
    backend) or on another host."""
    if os.getpid() == run_pid or socket.gethostname() != host or _WATCHING:
        return
    child = os.getppid() == run_pid

    def gone() -> bool:
        if child:
            return os.getppid() != run_pid
        try:
            os.kill(run_pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:   # a live process of another user
            return False
        return False
    if gone():
        os._exit(1)
    _WATCHING.append(run_pid)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if gone():
                os._exit(1)
    threading.Thread(target=watch, name="dsvbench-parent-watch", daemon=True).start()


def _announce(outcome: dict[str, Any]) -> None:
    task = outcome["task"]
    if outcome["error"]:
        seeds = ", ".join(map(str, task.seeds))
        print(f"[failed] {task.method} seed {seeds}: {outcome['error']}", file=sys.stderr, flush=True)
    for record in outcome["records"]:
        print(f"[done] {task.method} seed {record['seed']} eval {record['eval_index']}: "
              f"{record['test_accuracy']:.2f}% (build {record['build_seconds']:.1f}s, "
              f"retrain {record['retrain_seconds']:.1f}s)", file=sys.stderr, flush=True)


def set_claims(key: str, method: str, seed: int, ipc: int, dataset: ImageDataset) -> dict[str, Any]:
    """What a cached set claims to be, stored inside its file and checked on load: its key and
    what the key stands for (method, seed, IPC), and the image shape and classes it must have."""
    shape = dataset.shape
    return {"key": key, "method": method, "seed": int(seed), "ipc": int(ipc),
            "image_shape": [shape.channels, shape.size, shape.size], "num_classes": int(dataset.num_classes)}


def _load_cached_set(path: Path, claims: dict[str, Any]) -> tuple[CondensedSet, dict[str, Any]] | None:
    """A cached condensed set and its build info; None (so it is rebuilt) when the file is unsafe,
    truncated or malformed, claims another key (method, seed, IPC) or holds a set that cannot be the
    one asked for — wrong image shape, labels outside the classes, non-finite values — said in one
    line naming the file (:func:`load_cache_file`)."""
    from .atomic import CacheMismatch, check_claims, load_cache_file

    def use(state):
        check_claims(state.get("claims"), claims, "set")
        if state.get("sha256") != set_digest(state["set"], claims):
            raise CacheMismatch("does not match the sha256 stored with it (changed or damaged on disk)")
        condensed = CondensedSet.from_state_dict(state["set"])
        problem = set_problem(condensed, claims["image_shape"], claims["num_classes"])
        if problem:
            raise CacheMismatch(problem)
        return condensed, dict(state["build_info"])
    return load_cache_file(path, use, "cached set")


def set_problem(condensed: CondensedSet, image_shape: list[int], num_classes: int) -> str | None:
    """Why ``condensed`` cannot be a set of this dataset (None when it can): images N×C×H×W of the
    dataset's shape, one integer label per image within the classes, finite images and weights."""
    images, labels, weights = condensed.images, condensed.labels, condensed.weights
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or list(images.shape[1:]) != list(image_shape):
        return f"holds images of shape {tuple(getattr(images, 'shape', ()))}, not N×{'×'.join(map(str, image_shape))}"
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or len(labels) != len(images) \
            or labels.is_floating_point():
        return f"holds {tuple(getattr(labels, 'shape', ()))} labels for {len(images)} images"
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        return f"holds labels outside 0..{num_classes - 1}"
    if not torch.isfinite(images).all():
        return "holds non-finite images (nan or inf)"
    if weights is not None and (weights.shape[0] != len(images) or not torch.isfinite(weights).all()):
        return "holds weights that do not match its images or are not finite"
    return None


def set_digest(state: dict[str, Any], claims: dict[str, Any] | None = None) -> str:
    """sha256 of a condensed set's state (tensor bytes and metadata) and of what it claims to be,
    stored beside it in the cache and checked on load: a well-formed but altered set is rebuilt,
    never used."""
    digest = hashlib.sha256()
    for name in ("images", "labels", "weights"):
        value = state.get(name)
        digest.update(name.encode())
        if value is not None:
            digest.update(str((value.dtype, tuple(value.shape))).encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(state.get("metadata", {}), sort_keys=True, default=str).encode())
    if claims is not None:
        digest.update(json.dumps(claims, sort_keys=True).encode())
    return digest.hexdigest()


_PROVENANCE: dict[str, Any] = {}


def provenance() -> dict[str, Any]:
    """What code made a record: ``dsvbench_version``, ``git_commit`` and ``git_dirty`` (uncommitted
    changes to the code: ``dsvbench/``, ``baselines/``, ``run_bench.py``, ``pyproject.toml``).

    Git is asked once per process; both git fields are None outside a git checkout of dsvbench
    (a wheel install, no git, or a package that lies in some other repository).
    """
    if not _PROVENANCE:
        from . import __version__
        _PROVENANCE.update(dsvbench_version=__version__, **_git_state(Path(__file__).resolve().parent))
    return dict(_PROVENANCE)


def _git_state(package: Path) -> dict[str, Any]:
    import subprocess

    def git(*args: str) -> str | None:
        done = subprocess.run(["git", *args], cwd=package.parent, capture_output=True, text=True, timeout=10)
        return done.stdout.strip() if done.returncode == 0 else None
    try:
        top = git("rev-parse", "--show-toplevel")
        if top is None or Path(top).resolve() != package.parent:
            return {"git_commit": None, "git_dirty": None}
        status = git("status", "--porcelain", "--", "dsvbench", "baselines", "run_bench.py", "pyproject.toml")
        return {"git_commit": git("rev-parse", "HEAD"), "git_dirty": None if status is None else bool(status)}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
