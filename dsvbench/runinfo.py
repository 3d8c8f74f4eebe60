"""What a run says about itself: the notes on every budget or recipe that deviates from the
published ones (printed, and in every table, LaTeX included), the printed configuration, and
``run.json``'s description of the run (configuration, recipes, versions, machine, data)."""
from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .config import BenchConfig, PretrainRecipe, to_dict
from .external import is_external
from .methods import METHODS
from .plan import Plan, column_eval_recipe, needs_pretrained, preset_overrides
from .process import allocator_note, worker_threads
from .provenance import method_source, provenance
from .version import __version__


def run_info(plan: Plan, started: float, pretrained: Any, dataset: Any = None,
             command: Sequence[str] | None = None) -> dict[str, Any]:
    config = plan.config
    return {
        "config": to_dict(config), "command": list(sys.argv if command is None else command),
        "recipes": {c.method: to_dict(c.recipe) for c in plan.columns},
        "eval_recipes": {c.method: to_dict(c.eval_recipe) for c in plan.columns},
        "method_versions": {c.method: c.spec.version for c in plan.columns},
        **({"method_sources": sources} if (sources := {c.method: s for c in plan.columns
                                                       if (s := method_source(c.spec.build))}) else {}),
        "pretrained": None if pretrained is None else {
            "key": pretrained.key, "train_accuracy": pretrained.train_accuracy,
            "test_accuracy": pretrained.test_accuracy, "seconds_per_epoch": pretrained.seconds_per_epoch,
            "epochs": config.pretrain.epochs},
        "versions": {"dsvbench": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__},
        **{k: v for k, v in provenance().items() if k != "dsvbench_version"},
        "device": _device_name(config.device), "host": platform.node(),
        "torch_threads": torch.get_num_threads(), "allocator": allocator_note(),
        "worker_threads": worker_threads(torch.get_num_threads(), config.jobs) if config.jobs > 1 else None, "cwd": os.getcwd(), "dataset": _dataset_info(dataset),
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
        if is_external(method):   # sets evaluated by dsvbench evaluate: what was read, not a recipe change
            if field == "files" and method in config.methods:
                notes.append(f"EVALUATED SETS {method}: not built by dsvbench (dsvbench evaluate), read from {value}")
            continue
        if method not in config.methods or (method, field, value) in preset:  # validated / said above
            continue
        notes.append(f"CHANGED RECIPE: {method}.{field}={value} (not the published default)")
    default_pretrain = PretrainRecipe.for_dataset(config.defaults_dataset)
    if config.pretrain != default_pretrain and any(needs_pretrained(config)):
        notes.append(f"CHANGED PRETRAINING: {config.pretrain.epochs} epochs (default {default_pretrain.epochs})")
    if config.eval_recipe:
        notes.append(f"every column retrained with the '{config.eval_recipe}' recipe (not the published per-column recipes)")
    return notes


def print_config(plan: Plan, echo: Callable[[str], None] = print) -> None:
    config = plan.config
    echo(f"dsvbench {__version__}: {config.data.name} IPC={config.ipc}, model {config.model} -> "
          f"retrain {config.retrain_model} ({config.retrain_engine} engine), seeds {list(config.seeds)}, "
          f"device {config.device}, out {config.out}")
    echo(f"  pretraining: {to_dict(config.pretrain)}")
    for column in plan.columns:
        echo(f"  {column.method} (v{column.spec.version}): {to_dict(column.recipe)}; "
              f"retrain {column.eval_recipe.name}: {to_dict(column.eval_recipe)}")
    for note in budget_notes(config):
        echo(f"  NOTE: {note}")
