"""One resolved plan: per column (method) of a run, its recipes, its θ* and the keys of its artefacts.

:func:`resolve` computes them once (STYLE habit 9); the harness (``run_task``), the printed
config, ``run.json`` and the table filter read the :class:`Plan` instead of recomputing them.
The key formulas stay beside the artefacts they name (``harness.set_key`` / ``eval_key``,
``pretrain.theta_key``) and are reached through a :class:`Column`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import BenchConfig, EvalRecipe, PretrainRecipe, to_dict
from .data import ImageDataset
from .harness import column_eval_recipe, eval_key, method_recipe, own_theta, set_key
from .methods import METHODS, MethodSpec, load_methods
from .pretrain import theta_key


@dataclass(frozen=True)
class Column:
    """One column of the table: a method with everything that determines its records."""
    config: BenchConfig
    spec: MethodSpec
    recipe: Any                                 # paper defaults, dataset defaults, --preset, --set; validated
    eval_recipe: EvalRecipe                     # how its sets are retrained (harness.column_eval_recipe)
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

    def record_keys(self, dataset: ImageDataset) -> dict[tuple[str, int], tuple[str, dict[str, Any]]]:
        """(method, seed) → (set key, evaluation recipe) that the records of this run carry."""
        return {(column.method, seed): (column.set_key(dataset, seed), to_dict(column.eval_recipe))
                for column in self.columns for seed in self.config.seeds}


def resolve(config: BenchConfig) -> Plan:
    """The plan of ``config``; a bad recipe field is a one-line :class:`UserError` here, before any work."""
    load_methods()
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
