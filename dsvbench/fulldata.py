"""Full-data accuracy: the retrained architecture trained on the whole training split with a column's
evaluation recipe — the reference that DD-Ranking's hard-label recovery (HLR, ``dsvbench.scores``)
subtracts the column's accuracy from.

One model per (evaluation recipe of the run, seed), computed only with ``--scores``, cached like θ*
under ``<cache>/full-data/`` by a hash of the dataset (its content hash), the architecture, the full
recipe and the seed, and copied into ``<out>/full-data/`` so that ``--from`` can score stored runs.
Cost on digits (1 198 training images, ConvNet width 16, 300 epochs): 10–15 s per network on one idle
CPU thread (``dc`` / ``dsv``, SAM: two passes per step); the main job's 10 (5 seeds × 2 recipes) took
160 s wall with ``--jobs 2`` on a shared machine.  Networks are trained one by one: the stacked
population of ``training.retrain_population`` is slower at full-data batch sizes (measured: 5 × ``dc``
85 s stacked vs ≈ 10 s each alone).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from joblib import Parallel, delayed

from .atomic import atomic_write_json, read_json_object
from .config import BenchConfig, EvalRecipe, config_hash, to_dict
from .data import ImageDataset, load_dataset
from .models import create_model
from .plan import derive_seed, device_of
from .pretrain import dataset_fingerprint
from .process import configure, usable_cores, worker_threads
from .provenance import provenance
from .registry import say
from .training import retrain

FOLDER = "full-data"


def full_data_key(dataset: ImageDataset, model_name: str, recipe: EvalRecipe, seed: int) -> str:
    return config_hash("full-data", dataset.name, dataset_fingerprint(dataset), model_name, recipe, seed)


def full_data_accuracies(plan: Any, dataset: ImageDataset, progress: bool = True) -> list[dict[str, Any]]:
    """One entry per (distinct evaluation recipe of the plan's columns, seed): from the cache, else
    trained (in ``--jobs`` processes on the CPU); each is also written to ``<out>/full-data/``."""
    config: BenchConfig = plan.config
    recipes = list({json.dumps(to_dict(c.eval_recipe), sort_keys=True): c.eval_recipe for c in plan.columns}.values())
    wanted = [(recipe, seed, full_data_key(dataset, config.retrain_model, recipe, seed))
              for recipe in recipes for seed in config.seeds]
    cache = Path(config.cache_dir) / FOLDER
    found = {key: entry for _, _, key in wanted if (entry := _read_entry(cache / f"{key}.json", key)) is not None}
    missing = [(recipe, seed, key) for recipe, seed, key in wanted if key not in found]
    if missing:
        if progress:
            say(f"full-data accuracy: training {config.retrain_model} on all {len(dataset.train_y)} training "
                f"images for {len(missing)} (recipe, seed) pair(s) (--scores)")
        # local processes, never more than this machine's cores (with --scheduler, --jobs counts the cluster's)
        local = min(config.jobs, len(missing), usable_cores())
        if local > 1 and device_of(config).type == "cpu":
            threads = worker_threads(torch.get_num_threads(), local)
            entries = Parallel(n_jobs=local, backend="loky")(
                delayed(_worker)(config, recipe, seed, key, threads) for recipe, seed, key in missing)
        else:
            entries = [_train(config, dataset, recipe, seed, key) for recipe, seed, key in missing]
        for entry in entries:
            atomic_write_json(cache / f"{entry['key']}.json", entry)
            found[entry["key"]] = entry
    out = Path(config.out) / FOLDER
    for _, _, key in wanted:
        atomic_write_json(out / f"{key}.json", found[key])
    return [found[key] for _, _, key in wanted]


def _worker(config: BenchConfig, recipe: EvalRecipe, seed: int, key: str, threads: int) -> dict[str, Any]:
    configure(threads)
    return _train(config, load_dataset(config.data, config.cache_dir), recipe, seed, key)


def _train(config: BenchConfig, dataset: ImageDataset, recipe: EvalRecipe, seed: int, key: str) -> dict[str, Any]:
    """Train a fresh network on the whole training split; its generator is seeded from ``seed`` alone."""
    device = device_of(config)
    generator = torch.Generator().manual_seed(derive_seed(seed, "full-data"))
    model = create_model(config.retrain_model, dataset.shape, generator).to(device)
    result = retrain(model, dataset.train_x.to(device), dataset.train_y.to(device), dataset.test_x.to(device),
                     dataset.test_y.to(device), recipe, generator)
    return {"kind": "full-data", "key": key, "dataset": dataset.name, "dataset_fingerprint": dataset_fingerprint(dataset),
            "train_size": len(dataset.train_y), "eval_model": config.retrain_model, "seed": seed,
            "test_accuracy": result.test_accuracy, "train_accuracy": result.train_accuracy,
            "seconds": result.seconds, "device": str(device), **provenance(),
            **{f"eval.{k}": v for k, v in to_dict(recipe).items()}}


def _read_entry(path: Path, key: str | None = None) -> dict[str, Any] | None:
    """A stored full-data entry, or None when absent; a damaged one is said in one line (and retrained)."""
    if not path.exists():
        return None
    entry = read_json_object(path)
    valid = (entry is not None and isinstance(entry.get("test_accuracy"), (int, float))
             and isinstance(entry.get("seed"), int) and isinstance(entry.get("dataset"), str)
             and (key is None or entry.get("key") == key))
    if not valid:
        say(f"full-data accuracy {path} is unreadable; {'training it again' if key else 'left out'}")
        return None
    return entry


def load_full_data(folders: list[Path | str]) -> list[dict[str, Any]]:
    """The full-data entries stored in runs' ``<out>/full-data/`` (each key once), for ``--from``."""
    entries: dict[str, dict[str, Any]] = {}
    for folder in folders:
        for path in sorted((Path(folder) / FOLDER).glob("*.json")):
            entry = _read_entry(path)
            if entry is not None:
                entries.setdefault(str(entry.get("key", path.stem)), entry)
    return list(entries.values())
