"""The dataset registry's readers: find the standard files under ``--data-root`` and parse them.

``digits`` ships with scikit-learn (offline).  The others read the files the datasets are
distributed as, in torchvision's layouts too, so ``--data-root`` can point at a torchvision
``root``; parsing is in :mod:`.formats` (binary files) and :mod:`.folder` (image folders).
With ``--download`` and torchvision importable, missing files are fetched first.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from ..config import DataConfig
from .dataset import DATASETS, SOURCES, RawSplits, missing
from .download import fetch_with_torchvision
from .folder import read_image_folder
from .formats import read_cifar_batches, read_cifar_names, read_idx_pair, read_svhn_mat, resolve_gz

T = TypeVar("T")

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
DIGIT_NAMES = [str(i) for i in range(10)]
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]  # torchvision's names
CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
CIFAR100_FILES = ("train", "test", "meta")
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def _root(config: DataConfig) -> Path:
    return Path(config.root).expanduser().resolve()


def _find_or_fetch(config: DataConfig, name: str, find: Callable[[Path], T | None]) -> tuple[Path, T | None]:
    """``find(root)``; if nothing is there and ``--download`` was given, fetch and look again."""
    root = _root(config)
    found = find(root)
    if found is None and config.download:
        fetch_with_torchvision(name, root)
        found = find(root)
    return root, found


def _folder_with(candidates: list[Path], files: tuple[str, ...]) -> Path | None:
    """The first candidate folder holding all ``files``."""
    return next((c for c in candidates if all((c / f).is_file() for f in files)), None)


def _files_in(folder: Path | None, files: tuple[str, ...]) -> list[Path] | None:
    return None if folder is None else [folder / f for f in files]


@DATASETS.register("digits")
def read_digits(config: DataConfig) -> RawSplits:
    """scikit-learn's 8×8 digits (1797 images), fixed stratified split: 1/3 test, seed 0."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 -> 0..255
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=1 / 3, stratify=digits.target, random_state=0)
    return RawSplits(train_x, train_y, test_x, test_y, [str(i) for i in range(10)])


def _find_idx(folders: list[Path]) -> dict[str, Path] | None:
    """The four IDX files (raw or ``.gz``) from the first folder holding all of them."""
    for folder in folders:
        paths = {name: resolve_gz(folder, name) for name in IDX_FILES}
        if all(paths.values()):
            return paths
    return None


def _read_idx_dataset(config: DataConfig, name: str, subfolder: str, class_names: list[str]) -> RawSplits:
    """IDX files in ``<root>/<subfolder>/raw`` (torchvision's layout) or in ``<root>`` itself."""
    root, paths = _find_or_fetch(config, name, lambda r: _find_idx([r / subfolder / "raw", r]))
    if paths is None:
        raise missing(name, f"{root / subfolder / 'raw'} or {root}",
                      what="IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-…)")
    train_x, train_y = read_idx_pair(paths[IDX_FILES[0]], paths[IDX_FILES[1]])
    test_x, test_y = read_idx_pair(paths[IDX_FILES[2]], paths[IDX_FILES[3]])
    return RawSplits(train_x, train_y, test_x, test_y, list(class_names))


def _idx_sources(subfolder: str) -> Callable[[DataConfig], list[Path] | None]:
    def sources(config: DataConfig) -> list[Path] | None:
        root = _root(config)
        paths = _find_idx([root / subfolder / "raw", root])
        return None if paths is None else list(paths.values())
    return sources


SOURCES.add("mnist", _idx_sources("MNIST"))
SOURCES.add("fashion-mnist", _idx_sources("FashionMNIST"))


@DATASETS.register("mnist")
def read_mnist(config: DataConfig) -> RawSplits:
    """MNIST (LeCun et al. 1998): 60k/10k 28×28 grayscale digits."""
    return _read_idx_dataset(config, "mnist", "MNIST", DIGIT_NAMES)


@DATASETS.register("fashion-mnist")
def read_fashion_mnist(config: DataConfig) -> RawSplits:
    """Fashion-MNIST (Xiao et al. 2017): 60k/10k 28×28 grayscale clothes, same IDX files."""
    return _read_idx_dataset(config, "fashion-mnist", "FashionMNIST", FASHION_NAMES)


@SOURCES.register("cifar10")
def cifar10_sources(config: DataConfig) -> list[Path] | None:
    root = _root(config)
    return _files_in(_folder_with([root / "cifar-10-batches-py", root], CIFAR10_FILES), CIFAR10_FILES)


@DATASETS.register("cifar10")
def read_cifar10(config: DataConfig) -> RawSplits:
    """CIFAR-10 (Krizhevsky 2009): ``cifar-10-batches-py/`` under the root, or the root itself."""
    root, folder = _find_or_fetch(
        config, "cifar10", lambda r: _folder_with([r / "cifar-10-batches-py", r], CIFAR10_FILES))
    if folder is None:
        raise missing("cifar10", root / "cifar-10-batches-py",
                      what="pickles (data_batch_1..5, test_batch, batches.meta)")
    train_x, train_y = read_cifar_batches([folder / f"data_batch_{i}" for i in range(1, 6)], "labels")
    test_x, test_y = read_cifar_batches([folder / "test_batch"], "labels")
    return RawSplits(train_x, train_y, test_x, test_y, read_cifar_names(folder / "batches.meta", "label_names"))


@SOURCES.register("cifar100")
def cifar100_sources(config: DataConfig) -> list[Path] | None:
    root = _root(config)
    return _files_in(_folder_with([root / "cifar-100-python", root], CIFAR100_FILES), CIFAR100_FILES)


@DATASETS.register("cifar100")
def read_cifar100(config: DataConfig) -> RawSplits:
    """CIFAR-100 (Krizhevsky 2009) with its 100 fine labels: ``cifar-100-python/`` under the root."""
    root, folder = _find_or_fetch(
        config, "cifar100", lambda r: _folder_with([r / "cifar-100-python", r], CIFAR100_FILES))
    if folder is None:
        raise missing("cifar100", root / "cifar-100-python", what="pickles (train, test, meta)")
    train_x, train_y = read_cifar_batches([folder / "train"], "fine_labels")
    test_x, test_y = read_cifar_batches([folder / "test"], "fine_labels")
    return RawSplits(train_x, train_y, test_x, test_y, read_cifar_names(folder / "meta", "fine_label_names"))


@SOURCES.register("svhn")
def svhn_sources(config: DataConfig) -> list[Path] | None:
    return _files_in(_folder_with([_root(config)], SVHN_FILES), SVHN_FILES)


@DATASETS.register("svhn")
def read_svhn(config: DataConfig) -> RawSplits:
    """SVHN cropped digits (Netzer et al. 2011), train and test (not ``extra``); label 10 -> 0."""
    root, folder = _find_or_fetch(config, "svhn", lambda r: _folder_with([r], SVHN_FILES))
    if folder is None:
        raise missing("svhn", root, what="files (train_32x32.mat, test_32x32.mat)")
    train_x, train_y = read_svhn_mat(folder / SVHN_FILES[0])
    test_x, test_y = read_svhn_mat(folder / SVHN_FILES[1])
    return RawSplits(train_x, train_y, test_x, test_y, list(DIGIT_NAMES))


@DATASETS.register("folder")
def read_folder(config: DataConfig) -> RawSplits:
    """An image folder ``<root>/{train,test}/<class>/*.{png,jpg,jpeg,bmp}`` (see :mod:`.folder`)."""
    return read_image_folder(_root(config))
