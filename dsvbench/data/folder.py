"""Image folders in the torchvision ``ImageFolder`` convention: ``<root>/{train,test}/<class>/*``.

Classes are the sub-folder names sorted as strings (as ``ImageFolder`` does), so labels
agree with torchvision's.  Files are read in sorted name order, so the arrays are the same
on every machine.  Only ``.png .jpg .jpeg .bmp`` files count (any case); hidden files and
folders (``.ipynb_checkpoints``) are skipped.  All images must share one size and one mode,
RGB or L, because the benchmark stacks them into one tensor.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..registry import UserError
from .dataset import DatasetMissing, RawSplits

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MODES = {"RGB": 3, "L": 1}
FORMATS = ("PNG", "JPEG", "BMP")  # only these decoders are tried (faster than probing all)


def folder_missing(path: Path) -> DatasetMissing:
    return DatasetMissing(
        f"image folder not found at {path}; expected <data-root>/train/<class>/*.png|jpg and "
        f"<data-root>/test/<class>/* (pass --data-root; --download does not apply to folders), "
        f"or use --dataset digits (offline)")


def list_split(split_dir: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image paths, their labels and the sorted class names of one split folder."""
    if not split_dir.is_dir():
        raise folder_missing(split_dir)
    classes = sorted(entry.name for entry in os.scandir(split_dir)
                     if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise UserError(f"{split_dir} has no class sub-folders; expected {split_dir}/<class>/*.png|jpg")
    paths: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = [entry.name for entry in class_images(split_dir / name)]
        paths.extend(split_dir / name / file for file in files)
        labels.extend([label] * len(files))
    return paths, np.asarray(labels, dtype=np.int64), classes


def class_images(class_dir: Path) -> list[os.DirEntry]:
    """The image files of one class folder, sorted by name; none is an error."""
    entries = sorted((entry for entry in os.scandir(class_dir)
                      if entry.is_file() and not entry.name.startswith(".")
                      and entry.name.lower().endswith(IMAGE_SUFFIXES)), key=lambda entry: entry.name)
    if not entries:
        raise UserError(f"class folder {class_dir} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    return entries


def folder_signature(root: Path) -> list[tuple[str, str, str, str]]:
    """(split, class, file name, sha256 of its bytes) of every image the reader reads: what keys the
    tensor cache.  Content, not sizes or modification times: a copied folder still hits its cache,
    and any image rewritten in place — same name, size and mtime — is a new key."""
    signature = []
    for split in ("train", "test"):
        classes = sorted(entry.name for entry in os.scandir(root / split)
                         if entry.is_dir() and not entry.name.startswith("."))
        for name in classes:
            signature += [(split, name, entry.name, file_sha256(Path(entry.path)))
                          for entry in class_images(root / split / name)]
    return signature


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (MNIST's four files: ≈ 0.1 s)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def open_image(path: Path):
    """An image file through Pillow's PNG/JPEG/BMP decoders; an undecodable one is a one-line UserError."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path, formats=FORMATS)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise UserError(f"cannot decode image {path}: {error}") from None


def decode_images(paths: list[Path], size: tuple[int, int], mode: str) -> np.ndarray:
    """uint8 N×H×W×C array (C from ``mode``) of all images; each must have ``size`` and ``mode``.

    A tight single-threaded loop: ~80-110 µs per 32×32 JPEG (about 5-7 s for CIFAR-10's
    60 000, measured on 2 shared CPU cores); threads and joblib processes were no faster
    there, and ``load_dataset`` caches the decoded tensors, so this runs once per folder.
    """
    width, height = size
    out = np.empty((len(paths), height, width, MODES[mode]), dtype=np.uint8)
    rows = out.reshape(len(paths), -1)
    for index, path in enumerate(paths):
        with open_image(path) as image:
            if image.size != size or image.mode != mode:
                raise UserError(
                    f"{path} is {image.mode} {image.size[0]}×{image.size[1]} but the folder's first image is "
                    f"{mode} {size[0]}×{size[1]}; all images must share one size and mode (RGB or L)")
            try:
                rows[index] = np.frombuffer(image.tobytes(), dtype=np.uint8)
            except (OSError, ValueError) as error:  # truncated files fail while decoding
                raise UserError(f"cannot decode image {path}: {error}") from None
    return out


def read_image_folder(root: Path) -> RawSplits:
    """Both splits of an image folder; train and test must have the same class folders.

    Grayscale (L) folders give N×H×W arrays, RGB folders N×H×W×3.
    """
    if not root.is_dir():
        raise folder_missing(root)
    train_paths, train_labels, classes = list_split(root / "train")
    test_paths, test_labels, test_classes = list_split(root / "test")
    if test_classes != classes:
        only_train = sorted(set(classes) - set(test_classes)) or "-"
        only_test = sorted(set(test_classes) - set(classes)) or "-"
        raise UserError(f"train and test classes of {root} differ: only in train {only_train}, "
                        f"only in test {only_test}")
    with open_image(train_paths[0]) as first:
        size, mode = first.size, first.mode
    if mode not in MODES:
        raise UserError(f"{train_paths[0]} has mode {mode}; image folders must be RGB or L "
                        f"(convert them, e.g. with Pillow's Image.convert('RGB'))")
    train = decode_images(train_paths, size, mode)
    test = decode_images(test_paths, size, mode)
    if mode == "L":
        train, test = train[..., 0], test[..., 0]
    return RawSplits(train, train_labels, test, test_labels, classes)
