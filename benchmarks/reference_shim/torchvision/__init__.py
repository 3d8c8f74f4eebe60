"""A stand-in for the few torchvision names the DC / DSA / DM reference scripts import.

torchvision's registry wheels do not import beside the torch this suite pins, so
``benchmarks/vs_reference.py`` puts this folder first on the reference scripts' ``PYTHONPATH``.
It reads the local files only (never downloads) and does what torchvision does for them:
``datasets.MNIST`` / ``FashionMNIST`` keep the uint8 images and hand out one PIL image per
item, ``transforms.ToTensor`` / ``Normalize`` / ``Compose`` turn it into a normalized float
tensor, ``utils.save_image`` writes a grid PNG.  Nothing here is imported by dsvbench itself.
"""
from . import datasets, transforms, utils  # noqa: F401

__version__ = "0.0-dsvbench-shim"
