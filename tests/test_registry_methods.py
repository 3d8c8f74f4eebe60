"""Every registered method, built on a tiny dataset with its `smoke` budgets (timm-style)."""
import pytest
import torch

from dsvbench.methods import METHODS, AccessDenied, load_methods
from dsvbench.testing import smoke_build
from tests.conftest import make_context, make_tiny_dataset

load_methods()
DATASET = make_tiny_dataset(per_class=12)


def build(name: str, seed: int = 0, ipc: int = 1):
    return smoke_build(name, DATASET, seed=seed, ipc=ipc)   # the plug-in kit's build (dsvbench.testing)


@pytest.mark.parametrize("name", METHODS.names())
@pytest.mark.parametrize("ipc", [1, 3])
def test_method_returns_ipc_images_per_class(name, ipc):
    condensed = build(name, ipc=ipc)
    assert condensed.images.shape == (3 * ipc, *DATASET.train_x.shape[1:])
    assert torch.bincount(condensed.labels, minlength=3).tolist() == [ipc] * 3
    assert torch.isfinite(condensed.images).all()


@pytest.mark.parametrize("name", METHODS.names())
def test_method_is_deterministic_per_seed(name):
    first, second = build(name, seed=3), build(name, seed=3)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)


@pytest.mark.parametrize("name", METHODS.names())
def test_declared_needs_are_handed_over_and_nothing_else(name):
    """Each of the three needs, for every method: declared -> there, undeclared -> AccessDenied."""
    spec = METHODS.get(name)
    dynamics = torch.zeros(2, len(DATASET.train_y), dtype=torch.bool)
    ctx = make_context(DATASET, method=name, data=spec.needs_data, model=spec.needs_model,
                       dynamics=dynamics if spec.needs_dynamics else None)
    for declared, touch in ((spec.needs_data, lambda: ctx.train_images), (spec.needs_model, lambda: ctx.pretrained),
                            (spec.needs_dynamics, lambda: ctx.dynamics)):
        if declared:
            assert touch() is not None
        else:
            with pytest.raises(AccessDenied):
                touch()


@pytest.mark.parametrize("name", METHODS.names())
def test_the_plug_in_kit_checks_pass_for_every_method(name):
    from dsvbench.testing import check_method
    check_method(name)


def test_the_plug_in_kit_catches_a_broken_method():
    from dataclasses import dataclass

    from dsvbench.methods import CondensedSet, register_method
    from dsvbench.testing import check_method

    @dataclass(frozen=True)
    class Recipe:
        pass

    @register_method("broken-for-test", table_name="broken", group="selection", recipe=Recipe, eval_recipe="dc",
                     needs_data=True)
    def build(ctx, recipe):   # one image per class whatever the IPC
        return CondensedSet(ctx.train_images[:ctx.num_classes], torch.arange(ctx.num_classes))
    try:
        with pytest.raises(AssertionError, match="broken-for-test"):
            check_method("broken-for-test")
    finally:
        METHODS.discard("broken-for-test")
