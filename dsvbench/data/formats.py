"""Parsers for the standard binary dataset files: IDX (MNIST), CIFAR pickles, SVHN ``.mat``.

Each parser takes paths that exist and returns uint8 images (N×H×W or N×H×W×C) and int64
labels; a file that is not what it should be is a one-line :class:`UserError` naming it.
Finding the files (and the torchvision folder layouts) is :mod:`dsvbench.data.readers`' job.
"""
from __future__ import annotations

import gzip
import math
import pickle
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..registry import UserError

IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one MNIST-style files use


def resolve_gz(folder: Path, name: str) -> Path | None:
    """``folder/name`` if it exists, else ``folder/name.gz``, else None (raw is faster to read)."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytes:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise UserError(f"cannot read {path}: {error} (re-download the file)") from None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with ``ndim`` dimensions (LeCun's MNIST format).

    Layout: magic ``00 00 08 ndim``, then ``ndim`` big-endian uint32 sizes, then the bytes.
    """
    data = _read_bytes(path)
    magic = data[:4]
    expected_magic = bytes((0, 0, IDX_UBYTE, ndim))
    if magic != expected_magic:
        raise UserError(
            f"{path} is not an IDX file of {ndim}-D unsigned bytes (magic {magic.hex() or 'empty'}, "
            f"expected {expected_magic.hex()}); the file is corrupt or of another format, re-download it")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path} is truncated: its IDX header is incomplete; re-download it")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != math.prod(dims):
        raise UserError(f"{path} is truncated or corrupt: its header says {'×'.join(map(str, dims))} "
                        f"= {math.prod(dims)} bytes, the file holds {len(data) - header}; re-download it")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N×H×W) and labels (N) of one IDX split; their counts must agree."""
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise UserError(f"{images_path} holds {len(images)} images but {labels_path} "
                        f"{len(labels)} labels; the files do not belong together")
    return images, labels.astype(np.int64)


# What a CIFAR batch may reference (Python 2 originals and re-saves under Python 3, protocols 2-5):
# numpy arrays, dtypes and scalars, and ``_codecs.encode`` (how protocol 2 writes Python 3 bytes).
# Anything else -- ``os.system``, ``subprocess.Popen``, ``builtins.eval`` -- is refused unrun.
CIFAR_PICKLE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class UnsafePickle(pickle.UnpicklingError):
    """A pickle asked for a global outside :data:`CIFAR_PICKLE_GLOBALS`."""


class CifarUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the globals CIFAR batches need.

    A plain ``pickle.load`` runs whatever callable the file names (``__reduce__``); a file
    planted under ``--data-root`` would run code with the user's rights.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in CIFAR_PICKLE_GLOBALS:
            raise UnsafePickle(f"{module}.{name}")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):  # numpy 2 moved numpy.core
            module = "numpy._core." + module[len("numpy.core."):]
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict:
    """CIFAR pickles were written by Python 2: keys and strings are bytes."""
    try:
        with open(path, "rb") as handle:
            content = CifarUnpickler(handle, encoding="bytes").load()
    except UnsafePickle as error:
        raise UserError(f"refusing to load {path}: it asks for {error}, which no CIFAR pickle needs "
                        f"(only numpy arrays); the file is not the original, re-download it") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, KeyError, OSError) as error:
        raise UserError(f"cannot read {path} as a CIFAR pickle ({type(error).__name__}: {error}); "
                        f"re-download it") from None
    if not isinstance(content, dict):
        raise UserError(f"{path} is not a CIFAR pickle (holds a {type(content).__name__}, not a dict)")
    return content


def _key(content: dict, key: str, path: Path) -> Any:
    """``content[b'key']`` (the original files) or ``content['key']`` (re-saved under Python 3)."""
    for candidate in (key.encode(), key):
        if candidate in content:
            return content[candidate]
    found = ", ".join(k.decode() if isinstance(k, bytes) else str(k) for k in content)
    raise UserError(f"{path} has no {key!r} entry (found: {found}); is it the right file?")


def read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch: ``data`` N×3072 uint8 rows (R, G, B planes of 32×32) -> N×32×32×3."""
    content = _load_pickle(path)
    data = np.asarray(_key(content, "data", path))
    labels = np.asarray(_key(content, label_key, path), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 N×3072")
    if labels.shape != (len(data),):
        raise UserError(f"{path}: {len(data)} images but {labels.size} labels in {label_key!r}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def read_cifar_batches(paths: list[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Several batches concatenated in the order given."""
    parts = [read_cifar_batch(path, label_key) for path in paths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def read_cifar_names(path: Path, key: str) -> list[str]:
    """Class names from ``batches.meta`` (``label_names``) or ``meta`` (``fine_label_names``)."""
    names = _key(_load_pickle(path), key, path)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN cropped digits: ``X`` is 32×32×3×N, ``y`` is N×1 with 10 standing for digit 0."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        content = loadmat(path, variable_names=["X", "y"])
    except (ValueError, TypeError, OSError, NotImplementedError, MatReadError) as error:
        raise UserError(f"cannot read {path} as a MATLAB file ({type(error).__name__}: {error}); "
                        f"re-download it") from None
    if "X" not in content or "y" not in content:
        raise UserError(f"{path} has no 'X' and 'y' variables; is it train_32x32.mat / test_32x32.mat?")
    images, labels = content["X"], content["y"].astype(np.int64).reshape(-1)
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.shape[3] != labels.size:
        raise UserError(f"{path}: X is {images.shape} and y has {labels.size} labels, "
                        f"expected X 32×32×3×N and N labels")
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise UserError(f"{path}: labels range {labels.min()}..{labels.max()}, expected 0..10")
    labels[labels == 10] = 0
    return np.ascontiguousarray(images.transpose(3, 0, 1, 2), dtype=np.uint8), labels
