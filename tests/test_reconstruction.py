"""The reconstruction regime of Haim et al. 2022 in the DeepKKT engine (dsvbench.methods.kkt_terms)
and the reconstruction benchmark (dsvbench.reconstruction, benchmarks/reconstruct.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dsvbench.methods.base import MethodFailed
from dsvbench.methods.deepkkt import DeepKKT
from dsvbench.methods.kkt_loop import lambda_unit, step_multipliers
from dsvbench.methods.kkt_recipe import KKTRecipe
from dsvbench.methods.kkt_terms import (FLOOR_WEIGHT, SmoothBackwardReLU, floor_gradient, pixel_bounds, range_penalty,
                                        smooth_relus)
from dsvbench.models import InputShape
from dsvbench.recon_scores import haim_scores, ncc_distance, ssim, training_share
from dsvbench.reconstruction import Case, HaimMLP, engine_reconstruct, haim_reference
from dsvbench.registry import UserError

ROOT = Path(__file__).resolve().parents[1]


def test_smooth_relu_forward_is_relu_and_backward_is_the_sigmoid_surrogate():
    z = torch.tensor([-2.0, -0.1, 0.0, 0.3, 4.0], dtype=torch.float64, requires_grad=True)
    out = SmoothBackwardReLU(5.0)(z)
    assert torch.equal(out, F.relu(z))
    grad, = torch.autograd.grad(out.sum(), z, create_graph=True)
    assert torch.allclose(grad, torch.sigmoid(5.0 * z))             # not the step 1[z > 0]
    second, = torch.autograd.grad(grad.sum(), z)                     # differentiable: the double backward
    s = torch.sigmoid(5.0 * z)
    assert torch.allclose(second, 5.0 * s * (1 - s))


def test_smooth_activation_swaps_only_the_engine_copy_and_needs_relu_modules():
    model = HaimMLP(InputShape(1, 4, 2), 6, generator=torch.Generator().manual_seed(0))
    kkt = DeepKKT(model, "all", activation="smooth", relu_alpha=10.0)
    assert sum(isinstance(m, SmoothBackwardReLU) for m in kkt.model.modules()) == 2
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 2          # the caller's θ* is untouched
    x = torch.randn(3, 1, 4, 4)
    assert torch.equal(kkt.logits(x), model(x))                               # same forward

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(16, 2)

        def forward(self, x):
            return F.relu(self.linear(x.flatten(1)))
    with pytest.raises(MethodFailed, match="no nn.ReLU"):
        DeepKKT(Functional(), "all", activation="smooth", relu_alpha=1.0)
    assert smooth_relus(Functional(), 1.0) == 0


def test_lambda_floor_penalty_gradient_and_step():
    mu = torch.tensor([-0.5, 0.1, 0.4, 0.9])
    expected = -2 * FLOOR_WEIGHT * torch.tensor([0.9, 0.3, 0.0, 0.0])       # floor 0.4: only μ below it
    assert torch.allclose(floor_gradient(mu, 0.4), expected)
    recipe = KKTRecipe(dual="floor", lambda_floor=0.4, lambda_optimizer="sgd")
    leaf = mu.clone().requires_grad_(True)
    leaf.grad = torch.zeros(4)
    optimizer = torch.optim.SGD([leaf], lr=0.1)
    alive = torch.ones(4, dtype=torch.bool)
    kept = step_multipliers(recipe, optimizer, leaf, alive, torch.arange(4), 0, 4)
    assert kept.all()                                                         # nobody is removed …
    assert torch.allclose(leaf.detach(), mu - 0.1 * expected)                 # … and λ < 0 is pushed up, not clamped
    fresh = mu.clone().requires_grad_(True)
    fresh.grad = torch.zeros(4)
    removed = step_multipliers(KKTRecipe(), torch.optim.SGD([fresh], lr=0.1), fresh, alive, torch.arange(4), 0, 4)
    assert removed.tolist() == [False, True, True, True]                      # Algorithm 1's removal (default)
    assert float(fresh.detach()[0]) == 0.0                                          # … and the clamp at 0


def test_range_penalty_and_bounds():
    images = torch.tensor([-1.5, -1.0, 0.0, 1.2]).view(1, 1, 2, 2)
    low, high = pixel_bounds("-1,1", (), (), 1)
    assert float(range_penalty(images, low, high)) == pytest.approx(0.25 + 0.04)
    low, high = pixel_bounds("data", (0.5,), (0.25,), 1)
    assert (float(low), float(high)) == (-2.0, 2.0)
    with pytest.raises(UserError, match="range_bounds"):
        from dsvbench.methods.dsvg import DSVgRecipe
        DSVgRecipe(range_bounds="1,-1")


def test_recipe_rejects_momentum_without_plain_steps():
    from dsvbench.methods.dsvg import DSVgRecipe
    with pytest.raises(UserError, match="momentum"):
        DSVgRecipe(momentum=0.9, optimizer="adam")
    with pytest.raises(UserError, match="lambda_momentum"):
        KKTRecipe(lambda_momentum=0.9, lambda_optimizer="adam")
    with pytest.raises(UserError, match="dual"):
        KKTRecipe(dual="clamp")


def test_lambda_scale_mean_is_one_over_the_candidates():
    model = HaimMLP(InputShape(1, 4, 2), 6, generator=torch.Generator().manual_seed(0))
    kkt = DeepKKT(model, "all")
    assert lambda_unit(kkt, torch.randn(8, 1, 4, 4), torch.zeros(8, dtype=torch.long), "mean") == 1 / 8


def _tiny_case(n: int = 6) -> Case:
    generator = torch.Generator().manual_seed(3)
    x = 0.3 * torch.randn(2 * n, 1, 6, 6, generator=generator)
    y = torch.arange(2).repeat_interleave(n)
    return Case("tiny", x, y, x.flip(0), y.flip(0), torch.zeros(1, 1, 6, 6), 2)


def test_engine_with_haims_fields_is_haims_loop():
    """dsvg's builder with HAIM_FIELDS and the separately written Haim et al. loop take the same steps."""
    case = _tiny_case()
    model = HaimMLP(case.shape, 10, init=0.1, generator=torch.Generator().manual_seed(1))
    ours, labels, _ = engine_reconstruct(model, case, 4, {"alpha_x": 0.05}, seed=7, steps=25)
    theirs, their_labels, _ = haim_reference(model, case, 4, seed=7, steps=25, fields={"alpha_x": 0.05})
    assert torch.equal(labels, their_labels)
    moved = (theirs - 0.00174 * torch.randn(theirs.shape, generator=torch.Generator().manual_seed(7))).abs().max()
    assert moved > 1e-3                                                       # the loop did move x
    # the builder returns each class's candidates ordered by λ: match them up, one to one
    distance = torch.cdist(ours.flatten(1), theirs.flatten(1))
    assert sorted(distance.argmin(1).tolist()) == list(range(len(theirs)))
    assert distance.min(1).values.max() < 1e-5


def test_scores_on_known_pairs():
    generator = torch.Generator().manual_seed(0)
    train = torch.rand(5, 1, 8, 8, generator=generator)
    assert torch.allclose(ssim(train, train), torch.ones(5, dtype=torch.float64))
    assert ncc_distance(train, 3 * train + 1).diagonal().abs().max() < 1e-9  # NCC ignores gain and offset
    candidates = torch.cat([train[[2, 0]], torch.rand(3, 1, 8, 8, generator=generator)])
    scores = haim_scores(train - 0.5, candidates - 0.5, torch.full((1, 1, 8, 8), 0.5))
    assert scores["nearest"][[0, 2]].tolist() == [1, 0]
    assert scores["ssim"][[0, 2]].min() > 0.99
    heldout = torch.rand(5, 1, 8, 8, generator=generator)
    assert training_share(train, heldout, train[:3]) == 1.0
    assert training_share(train, heldout, heldout[:3]) == 0.0


def _benchmark_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import reconstruct
    finally:
        sys.path.pop(0)
    return reconstruct


@pytest.mark.parametrize("argv,message", [
    (["--set", "momentum=fast"], "expected float"),
    (["--set", "no_such_field=1"], "dsvg recipe field"),
    (["--variant", "v:keep_per_class=maybe"], "expected bool"),
    (["--case", "mnist-multiclass", "--engine", "haim"], "binary loop"),
    (["--theta", "dsv", "--model", "convnet_dsv", "--per-class", "0", "--case", "cifar10-binary"], "digits and mnist"),
    (["--width", "0"], "--width must be >= 1"),
])
def test_benchmark_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        _benchmark_module().parse(["--data-root", str(tmp_path), "--out", str(tmp_path / "out"), *argv])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_benchmark_smoke_reconstructs_training_digits(tmp_path):
    """benchmarks/reconstruct.py end to end on digits odd/even (offline, ~10 s): the engine's
    candidates find training digits well above both chance references."""
    out = tmp_path / "recon"
    code = _benchmark_module().main(["--case", "digits-binary", "--data-root", str(tmp_path / "unused"), "--out", str(out),
                             "--per-class", "20", "--heldout-per-class", "100", "--width", "100",
                             "--train-steps", "3000", "--steps", "800", "--engine", "dsvg"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    row = summary["rows"][0]
    assert summary["theta"]["train_accuracy"] == 1.0
    assert "reduced" in summary["budget"]
    assert row["training_share"] > row["chance_heldout"] + 0.1 > row["chance_noise"]
    assert row["count_above_0.4"] >= 10
    assert (out / "pairs-dsvg.png").stat().st_size > 1000


@pytest.mark.parametrize("preset", ["seed", "neurips", "recon"])
def test_every_preset_field_builds_a_valid_recipe(preset):
    """A preset's strings go through the run's own recipe building (MethodSpec.make_recipe, as --set)."""
    from dsvbench.plan import preset_overrides
    from dsvbench.methods import METHODS, load_methods
    load_methods()
    for method in ("dsvs", "dsvg"):
        overrides = {field: value for m, field, value in preset_overrides(preset, [method]) if m == method}
        recipe = METHODS.get(method).make_recipe("digits", overrides)
        for field, value in overrides.items():
            assert str(getattr(recipe, field)).lower() == value.lower() or float(getattr(recipe, field)) == float(value)
    if preset == "recon":
        assert (recipe.activation, recipe.dual, recipe.retrain, recipe.momentum) == ("smooth", "floor", "dc", 0.9)
