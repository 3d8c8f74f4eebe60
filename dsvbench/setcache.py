"""Condensed sets in the cache: what a cached set claims to be, its digest, and the checks on load
(docs/integrity.md).  A set that fails them is rebuilt, never used."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from .atomic import CacheMismatch, atomic_torch_save, check_claims, load_cache_file
from .data import ImageDataset
from .methods import CondensedSet


def set_claims(key: str, method: str, seed: int, ipc: int, dataset: ImageDataset) -> dict[str, Any]:
    """What a cached set claims to be, stored inside its file and checked on load: its key and
    what the key stands for (method, seed, IPC), and the image shape and classes it must have."""
    shape = dataset.shape
    return {"key": key, "method": method, "seed": int(seed), "ipc": int(ipc),
            "image_shape": [shape.channels, shape.size, shape.size], "num_classes": int(dataset.num_classes)}


def load_cached_set(path: Path, claims: dict[str, Any]) -> tuple[CondensedSet, dict[str, Any]] | None:
    """A cached condensed set and its build info; None (so it is rebuilt) when the file is unsafe,
    truncated or malformed, claims another key (method, seed, IPC) or holds a set that cannot be the
    one asked for — wrong image shape, labels outside the classes, non-finite values — said in one
    line naming the file (:func:`load_cache_file`)."""
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
    soft = condensed.soft_labels
    if soft is not None and (soft.shape != (len(images), num_classes) or not torch.isfinite(soft).all()):
        return f"holds soft labels of shape {tuple(soft.shape)}, not {len(images)}×{num_classes} finite values"
    return None


def set_digest(state: dict[str, Any], claims: dict[str, Any] | None = None) -> str:
    """sha256 of a condensed set's state (tensor bytes and metadata) and of what it claims to be,
    stored beside it in the cache and checked on load: a well-formed but altered set is rebuilt,
    never used."""
    digest = hashlib.sha256()
    for name in ("images", "labels", "weights", *(k for k in ("soft_labels",) if state.get(k) is not None)):
        value = state.get(name)
        digest.update(name.encode())
        if value is not None:
            digest.update(str((value.dtype, tuple(value.shape))).encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps(state.get("metadata", {}), sort_keys=True, default=str).encode())
    if state.get("lr") is not None:
        digest.update(repr(float(state["lr"])).encode())
    if claims is not None:
        digest.update(json.dumps(claims, sort_keys=True).encode())
    return digest.hexdigest()


def save_cached_set(path: Path, condensed: CondensedSet, build_info: dict[str, Any], claims: dict[str, Any]) -> None:
    """Cache ``condensed`` with its build info, its claims and their digest (checked by :func:`load_cached_set`)."""
    state = condensed.state_dict()
    atomic_torch_save({"set": state, "build_info": build_info, "claims": claims,
                       "sha256": set_digest(state, claims)}, path)
