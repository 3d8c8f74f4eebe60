"""What a run will do, before any work: per column (method) its recipes, its θ* and the keys of its
artefacts, and the tasks the run fans out.

:func:`resolve` computes the columns once; the tasks, the printed config, ``run.json`` and the
table filter read the :class:`Plan` instead of recomputing them.  The key formulas live here
(:func:`set_key`, :func:`eval_key`, :func:`record_name`); θ*'s key is :func:`.pretrain.theta_key`.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .config import BenchConfig, EvalRecipe, PretrainRecipe, config_hash, eval_recipe, to_dict
from .data import ImageDataset
from .methods import METHODS, MethodSpec, NamesOwnTheta
from .pretrain import dataset_fingerprint, theta_key


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


def preset_overrides(preset: str, methods: Sequence[str]) -> tuple[tuple[str, str, str], ...]:
    """(method, field, value) of ``--preset`` for the methods in the run that register it (before any --set)."""
    return tuple((method, field, value) for method in methods
                 for field, value in METHODS.get(method).presets.get(preset, {}).items())


def preset_names() -> list[str]:
    """Every preset a registered method takes part in (``seed``, the default, sets nothing)."""
    return sorted({name for method in METHODS for name in METHODS.get(method).presets})


def derive_seed(*parts: Any) -> int:
    """A stable 63-bit seed from any parts (same on every machine and run)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little") >> 1


def device_of(config: BenchConfig) -> torch.device:
    return torch.device(config.device)


def method_recipe(config: BenchConfig, spec: MethodSpec, dataset_name: str) -> Any:
    overrides = {field: value for method, field, value in config.method_overrides if method == spec.name}
    return spec.make_recipe(dataset_name, overrides, config.force)


def column_eval_recipe(config: BenchConfig, spec: MethodSpec, dataset_name: str):
    """The recipe the column is retrained with: its published one unless one is forced.

    A method recipe may name its column's recipe (:class:`.methods.NamesRetraining`: the DSV columns'
    ``retrain`` field; DC with ``dsa=True`` names ``dsa``, evaluated as DSA was); ``--eval-recipe`` replaces
    the recipe and ``--eval-epochs`` the epoch count whatever the method asks.  Defaults that
    depend on the retrained architecture (DC's augmentation for a batch-norm ConvNet) follow it.
    """
    overrides, recipe = {}, method_recipe(config, spec, dataset_name)
    if config.eval_epochs is not None:
        overrides["epochs"] = config.eval_epochs
    if config.eval_precision != "fp32":
        overrides["precision"] = config.eval_precision
    if config.eval_soft_labels:
        overrides["soft_labels"] = True
    name = config.eval_recipe or spec.retraining(recipe)
    return eval_recipe(name, dataset_name, config.retrain_model, **overrides)


def own_theta(config: BenchConfig, spec: MethodSpec) -> tuple[str, PretrainRecipe] | None:
    """(architecture, pretraining recipe) of the θ* method ``spec`` names for itself
    (:class:`.methods.NamesOwnTheta`); None: the run's."""
    recipe = method_recipe(config, spec, config.defaults_dataset)
    own = recipe.pretrained_spec() if (spec.needs_model and isinstance(recipe, NamesOwnTheta)) else None
    return None if own is None else (own[0], PretrainRecipe.for_dataset(config.defaults_dataset, **own[1]))


def needs_pretrained(config: BenchConfig) -> tuple[bool, bool]:
    """(the run's θ* is needed, its training dynamics are needed); a method that names its own θ*
    (``recipe.pretrained_spec()``) does not need the run's for its model."""
    specs = [METHODS.get(m) for m in config.methods]
    own = {s.name for s in specs if own_theta(config, s) is not None}
    return (any((s.needs_model and s.name not in own) or s.needs_dynamics for s in specs),
            any(s.needs_dynamics for s in specs))


def set_key(config: BenchConfig, spec: MethodSpec, recipe: Any, dataset: ImageDataset,
            theta_key: str | None, seed: int) -> str:
    """Everything that determines a condensed set, the method's code version included (version 1
    adds nothing, so the sets of methods never bumped keep the keys they had before versions)."""
    model_key = theta_key if (spec.needs_model or spec.needs_dynamics) else None
    version = (spec.version,) if spec.version != 1 else ()
    return config_hash(spec.name, recipe, dataset.name, dataset_fingerprint(dataset), config.model,
                       model_key, config.ipc, seed, config.device, *version)


def eval_key(config: BenchConfig, set_key_: str, recipe: Any) -> str:
    return config_hash(set_key_, recipe, config.retrain_model)


def record_name(job: Job, eval_index: int, key: str) -> str:
    return f"{job.method}-seed{job.seed}-eval{eval_index}-{key}"


def plan_tasks(config: BenchConfig) -> list[Task]:
    """One task per column with all its seeds.  With ``--jobs N`` on the CPU, a column whose
    method builds seed by seed there is split into N chunks that run in parallel; a column built
    in one batched call keeps all its seeds together, so its sets do not depend on ``--jobs``
    (a batch's floating-point sums depend on its size, and a 4000-step optimization amplifies
    the last bits: seed s's set is reproducible for a given seed list, not across seed lists)."""
    device = device_of(config)
    tasks = []
    for method in config.methods:
        split = config.jobs > 1 and device.type == "cpu" and not METHODS.get(method).batched_on(device)
        size = max(1, -(-len(config.seeds) // config.jobs)) if split else len(config.seeds)
        tasks += [Task(method, tuple(config.seeds[i:i + size])) for i in range(0, len(config.seeds), size)]
    return sorted(tasks, key=lambda task: -task_cost(task))   # longest first (LPT): the workers finish together


def task_cost(task: Task) -> float:
    """Estimated seconds of a task: its method's registered ``cost`` per seed's build, plus about half
    a second of retraining per seed (orders the tasks, and estimates the time left)."""
    return (METHODS.get(task.method).cost + 0.5) * len(task.seeds)


@dataclass(frozen=True)
class Column:
    """One column of the table: a method with everything that determines its records."""
    config: BenchConfig
    spec: MethodSpec
    recipe: Any                                 # paper defaults, dataset defaults, --preset, --set; validated
    eval_recipe: EvalRecipe                     # how its sets are retrained (column_eval_recipe)
    theta: tuple[str, PretrainRecipe] | None    # (architecture, recipe) of the θ* its sets depend on

    @property
    def method(self) -> str:
        return self.spec.name

    def theta_key(self, dataset: ImageDataset) -> str | None:
        """Key of the θ* this column builds with (None when it needs none), without loading it."""
        return None if self.theta is None else theta_key(dataset, *self.theta)

    def set_key(self, dataset: ImageDataset, seed: int) -> str:
        return set_key(self.config, self.spec, self.recipe, dataset, self.theta_key(dataset), seed)

    def eval_key(self, set_key_: str) -> str:
        return eval_key(self.config, set_key_, self.eval_recipe)


@dataclass(frozen=True)
class Plan:
    config: BenchConfig
    columns: tuple[Column, ...]

    def column(self, method: str) -> Column:
        return next(column for column in self.columns if column.method == method)

    def record_keys(self, dataset: ImageDataset) -> dict[tuple[str, int, int, str], tuple[str, dict[str, Any]]]:
        """(method, seed, ipc, retrained architecture) → (set key, evaluation recipe) that the records of
        this run carry."""
        return {(column.method, seed, self.config.ipc, self.config.retrain_model):
                (column.set_key(dataset, seed), to_dict(column.eval_recipe))
                for column in self.columns for seed in self.config.seeds}


def record_files(plan: Plan, dataset: ImageDataset) -> list[str]:
    """The names of every record file ``plan`` produces (``records/<name>.json``)."""
    names = []
    for column in plan.columns:
        for seed in plan.config.seeds:
            ekey = column.eval_key(column.set_key(dataset, seed))
            names += [record_name(Job(column.method, seed), e, ekey) for e in range(plan.config.evals_per_set)]
    return names


def resolve(config: BenchConfig) -> Plan:
    """The plan of ``config``; a bad recipe field is a one-line :class:`UserError` here, before any work."""
    columns = []
    for method in config.methods:
        spec = METHODS.get(method)
        columns.append(Column(config, spec, method_recipe(config, spec, config.defaults_dataset),
                              column_eval_recipe(config, spec, config.defaults_dataset), _theta(config, spec)))
    return Plan(config, tuple(columns))


def _theta(config: BenchConfig, spec: MethodSpec) -> tuple[str, PretrainRecipe] | None:
    """The θ* a column's sets depend on: the method's own, else the run's; None without model or dynamics."""
    if not (spec.needs_model or spec.needs_dynamics):
        return None
    return own_theta(config, spec) or (config.model, config.pretrain)
