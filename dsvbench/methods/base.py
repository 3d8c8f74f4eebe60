"""The method interface (docs/methods.md): one registry, one signature.

A method is a function ``build(ctx: BuildContext, recipe) -> CondensedSet`` registered
with :func:`register_method`, which records what it needs (training data, the
pretrained model, training dynamics) so the run prepares only that, and which
frozen dataclass holds its hyper-parameters (the paper's values as defaults)::

    @dataclass(frozen=True)
    class RandomRecipe:
        pass

    @register_method("random", table_name="random", group="selection",
                     needs_data=True, recipe=RandomRecipe, eval_recipe="dc")
    def build_random(ctx: BuildContext, recipe: RandomRecipe) -> CondensedSet:
        ...
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import nn

from ..atomic import atomic_torch_save
from ..models import InputShape, create_model
from ..ranges import RangeError, check_recipe
from ..registry import Registry, UserError


class MethodFailed(RuntimeError):
    """A method could not finish (e.g. NaN during synthesis): that job stops, the others go on."""


class AccessDenied(RuntimeError):
    """A method touched something it did not declare in its needs (e.g. data for a data-free method)."""


@dataclass
class CondensedSet:
    """IPC images per class in the normalized input space, with labels and optional weights.

    A set may also carry ``soft_labels`` (K×classes, a label distribution per image; retraining uses
    them when its recipe has ``soft_labels=True``) and a learned learning rate ``lr`` (MTT's; retraining
    uses it when its recipe has ``lr_from_set=True``)."""
    images: torch.Tensor                 # K×C×H×W
    labels: torch.Tensor                 # K (long)
    weights: torch.Tensor | None = None  # K, e.g. DeepKKT's λ
    metadata: dict[str, Any] = field(default_factory=dict)
    soft_labels: torch.Tensor | None = None   # K×classes
    lr: float | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.labels.ndim != 1 or len(self.images) != len(self.labels):
            raise ValueError(f"condensed set needs K×C×H×W images and K labels, got "
                             f"{tuple(self.images.shape)} and {tuple(self.labels.shape)}")
        if not torch.isfinite(self.images).all():
            raise MethodFailed("condensed set contains NaN/Inf pixels")
        if self.soft_labels is not None and (self.soft_labels.shape[0] != len(self.images)
                                             or self.soft_labels.ndim != 2 or not torch.isfinite(self.soft_labels).all()):
            raise MethodFailed(f"soft labels of shape {tuple(self.soft_labels.shape)} for {len(self.images)} images")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise MethodFailed(f"learned learning rate {self.lr} is not a positive number")

    def state_dict(self) -> dict[str, Any]:
        state = {"images": self.images.detach().cpu(), "labels": self.labels.cpu(),
                 "weights": None if self.weights is None else self.weights.detach().cpu(),
                 "metadata": self.metadata}
        if self.soft_labels is not None:   # only when present: the files (and digests) of other sets are as before
            state["soft_labels"] = self.soft_labels.detach().cpu()
        if self.lr is not None:
            state["lr"] = float(self.lr)
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "CondensedSet":
        lr = state.get("lr")
        return cls(state["images"], state["labels"], state.get("weights"), dict(state.get("metadata", {})),
                   state.get("soft_labels"), None if lr is None else float(lr))


ProgressFn = Callable[..., None]


@dataclass
class BuildContext:
    """What a method receives.  Undeclared needs raise :class:`AccessDenied` when touched."""
    method: str
    num_classes: int
    ipc: int
    shape: InputShape
    generator: torch.Generator           # CPU generator seeded from the job's seed
    device: torch.device
    model_name: str                      # architecture of the pretrained model (for fresh nets)
    dataset_name: str = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    cache_dir: Path | None = None        # for per-pretrained-model caches (e.g. embeddings)
    data_fingerprint: str = ""           # the dataset's content hash (every pixel and label): keys caches of its own
    progress: ProgressFn = lambda **metrics: None   # progress(step=, total=, **metrics)
    _train: tuple[torch.Tensor, torch.Tensor] | None = None
    _pretrained: nn.Module | None = None
    _dynamics: torch.Tensor | None = None

    def _need(self, value: Any, what: str) -> Any:
        if value is None:
            raise AccessDenied(f"method {self.method!r} used {what} but did not declare it in its needs")
        return value

    @property
    def train_images(self) -> torch.Tensor:
        return self._need(self._train, "the training data")[0]

    @property
    def train_labels(self) -> torch.Tensor:
        return self._need(self._train, "the training data")[1]

    @property
    def pretrained(self) -> nn.Module:
        return self._need(self._pretrained, "the pretrained model")

    @property
    def dynamics(self) -> torch.Tensor:
        """Bool epochs×N: was training example n classified correctly at epoch e."""
        return self._need(self._dynamics, "the training dynamics")

    def fresh_model(self, name: str | None = None) -> nn.Module:
        """A freshly initialized network (drawn from ``generator``) on the device."""
        return create_model(name or self.model_name, self.shape, self.generator).to(self.device)

    def pretrained_features(self, batch_size: int = 512) -> torch.Tensor:
        """θ*'s penultimate embedding (``model.features``) of every training image, N×d: computed once
        per θ* (eval mode, ``batch_size`` images at a time) and cached under ``cache_dir`` for every seed
        and every method that asks (herding, k-center).  Needs data and model declared."""
        return cached_for_model(self, "herding_features_pretrained",   # herding's name from before: caches stay valid
                                lambda: embed(self.pretrained, self.train_images, batch_size))

    def class_indices(self, label: int) -> torch.Tensor:
        return torch.nonzero(self.train_labels == label).flatten()

    def randperm(self, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=self.generator)


@dataclass(frozen=True)
class MethodSpec:
    """Registry entry: the build function plus what it declares."""
    name: str
    build: Callable[[BuildContext, Any], CondensedSet]
    table_name: str
    group: str                      # "selection" (coreset) or "synthesis"
    recipe: type
    eval_recipe: str                # the recipe its published figure was retrained with: dc | dsv
    needs_data: bool = False
    needs_model: bool = False
    needs_dynamics: bool = False
    order: int = 100                # column order within its group (Table 1)
    recipe_defaults: Callable[[str], dict[str, Any]] | None = None  # dataset name -> overrides
    smoke: dict[str, Any] = field(default_factory=dict)  # tiny budgets for the registry-wide tests
    # Optional: build the sets of several seeds in one call (one optimization over all seeds'
    # candidates, stacked networks, ...).  Seed s's set must be what ``build`` gives for seed s.
    build_many: Callable[[list[BuildContext], Any], list[CondensedSet]] | None = None
    batched_on_cpu: bool = True     # False: on the CPU the seeds are built one by one (no gain there)
    version: int = 1                # code version: bumped when the method's sets change (part of the set key)
    cost: float = 1.0               # build seconds per seed at the default budgets (digits, one CPU
                                    # thread, measured): only orders a run's tasks, longest first
    presets: dict[str, dict[str, str]] = field(default_factory=dict)   # --preset NAME -> field -> value
    in_all: bool = True             # part of ``--methods all`` (the main job); False: run by name only

    def retraining(self, recipe: Any) -> str:
        """The evaluation recipe this method's column is retrained with for ``recipe``: the recipe's
        own ``retrain`` (:class:`NamesRetraining`) when it names one, else the registered ``eval_recipe``."""
        return recipe.retrain if isinstance(recipe, NamesRetraining) else self.eval_recipe

    def batched_on(self, device: torch.device | str) -> bool:
        """Whether this method builds several seeds in one call on ``device``."""
        return self.build_many is not None and (self.batched_on_cpu or torch.device(device).type != "cpu")

    def build_all(self, contexts: list[BuildContext], recipe: Any) -> list[CondensedSet]:
        """The sets of ``contexts`` (one per seed): batched when the method is on their device."""
        if self.batched_on(contexts[0].device) and len(contexts) > 1:
            sets = self.build_many(contexts, recipe)
            if len(sets) != len(contexts):
                raise MethodFailed(f"{self.name}: build_many returned {len(sets)} sets for {len(contexts)} seeds")
            return sets
        return [self.build(ctx, recipe) for ctx in contexts]

    @property
    def needs(self) -> str:
        parts = [n for n, flag in (("data", self.needs_data), ("model", self.needs_model),
                                   ("dynamics", self.needs_dynamics)) if flag]
        return "+".join(parts) or "nothing"

    def make_recipe(self, dataset: str, overrides: dict[str, str] | None = None, force: bool = False) -> Any:
        """The recipe for ``dataset``: paper defaults, dataset defaults, then user overrides; every
        numeric field checked against its declared range (:mod:`dsvbench.ranges`; ``force`` lifts
        the work bounds only)."""
        values: dict[str, Any] = dict(self.recipe_defaults(dataset)) if self.recipe_defaults else {}
        fields = {f.name: f for f in dataclasses.fields(self.recipe)}
        for key, text in (overrides or {}).items():
            if key not in fields:
                raise UserError(f"method {self.name!r} has no recipe field {key!r}; "
                                f"fields: {', '.join(fields) or 'none'}")
            values[key] = parse_field_value(text, fields[key].type, f"{self.name}.{key}")
        recipe = self.recipe(**values)
        try:
            check_recipe(recipe, self.name, force)
        except RangeError as error:
            raise UserError(f"--set {error}") from None
        return recipe


def parse_field_value(text: str, type_name: Any, where: str) -> Any:
    """Parse a ``--set method.field=value`` string into the field's annotated type."""
    type_name = str(getattr(type_name, "__name__", type_name)).replace(" ", "")
    try:
        if type_name.startswith("bool"):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text.lower() in ("true", "1", "yes")
        if type_name.startswith("int"):
            return int(text)
        if type_name.startswith("float"):
            value = float(text)
            if math.isnan(value):
                raise ValueError
            return value
        if type_name.startswith("tuple"):
            inner = float if "float" in type_name else int if "int" in type_name else str
            return tuple(inner(v) for v in text.split(",") if v)
        return text
    except ValueError:
        raise UserError(f"--set {where}={text!r}: expected {type_name}") from None


METHODS: Registry[MethodSpec] = Registry("method")


def register_method(name: str, *, table_name: str, group: str, recipe: type, eval_recipe: str,
                    needs_data: bool = False, needs_model: bool = False, needs_dynamics: bool = False,
                    order: int = 100, recipe_defaults: Callable[[str], dict[str, Any]] | None = None,
                    smoke: dict[str, Any] | None = None, version: int = 1, cost: float = 1.0,
                    build_many: Callable[[list[BuildContext], Any], list[CondensedSet]] | None = None,
                    batched_on_cpu: bool = True, presets: dict[str, dict[str, str]] | None = None,
                    in_all: bool = True):
    """Decorator: register ``build(ctx, recipe) -> CondensedSet`` as method ``name``.

    ``smoke`` holds recipe values that make a build take about a second (few steps);
    the registry-wide tests build every method with them, like timm's tiny variants.
    ``version`` is the method's code version: bump it when a change to the code changes the sets
    it builds; it is part of the set key (sets the old code built are not reused) and of every record.
    ``cost`` estimates the build seconds per seed at the default budgets (scheduling only: a run
    starts its longest tasks first so that its workers finish together).
    ``build_many(contexts, recipe) -> [CondensedSet]`` builds several seeds in one call (seed s's
    set must be what ``build`` gives for seed s); ``batched_on_cpu=False``: stacking pays only on
    accelerators, so on the CPU the seeds are built one by one (and spread over ``--jobs`` workers).
    ``presets`` names sets of recipe values (``--preset NAME``, as ``--set`` strings) this method
    takes part in; a preset may span several methods, each registering its own fields.
    ``in_all=False`` leaves the method out of ``--methods all`` (the main job, Table 1's columns): it
    runs when named (``--methods all dm``) — for methods too slow for the main job's time budget.
    """
    if group not in ("selection", "synthesis"):
        raise ValueError(f"group must be 'selection' or 'synthesis', got {group!r}")
    if eval_recipe not in ("dc", "dsv"):
        raise ValueError(f"eval_recipe must be 'dc' or 'dsv', got {eval_recipe!r}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"version must be an int of at least 1, got {version!r}")
    fields = {f.name for f in dataclasses.fields(recipe)}
    for preset, values in (presets or {}).items():
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"preset {preset!r} of {name!r} sets unknown recipe fields {unknown}")

    def decorator(build):
        METHODS.add(name, MethodSpec(name, build, table_name, group, recipe, eval_recipe, needs_data,
                                     needs_model, needs_dynamics, order, recipe_defaults, dict(smoke or {}),
                                     build_many=build_many, batched_on_cpu=batched_on_cpu, version=version,
                                     cost=float(cost), presets={k: dict(v) for k, v in (presets or {}).items()},
                                     in_all=in_all))
        return build
    return decorator


@runtime_checkable
class NamesRetraining(Protocol):
    """A recipe hook: a recipe with a ``retrain`` field names the evaluation recipe its column is
    retrained with (``dsv``, ``adam``, ``dc``, ``dsa``), instead of the method's registered
    ``eval_recipe``; ``--eval-recipe`` still overrides it (the DSV methods; DC with ``dsa=True``)."""
    retrain: str


@runtime_checkable
class NamesOwnTheta(Protocol):
    """A recipe hook: ``pretrained_spec()`` returns (architecture, PretrainRecipe overrides) of a θ* the
    method trains for itself (cached like the run's), or None for the run's θ*.  Read only when the
    method declares ``needs_model``."""
    def pretrained_spec(self) -> tuple[str, dict[str, Any]] | None: ...


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``model.features`` of every image, ``batch_size`` at a time, in eval mode (the model's mode restored)."""
    was_training = model.training
    model.eval()
    try:
        parts = [model.features(images[start:start + batch_size]).flatten(1)
                 for start in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts)


def take_per_class(scores: torch.Tensor, labels: torch.Tensor, num_classes: int, ipc: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of the ``ipc`` highest-scoring items of each class (ties broken at random by
    ``generator`` when given, else by index).  Raises if a class has fewer than ``ipc`` items."""
    chosen = []
    for label in range(num_classes):
        members = torch.nonzero(labels == label).flatten()
        if len(members) < ipc:
            raise MethodFailed(f"class {label} has {len(members)} candidates, fewer than ipc={ipc}")
        if generator is not None:
            members = members[torch.randperm(len(members), generator=generator).to(members.device)]
        order = torch.argsort(scores[members], descending=True, stable=True)
        chosen.append(members[order[:ipc]])
    return torch.cat(chosen)


def cached_for_model(ctx: "BuildContext", name: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """A per-training-example tensor derived from θ*, cached under ``ctx.cache_dir`` (which
    belongs to the pretrained model) as ``<name>.pt`` and reused by every seed; recomputed
    when there is no cache dir or the cached file was made for other training labels."""
    from ..atomic import load_cache_file
    path = None if ctx.cache_dir is None else Path(ctx.cache_dir) / f"{name}.pt"
    if path is not None and path.exists():   # a corrupt or planted file: one line, recomputed
        state = load_cache_file(path, lambda state: (state["value"], state["labels"]), f"cached {name}",
                                "computing it again")
        if state is not None and torch.equal(state[1], ctx.train_labels.cpu()):
            return state[0].to(ctx.device)
    value = compute()
    if path is not None:
        atomic_torch_save({"value": value.cpu(), "labels": ctx.train_labels.cpu()}, path)
    return value
