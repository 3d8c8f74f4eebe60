"""``--download``: let torchvision fetch the standard files, which our readers then parse.

torchvision is optional (the CPU-only PyTorch wheel does not work with the registry's
torchvision wheels), so it is imported here, lazily, and only when a download is asked for.
Without it the error says where to get the files and where to put them by hand.
"""
from __future__ import annotations

from pathlib import Path

from ..registry import UserError, first_line

# dataset -> (torchvision class, keyword arguments of one constructor call per split to fetch)
TORCHVISION_DATASETS: dict[str, tuple[str, tuple[dict, ...]]] = {
    "mnist": ("MNIST", ({"train": True}, {"train": False})),
    "fashion-mnist": ("FashionMNIST", ({"train": True}, {"train": False})),
    "cifar10": ("CIFAR10", ({"train": True},)),     # one archive holds both splits
    "cifar100": ("CIFAR100", ({"train": True},)),
    "svhn": ("SVHN", ({"split": "train"}, {"split": "test"})),
}

# Where the files come from and where to put them by hand, relative to --data-root.
MANUAL_SOURCES = {
    "mnist": "the four *-ubyte.gz files from https://ossci-datasets.s3.amazonaws.com/mnist/ into {root}/MNIST/raw",
    "fashion-mnist": "the four *-ubyte.gz files from "
                     "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ into {root}/FashionMNIST/raw",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz unpacked in {root} "
               "(giving {root}/cifar-10-batches-py)",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz unpacked in {root} "
                "(giving {root}/cifar-100-python)",
    "svhn": "train_32x32.mat and test_32x32.mat from http://ufldl.stanford.edu/housenumbers/ into {root}",
}


def manual_hint(name: str, root: Path) -> str:
    return "put " + MANUAL_SOURCES[name].format(root=root)


def _torchvision_datasets():
    """``torchvision.datasets``, or a one-line UserError when torchvision does not import."""
    try:
        from torchvision import datasets
    except Exception as error:  # ImportError, or RuntimeError from a torch/torchvision mismatch
        reason = first_line(error)
        raise UserError(f"--download needs torchvision, which does not import here ({reason})") from None
    return datasets


def fetch_with_torchvision(name: str, root: Path) -> None:
    """Download dataset ``name`` into ``root`` in the layout torchvision uses (and we read)."""
    if name not in TORCHVISION_DATASETS:
        raise UserError(f"--download does not apply to dataset {name!r}; it works for "
                        f"{', '.join(TORCHVISION_DATASETS)}")
    hint = manual_hint(name, root)
    try:
        datasets = _torchvision_datasets()
    except UserError as error:
        raise UserError(f"{error}; {hint}") from None
    class_name, splits = TORCHVISION_DATASETS[name]
    root.mkdir(parents=True, exist_ok=True)
    for kwargs in splits:
        try:
            getattr(datasets, class_name)(str(root), download=True, **kwargs)
        except Exception as error:  # network errors, checksum mismatches
            reason = first_line(error)
            raise UserError(f"torchvision could not download {name} ({reason}); {hint}") from None
