"""The ``dc`` evaluation recipe as the DC reference code runs it (``utils.evaluate_synset`` and
``get_daparam``, docs/evaluation.md): passes, the learning-rate drop with a fresh optimizer, the
augmentation strategy and epoch count per dataset and model, and the DC paper's protocol."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dsvbench import training
from dsvbench.augment import DC_STRATEGIES, draw
from dsvbench.options import build_parser, config_from_args
from dsvbench.config import eval_recipe
from dsvbench.registry import UserError
from dsvbench.vectorized import train_stacked

IMAGES = torch.linspace(-1, 1, 4 * 1 * 8 * 8).view(4, 1, 8, 8)
LABELS = torch.tensor([0, 1, 0, 1])


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 2))


def recipe(**fields) -> training.EvalRecipe:
    return dataclasses.replace(eval_recipe("dc", "cifar10"), **{"epochs": 4, "batch_size": 4, **fields})


def record_steps(monkeypatch) -> list[tuple[float, int, int]]:
    """(lr, optimizer id, optimizer state entries before the step) of every training step."""
    seen: list[tuple[float, int, int]] = []
    original = training._step

    def spy(model, optimizer, inputs, targets):
        seen.append((optimizer.param_groups[0]["lr"], id(optimizer), len(optimizer.state)))
        return original(model, optimizer, inputs, targets)

    monkeypatch.setattr(training, "_step", spy)
    return seen


def test_dc_runs_epoch_plus_one_passes_and_drops_after_pass_epoch_half_plus_one(monkeypatch):
    # Epoch = 4: passes 0..4 (range(Epoch+1)); lr_schedule = [4//2 + 1] = [3], checked after the
    # pass, so passes 0-3 run at 0.01 and pass 4 at 0.001 — one batch per pass here.
    seen = record_steps(monkeypatch)
    passes: list[int] = []
    training.train_on_set(tiny_model(), IMAGES, LABELS, recipe(), torch.Generator().manual_seed(0), passes.append)
    assert passes == [0, 1, 2, 3, 4]
    assert [lr for lr, _, _ in seen] == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.001])


def test_momentum_buffer_is_empty_right_after_the_drop(monkeypatch):
    seen = record_steps(monkeypatch)
    training.train_on_set(tiny_model(), IMAGES, LABELS, recipe(), torch.Generator().manual_seed(0))
    before, after = seen[3], seen[4]
    assert before[2] > 0                                  # momentum buffers exist before the drop
    assert after[1] != before[1] and after[2] == 0        # a new optimizer, its state empty


def test_legacy_schedule_keeps_momentum_and_runs_epoch_passes(monkeypatch):
    seen = record_steps(monkeypatch)
    legacy = dataclasses.replace(eval_recipe("dc_legacy", "cifar10"), epochs=4, batch_size=4)
    training.train_on_set(tiny_model(), IMAGES, LABELS, legacy, torch.Generator().manual_seed(0))
    assert [lr for lr, _, _ in seen] == pytest.approx([0.01, 0.01, 0.01, 0.001])
    assert len({optimizer for _, optimizer, _ in seen}) == 1


def reference_loop(model: nn.Module, epochs: int, lr: float = 0.01) -> None:
    """The reference's evaluate_synset loop written out (no augmentation, one full batch)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    for ep in range(epochs + 1):
        optimizer.zero_grad()
        F.cross_entropy(model(IMAGES), LABELS).backward()
        optimizer.step()
        if ep in [epochs // 2 + 1]:
            lr *= 0.1
            optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)


@pytest.mark.parametrize("epochs", [2, 3, 4, 7])
def test_one_by_one_and_stacked_training_equal_the_reference_loop(epochs):
    expected = tiny_model()
    reference_loop(expected, epochs)
    single = tiny_model()
    training.train_on_set(single, IMAGES, LABELS, recipe(epochs=epochs), torch.Generator().manual_seed(0))
    stacked = [tiny_model(), tiny_model()]
    train_stacked(stacked, IMAGES, LABELS, recipe(epochs=epochs), [torch.Generator().manual_seed(s) for s in (0, 1)])
    for model in (single, *stacked):
        for got, want in zip(model.parameters(), expected.parameters()):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dataset, model, augment, epochs", [
    ("mnist", "convnet", "dc", 1000), ("digits", "convnet", "dc", 1000),
    ("fashion-mnist", "convnet", "none", 300), ("cifar10", "convnet", "none", 300),
    ("svhn", "convnet", "none", 300), ("cifar10", "convnet_bn", "dc_crop_noise", 1000),
])
def test_dc_strategy_and_epochs_per_dataset_and_model(dataset, model, augment, epochs):
    dc = eval_recipe("dc", dataset, model)
    assert (dc.augment, dc.epochs, dc.passes, dc.drop_pass) == (augment, epochs, epochs + 1, epochs // 2 + 2)
    assert (dc.lr, dc.momentum, dc.weight_decay, dc.batch_size, dc.reset_at_drop) == (0.01, 0.9, 5e-4, 256, True)


def test_dsa_and_legacy_recipes():
    dsa = eval_recipe("dsa", "mnist")
    assert (dsa.augment, dsa.epochs, dsa.extra_pass, dsa.reset_at_drop) == ("dsa_noflip", 1000, True, True)
    assert eval_recipe("dsa", "cifar10").augment == "dsa"      # flip only where it is not a digit
    legacy = eval_recipe("dc_legacy", "mnist")
    assert (legacy.augment, legacy.epochs, legacy.passes, legacy.drop_pass, legacy.reset_at_drop) == \
        ("dc_noise", 300, 300, 151, False)
    assert eval_recipe("dsv", "mnist").passes == 300      # the DSV recipes keep their schedule


@pytest.mark.parametrize("kind, ops", [("dc", {0, 1, 2}), ("dc_noise", {0, 1, 2, 3}), ("dc_crop_noise", {0, 3})])
def test_dc_strategies_draw_only_their_ops(kind, ops):
    drawn = draw(kind, (4000, 1, 28, 28), torch.Generator().manual_seed(0))
    assert set(drawn["op"].tolist()) == ops == set(DC_STRATEGIES[kind])
    assert ("jitter" in drawn) == (3 in ops)


def test_dsa_on_digits_never_flips():
    from dsvbench.augment import DSA_KINDS, parse_strategy
    assert "flip" not in parse_strategy(DSA_KINDS["dsa_noflip"]) and "flip" in parse_strategy(DSA_KINDS["dsa"])
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    for seed in range(40):    # the op group is drawn per call: no draw ever returns a mirror image
        out = training.augment(x, "dsa_noflip", torch.Generator().manual_seed(seed))
        assert not torch.equal(out, x.flip(3))


def test_mnist_strategy_never_adds_noise():
    """'crop_scale_rotate': no image comes back unchanged plus σ 0.001 noise (the old 'noise' op)."""
    x = torch.zeros(512, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    out = training.augment(x, "dc", torch.Generator().manual_seed(0))
    nearly_same = ((out - x).abs().amax((1, 2, 3)) < 0.01).float().mean().item()
    assert nearly_same < 0.1    # with the noise option about a quarter would be


def parse(*argv: str):
    return config_from_args(build_parser().parse_args(["--dataset", "digits", "--methods", "random", *argv]))


def test_dc_paper_protocol_retrains_20_models_per_set():
    assert parse("--protocol", "dc-paper").evals_per_set == 20
    assert parse().evals_per_set == 1
    assert parse("--evals-per-set", "3").evals_per_set == 3
    with pytest.raises(UserError, match="contradicts"):
        parse("--protocol", "dc-paper", "--evals-per-set", "3")
