"""``torchvision.datasets.MNIST`` / ``FashionMNIST`` from local IDX files (plain or ``.gz``), read by dsvbench."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from dsvbench.data.formats import read_idx_pair, resolve_gz

_FILES = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


class MNIST(torch.utils.data.Dataset):
    """root/<class name>/raw/ IDX files; items are (transform(PIL 'L' image), int label)."""

    classes = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four",
               "5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine"]

    def __init__(self, root, train: bool = True, transform=None, target_transform=None, download: bool = False):
        raw = Path(root) / type(self).__name__ / "raw"
        paths = [resolve_gz(raw, name) for name in _FILES[bool(train)]]
        if None in paths:
            raise FileNotFoundError(f"no {' / '.join(_FILES[bool(train)])} (or .gz) in {raw}")
        images, labels = read_idx_pair(*paths)   # dsvbench's reader: the same bytes, its checks
        self.data, self.targets = torch.from_numpy(images), torch.from_numpy(labels)
        self.train, self.transform, self.target_transform = train, transform, target_transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        image, target = Image.fromarray(self.data[index].numpy(), mode="L"), int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target


class FashionMNIST(MNIST):
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
