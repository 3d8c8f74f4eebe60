"""The dataset types and registries: :class:`RawSplits` (what a reader returns), :class:`ImageDataset`
(normalized tensors), ``DATASETS`` (readers by name) and ``SOURCES`` (the files a reader reads)."""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import DataConfig
from ..models import InputShape
from ..registry import Registry, UserError


@dataclass
class RawSplits:
    """Images as uint8 arrays N×H×W×C (or N×H×W), labels as int arrays."""
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]


Reader = Callable[[DataConfig], RawSplits]
DATASETS: Registry[Reader] = Registry("dataset")
# The files a reader would read for a config (None when they are not there), which key the tensor
# cache; image folders are keyed by :func:`.folder.folder_signature`; no entry and no folder: not cached.
SOURCES: Registry[Callable[[DataConfig], "list[Path] | None"]] = Registry("dataset source")


class DatasetMissing(UserError):
    """Dataset files are not where we looked."""


def missing(name: str, path: Path | str, what: str = "files") -> DatasetMissing:
    return DatasetMissing(
        f"{name} {what} not found at {path}; put them there (or pass --data-root), "
        f"add --download to fetch them (needs torchvision), or use --dataset digits (offline)")


@dataclass
class ImageDataset:
    """Normalized train/test tensors (N×C×H×W float32) plus what is needed to undo it."""
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def shape(self) -> InputShape:
        return InputShape(self.train_x.shape[1], self.train_x.shape[2], self.num_classes)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return x * std + mean

    def to(self, device: str | torch.device) -> "ImageDataset":
        moved = ImageDataset(self.name, self.train_x.to(device), self.train_y.to(device),
                             self.test_x.to(device), self.test_y.to(device), self.mean, self.std,
                             self.class_names)
        memo = self.__dict__.get("_content_hash")
        if memo is not None and memo[0] == self._tensor_state():  # same content: no second pass
            moved._content_hash = (moved._tensor_state(), memo[1])
        return moved

    def fields(self) -> dict[str, Any]:
        """The dataclass fields only (what the tensor cache stores), without memoized values."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def content_hash(self) -> str:
        """sha256 of every label and pixel of both splits, their shapes and dtypes, and the class names.

        Keys every cache derived from the data (θ*, condensed sets) and verifies the tensor
        cache.  Computed once per object (≈0.1 s for MNIST) and recomputed only when a tensor
        is replaced or changed in place (its version counter moves).
        """
        state = self._tensor_state()
        memo = self.__dict__.get("_content_hash")
        if memo is None or memo[0] != state:
            digest = hashlib.sha256(repr(self.class_names).encode())
            for name in ("train_x", "train_y", "test_x", "test_y"):
                array = getattr(self, name).detach().cpu().contiguous().numpy()
                digest.update(f"|{name}:{array.dtype}:{array.shape}|".encode())
                digest.update(array)
            memo = self._content_hash = (state, digest.hexdigest())
        return memo[1]

    def _tensor_state(self) -> tuple:
        tensors = (self.train_x, self.train_y, self.test_x, self.test_y)
        return tuple((id(t), t.data_ptr(), t._version) for t in tensors)

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.train_y, minlength=self.num_classes)


def to_nchw_float(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W(×C) -> float32 N×C×H×W in [0, 1]."""
    array = images if images.ndim == 4 else images[..., None]
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).to(torch.float32, copy=True)
    return tensor.div_(255.0) if images.dtype == np.uint8 else tensor


def normalize(raw: RawSplits, name: str) -> ImageDataset:
    """Per-channel standardization with the training split's statistics."""
    train_x = to_nchw_float(raw.train_images)
    # float64 numpy reductions: the statistics (and so every normalized pixel, the dataset
    # fingerprint and every cache key) do not depend on torch's thread count, which differs
    # between the main process and joblib workers.
    pixels = train_x.transpose(0, 1).reshape(train_x.shape[1], -1).numpy().astype(np.float64)
    mean = torch.from_numpy(pixels.mean(axis=1)).float()
    std = torch.from_numpy(pixels.std(axis=1, ddof=1)).float()
    del pixels
    return standardize(raw, name, mean, std, train_x)


def standardize(raw: RawSplits, name: str, mean: torch.Tensor, std: torch.Tensor,
                train_x: torch.Tensor | None = None) -> ImageDataset:
    """The dataset of ``raw`` standardized with the given per-channel float32 ``mean`` and ``std``
    (:func:`normalize`'s, or those stored in the tensor cache: the same tensors bit for bit)."""
    view = (1, -1, 1, 1)

    def standardized(x: torch.Tensor) -> torch.Tensor:   # in place: one float copy of the split at a time
        return x.contiguous().sub_(mean.view(view)).div_(std.view(view))
    return ImageDataset(
        name,
        standardized(to_nchw_float(raw.train_images) if train_x is None else train_x),
        torch.as_tensor(raw.train_labels, dtype=torch.long),
        standardized(to_nchw_float(raw.test_images)),
        torch.as_tensor(raw.test_labels, dtype=torch.long),
        tuple(mean.tolist()), tuple(std.tolist()), list(raw.class_names))
