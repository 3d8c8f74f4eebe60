"""The registry's checks for any method, importable by a plug-in's own test suite::

    from dsvbench.testing import check_method

    def test_my_method():
        check_method("mine")          # builds it with its ``smoke`` recipe values on a tiny dataset

:func:`check_method` runs what the suite's registry-wide tests run for every built-in method: IPC
images per class of the dataset's shape, finite, the same set for the same seed, only the declared
needs handed over, ``build_many`` equal to ``build`` seed by seed, and a set that survives the cache's
``weights_only`` round trip.  Each failure is an ``AssertionError`` naming the method and the check.
"""
from __future__ import annotations

import dataclasses
import io

import torch

from .data import ImageDataset
from .methods import METHODS, AccessDenied, BuildContext, CondensedSet
from .models import create_model


def tiny_dataset(per_class: int = 12, classes: int = 3, channels: int = 1, size: int = 8,
                 seed: int = 0) -> ImageDataset:
    """Class c is a bright square at position c plus noise: linearly separable, a second to train on."""
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


def tiny_context(dataset: ImageDataset, method: str = "test", ipc: int = 1, seed: int = 0, data: bool = True,
                 model: bool = True, dynamics: torch.Tensor | None = None,
                 model_name: str = "convnet_tiny") -> BuildContext:
    """A build context over ``dataset`` with only the needs asked for (a fixed random θ*)."""
    pretrained = create_model(model_name, dataset.shape, torch.Generator().manual_seed(123)) if model else None
    return BuildContext(
        method=method, num_classes=dataset.num_classes, ipc=ipc, shape=dataset.shape,
        generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"), model_name=model_name,
        dataset_name=dataset.name, mean=dataset.mean, std=dataset.std,
        data_fingerprint=dataset.content_hash()[:16],
        _train=(dataset.train_x, dataset.train_y) if data else None,
        _pretrained=pretrained.eval() if pretrained is not None else None, _dynamics=dynamics)


def smoke_build(name: str, dataset: ImageDataset, seed: int = 0, ipc: int = 1) -> CondensedSet:
    """``name`` built with its registered ``smoke`` recipe values, given exactly its declared needs."""
    spec = METHODS.get(name)
    recipe = dataclasses.replace(spec.make_recipe(dataset.name), **spec.smoke)
    dynamics = torch.rand(4, len(dataset.train_y), generator=torch.Generator().manual_seed(1)) > 0.4
    ctx = tiny_context(dataset, method=name, ipc=ipc, seed=seed, data=spec.needs_data, model=spec.needs_model,
                       dynamics=dynamics if spec.needs_dynamics else None)
    return spec.build(ctx, recipe)


def check_method(name: str, dataset: ImageDataset | None = None) -> None:
    """Every registry check on method ``name`` (see the module docstring); raises AssertionError."""
    dataset = dataset or tiny_dataset()
    spec = METHODS.get(name)
    for ipc in (1, 3):
        built = smoke_build(name, dataset, ipc=ipc)
        assert built.images.shape == (dataset.num_classes * ipc, *dataset.train_x.shape[1:]), \
            f"{name}: images of shape {tuple(built.images.shape)} at IPC {ipc}"
        assert torch.bincount(built.labels, minlength=dataset.num_classes).tolist() == [ipc] * dataset.num_classes, \
            f"{name}: not {ipc} images per class"
        assert torch.isfinite(built.images).all(), f"{name}: non-finite images"
    first, second = smoke_build(name, dataset, seed=3), smoke_build(name, dataset, seed=3)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels), \
        f"{name}: another set for the same seed"
    dynamics = torch.zeros(2, len(dataset.train_y), dtype=torch.bool)
    ctx = tiny_context(dataset, method=name, data=spec.needs_data, model=spec.needs_model,
                       dynamics=dynamics if spec.needs_dynamics else None)
    for declared, what, touch in ((spec.needs_data, "data", lambda: ctx.train_images),
                                  (spec.needs_model, "model", lambda: ctx.pretrained),
                                  (spec.needs_dynamics, "dynamics", lambda: ctx.dynamics)):
        if declared:
            assert touch() is not None, f"{name}: declared {what} not handed over"
        else:
            try:
                touch()
            except AccessDenied:
                continue
            raise AssertionError(f"{name}: {what} handed over without being declared")
    if spec.build_many is not None:
        recipe = dataclasses.replace(spec.make_recipe(dataset.name), **spec.smoke)
        contexts = [tiny_context(dataset, method=name, seed=s, data=spec.needs_data, model=spec.needs_model)
                    for s in (0, 1)]
        together = spec.build_many(contexts, recipe)
        for seed, batched in zip((0, 1), together):
            alone = smoke_build(name, dataset, seed=seed)
            assert torch.allclose(batched.images, alone.images, atol=1e-5) and torch.equal(batched.labels, alone.labels), \
                f"{name}: build_many's seed {seed} differs from build's"
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    back = CondensedSet.from_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(back.images, first.images), f"{name}: its set does not survive the cache's round trip"
