"""The dataset tensor cache under ``<cache-dir>/datasets``: keyed by the source files, verified on load.

The file name holds a hash of the data root and one of the source files' signature (the sha256
of every source file's bytes; of every image in a folder dataset), so re-downloaded files, a
folder that gained a class or images rewritten in place are read again instead of answered from
a stale cache.  The file stores the images as the readers return them (uint8: a quarter of the
float32 tensors, 55 MB for MNIST) with the training split's per-channel mean and std, and the
load standardizes them once (:func:`.dataset.standardize`: the same tensors as a fresh read, bit
for bit).  It also stores that source key, checked on load, and the sha256 of the standardized
tensors (:meth:`ImageDataset.content_hash`); a corrupt, foreign or non-finite file is one line on
stderr and re-read.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import CacheMismatch, atomic_torch_save, load_cache_file
from ..config import DataConfig, config_hash
from .dataset import SOURCES, ImageDataset, RawSplits, standardize
from .folder import file_sha256, folder_signature

CHECK_CHUNK = 4096   # images per finiteness check: isfinite's temporaries on a whole split cost 1.7× its bytes
FORMAT = 4  # version of the stored layout ({"raw", "name", "mean", "std", "sha256", "source"}; 3 held float32)


def source_key(config: DataConfig) -> str | None:
    """Hash of the files ``config``'s reader reads, None when they are missing or unknown (no cache).

    Files: name, size and the sha256 of the bytes.  Image folders: names and the sha256 of every
    image (:func:`.folder.folder_signature`; a folder with a bad layout raises the reader's own error).
    """
    root = _root(config)
    if config.name == "folder":
        signature = folder_signature(root) if root.is_dir() else None
    else:
        files = SOURCES.get(config.name)(config) if config.name in SOURCES else None
        signature = None if files is None else [(p.name, p.stat().st_size, file_sha256(p)) for p in files]
    if signature is None:
        return None
    text = "\n".join("\t".join(map(str, entry)) for entry in signature)
    return hashlib.sha256(f"{FORMAT}\n{text}".encode()).hexdigest()[:12]


def cache_path(cache_dir: str | Path, config: DataConfig, key: str) -> Path:
    return Path(cache_dir) / "datasets" / f"{config.name}-{config_hash(config.name, str(_root(config)))}-{key}.pt"


def load_cached_dataset(cache_dir: str | Path, config: DataConfig, key: str) -> ImageDataset | None:
    """The cached tensors if their file exists and its stored sha256 matches them, else None."""
    path = cache_path(cache_dir, config, key)
    if not path.exists():
        return None
    return load_cache_file(path, lambda state: _verified(state, key), "cached dataset",
                           action="reading the dataset files again")


def _verified(state: dict[str, Any], key: str) -> ImageDataset:
    if state.get("source") != key:
        raise CacheMismatch(f"was read from other source files (source {state.get('source')!r}, expected {key!r})")
    stored = state["raw"]
    raw = RawSplits(*(stored[k].numpy() for k in ("train_images", "train_labels", "test_images", "test_labels")),
                    list(stored["class_names"]))
    dataset = standardize(raw, str(state["name"]), torch.tensor(state["mean"], dtype=torch.float32),
                          torch.tensor(state["std"], dtype=torch.float32))
    if dataset.content_hash() != state["sha256"]:
        raise CacheMismatch("does not match the sha256 stored with it (changed or damaged on disk)")
    for split, images, labels in (("train", dataset.train_x, dataset.train_y), ("test", dataset.test_x, dataset.test_y)):
        if not all(torch.isfinite(chunk).all() for chunk in images.split(CHECK_CHUNK)):
            raise CacheMismatch(f"holds non-finite {split} images (nan or inf)")
        if len(labels) != len(images) or (len(labels) and not 0 <= int(labels.min()) <= int(labels.max())
                                          < dataset.num_classes):
            raise CacheMismatch(f"holds {split} labels that do not fit its images or its {dataset.num_classes} classes")
    return dataset


def save_cached_dataset(cache_dir: str | Path, config: DataConfig, key: str, raw: RawSplits,
                        dataset: ImageDataset) -> Path:
    """Write the reader's arrays, the standardization and the sha256 of ``dataset`` (their standardized
    tensors); older caches of the same root (other sources) are removed."""
    path = cache_path(cache_dir, config, key)
    stored = {k: torch.from_numpy(np.ascontiguousarray(getattr(raw, k)))
              for k in ("train_images", "train_labels", "test_images", "test_labels")}
    atomic_torch_save({"raw": {**stored, "class_names": list(raw.class_names)}, "name": dataset.name,
                       "mean": list(dataset.mean), "std": list(dataset.std), "sha256": dataset.content_hash(),
                       "source": key}, path)
    for stale in path.parent.glob(path.name.rsplit("-", 1)[0] + "-*.pt"):
        if stale != path:
            stale.unlink(missing_ok=True)
    return path


def _root(config: DataConfig) -> Path:
    return Path(config.root).expanduser().resolve()
