"""Shared fixtures: a tiny separable dataset and contexts for method builds."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(min(torch.get_num_threads(), 2))

from dsvbench.data import ImageDataset  # noqa: E402
from dsvbench.methods import BuildContext  # noqa: E402
from dsvbench.models import create_model  # noqa: E402


def make_tiny_dataset(per_class: int = 12, classes: int = 3, channels: int = 1, size: int = 8,
                      seed: int = 0) -> ImageDataset:
    """Class c is a bright square at position c plus noise: linearly separable."""
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(classes).repeat_interleave(n)
        images = 0.3 * torch.randn(len(labels), channels, size, size, generator=generator)
        for c in range(classes):
            images[labels == c, :, 2 * c:2 * c + 3, 2 * c:2 * c + 3] += 2.0
        return images, labels

    train_x, train_y = split(per_class)
    test_x, test_y = split(per_class // 2)
    return ImageDataset("tiny", train_x, train_y, test_x, test_y, (0.0,) * channels, (1.0,) * channels,
                        [str(c) for c in range(classes)])


@pytest.fixture
def tiny_dataset() -> ImageDataset:
    return make_tiny_dataset()


def make_context(dataset: ImageDataset, method: str = "test", ipc: int = 1, seed: int = 0,
                 data: bool = True, model: bool = True, dynamics: torch.Tensor | None = None,
                 model_name: str = "convnet_tiny") -> BuildContext:
    pretrained = create_model(model_name, dataset.shape, torch.Generator().manual_seed(123)) if model else None
    return BuildContext(
        method=method, num_classes=dataset.num_classes, ipc=ipc, shape=dataset.shape,
        generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"), model_name=model_name,
        dataset_name=dataset.name, mean=dataset.mean, std=dataset.std,
        data_fingerprint=dataset.content_hash()[:16],
        _train=(dataset.train_x, dataset.train_y) if data else None,
        _pretrained=pretrained.eval() if pretrained is not None else None, _dynamics=dynamics)
