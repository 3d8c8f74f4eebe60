"""Loading a dataset: read it (its registered reader) or load its cached tensors, normalize, cache."""
from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from . import readers  # noqa: F401  (registers the readers)
from .cache import load_cached_dataset, save_cached_dataset, source_key
from .dataset import DATASETS, ImageDataset, normalize


def load_dataset(config: DataConfig, cache_dir: str | Path | None = None) -> ImageDataset:
    """Read (or load the cached tensors of) the dataset named in ``config``.

    ``digits`` is embedded and fast to read, so it is never cached; the cache of the others is
    keyed by their source files (:mod:`.cache`) and verified against a hash of its tensors.
    """
    reader = DATASETS.get(config.name)
    key = source_key(config) if cache_dir is not None and config.name != "digits" else None
    if key is not None:
        cached = load_cached_dataset(cache_dir, config, key)
        if cached is not None:
            return cached
    name = f"folder:{Path(config.root).name}" if config.name == "folder" else config.name
    raw = reader(config)
    dataset = normalize(raw, name)
    if cache_dir is not None and config.name != "digits":
        key = key or source_key(config)  # --download may have just fetched the files
        if key is not None:
            save_cached_dataset(cache_dir, config, key, raw, dataset)
    return dataset
