"""DeepKKT core (Eq. 7-8) and the dsvs / dsvg methods on tiny models."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from dsvbench.methods import METHODS, MethodFailed, load_methods
from dsvbench.methods.deepkkt import DeepKKT, primal_loss, select_params
from dsvbench.methods.kkt_loop import remove_negative
from dsvbench.models import InputShape, create_model
from tests.conftest import make_context, make_tiny_dataset

load_methods()
SHAPE = InputShape(1, 8, 3)


def tiny_model(dtype=torch.float64, steps: int = 0) -> torch.nn.Module:
    """convnet_tiny, optionally fitted (Adam, full batch) to the tiny separable dataset."""
    model = create_model("convnet_tiny", SHAPE, torch.Generator().manual_seed(1)).to(dtype)
    if steps:
        dataset = make_tiny_dataset()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(steps):
            optimizer.zero_grad()
            F.cross_entropy(model(dataset.train_x.to(dtype)), dataset.train_y).backward()
            optimizer.step()
    return model.eval()


def candidates(n: int = 6):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 8, 8, generator=generator, dtype=torch.float64)
    return x, torch.arange(n) % 3, 3 * torch.rand(n, generator=generator, dtype=torch.float64)


def brute_force_total(kkt: DeepKKT, x: torch.Tensor, y: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """L_primal + β·D(θ*, −Σ λ_i g_i) with every g_i computed one example at a time."""
    total_g = None
    for i in range(len(x)):
        leaves = {n: (t.clone().requires_grad_(True) if n in kkt.names else t) for n, t in kkt.theta.items()}
        loss = F.cross_entropy(functional_call(kkt.model, leaves, (x[i:i + 1],)), y[i:i + 1])
        g = torch.autograd.grad(loss, [leaves[n] for n in kkt.names], create_graph=True)
        weighted = [lam[i] * gi for gi in g]
        total_g = weighted if total_g is None else [a + b for a, b in zip(total_g, weighted)]
    return primal_loss(kkt.logits(x), y) + kkt.beta * kkt.stat_distance(total_g)


@pytest.mark.parametrize("distance,sqrt,normalize", [("l1", "signed", "global"), ("sq_l2", "none", "tensor"),
                                                     ("l1", "none", "none")])
@pytest.mark.parametrize("chunk", [100, 4])
def test_stationarity_loss_and_gradients_match_per_example_computation(distance, sqrt, normalize, chunk):
    kkt = DeepKKT(tiny_model(), "all", distance, sqrt, normalize, beta=0.7, chunk=chunk)
    x, y, lam = candidates()
    xr, lr = x.clone().requires_grad_(True), lam.clone().requires_grad_(True)
    expected = brute_force_total(kkt, xr, y, lr)
    grad_x, grad_lam = torch.autograd.grad(2.0 * expected, [xr, lr])
    values = kkt.kkt(x, y, lam, weight=2.0)
    assert float(values.primal + 0.7 * values.stat) == pytest.approx(float(expected.detach()), rel=1e-10)
    torch.testing.assert_close(values.grad_inputs, grad_x, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(values.grad_lam, grad_lam, rtol=1e-8, atol=1e-12)


def test_primal_loss_is_zero_for_correct_and_ce_for_wrong():
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 2])
    assert float(primal_loss(logits[:2], labels[:2])) == 0.0
    wrong = F.cross_entropy(logits[2:], labels[2:])
    assert float(primal_loss(logits, labels)) == pytest.approx(float(wrong) / 3)


def test_negative_lambda_removes_candidates_but_keeps_ipc_per_class():
    lam = torch.tensor([0.5, -0.1, -0.2, -0.3, 0.2, 0.1])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    alive = remove_negative(lam, torch.ones(6, dtype=torch.bool), labels, keep_per_class=0)
    assert alive.tolist() == [True, False, False, False, True, True]
    kept = remove_negative(lam, torch.ones(6, dtype=torch.bool), labels, keep_per_class=1)
    assert kept.tolist() == [True, False, True, False, True, True]   # class 1 keeps its largest λ


def test_sensitive_params_drop_exactly_the_scale_invariant_tensors():
    model = tiny_model()
    theta = {n: p.detach() for n, p in model.named_parameters()}
    names = select_params(model, theta, "sensitive")
    dropped = [n for n in theta if n not in names]
    assert dropped == ["body.0.weight", "body.0.bias", "body.4.weight", "body.4.bias"]
    x, y, lam = candidates()
    grads = DeepKKT(model, "all").total_grad(x, y, lam, dropped)
    for name, g in zip(dropped, grads):  # Euler: ⟨θ_l, ∇θ_l L⟩ = 0 (up to the norm eps)
        assert abs(float((theta[name] * g).sum())) < 1e-4 * float(theta[name].norm() * g.norm()) + 1e-12
    assert select_params(model, theta, "classifier") == ["classifier.weight", "classifier.bias"]


def test_fitted_uniform_lambda_beats_its_neighbours():
    dataset = make_tiny_dataset()
    x, y = dataset.train_x.double(), dataset.train_y
    kkt = DeepKKT(tiny_model(steps=30), "classifier", "l1", "signed", "global")
    scale = kkt.fit_uniform_scale(x, y)
    unit = kkt.total_grad(x, y, torch.ones(len(y), dtype=torch.float64))
    stat = [float(kkt.stat_distance([c * scale * g for g in unit])) for c in (0.9, 1.0, 1.1)]
    assert stat[1] <= min(stat[0], stat[2]) and stat[1] < 1.0   # better than λ = 0


# ----- the two methods ------------------------------------------------------------------------
TRAINED = tiny_model(torch.float32, steps=30)


def trained_context(method: str, data: bool = True, seed: int = 0, ipc: int = 1):
    ctx = make_context(make_tiny_dataset(), method, ipc=ipc, seed=seed, data=data)
    return dataclasses.replace(ctx, _pretrained=TRAINED)


def build(method: str, data: bool = True, seed: int = 0, ipc: int = 1, **fields):
    spec = METHODS.get(method)
    recipe = dataclasses.replace(spec.make_recipe("tiny"), **{**spec.smoke, **fields})
    return spec.build(trained_context(method, data, seed, ipc), recipe)


def test_registrations_declare_the_paper_columns():
    dsvs, dsvg = METHODS.get("dsvs"), METHODS.get("dsvg")
    assert (dsvs.needs, dsvs.group, dsvs.order, dsvs.table_name, dsvs.eval_recipe) == \
        ("data+model", "selection", 3, "DSVs", "dsv")
    assert (dsvg.needs, dsvg.group, dsvg.order, dsvg.table_name, dsvg.eval_recipe) == \
        ("model", "synthesis", 2, "DSVg", "dsv")


def test_dsvg_is_data_free_and_returns_ipc_images_per_class():
    condensed = build("dsvg", data=False, ipc=2)   # touching the data would raise AccessDenied
    assert condensed.images.shape == (6, 1, 8, 8)
    assert sorted(condensed.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert (condensed.weights >= 0).all()
    meta = condensed.metadata
    assert {"residual_l1", "entropy", "correct", "alive", "history", "selected_correct"} <= set(meta)
    assert len(meta["history"]) >= 2


def test_dsvs_selects_pool_images_with_top_lambda():
    dataset = make_tiny_dataset()
    condensed = build("dsvs", pool_per_class=5, steps=3)
    indices = condensed.metadata["indices"]
    torch.testing.assert_close(condensed.images, dataset.train_x[indices])
    assert condensed.labels.tolist() == dataset.train_y[indices].tolist() == [0, 1, 2]
    assert len(condensed.metadata["class_lambda_sums"]) == 3


@pytest.mark.parametrize("method", ["dsvs", "dsvg"])
def test_same_seed_same_set_other_seed_other_set(method):
    first, again, other = build(method, seed=3), build(method, seed=3), build(method, seed=4)
    assert torch.equal(first.images, again.images)
    assert not torch.equal(first.images, other.images)


def test_nan_in_the_model_fails_the_job_with_method_failed():
    ctx = make_context(make_tiny_dataset(), "dsvg", data=False)
    with torch.no_grad():
        ctx.pretrained.classifier.weight[0, 0] = float("nan")
    spec = METHODS.get("dsvg")
    with pytest.raises(MethodFailed, match="NaN|non-finite|zero"):
        spec.build(ctx, dataclasses.replace(spec.make_recipe("tiny"), **spec.smoke))


def test_dsvs_caches_the_predictions_of_theta_star_for_every_seed(tmp_path):
    spec = METHODS.get("dsvs")
    recipe = dataclasses.replace(spec.make_recipe("tiny"), pool_per_class=5, steps=2)
    first = spec.build(dataclasses.replace(trained_context("dsvs"), cache_dir=tmp_path), recipe)
    assert (tmp_path / "dsvs_predictions.pt").exists()
    again = spec.build(dataclasses.replace(trained_context("dsvs"), cache_dir=tmp_path), recipe)
    assert torch.equal(first.images, again.images)
    state = torch.load(tmp_path / "dsvs_predictions.pt", weights_only=True)
    state["value"] = (state["labels"] + 1) % 3          # θ* now "misclassifies" everything
    torch.save(state, tmp_path / "dsvs_predictions.pt")
    with pytest.raises(MethodFailed, match="eligible"):
        spec.build(dataclasses.replace(trained_context("dsvs"), cache_dir=tmp_path), recipe)


@pytest.mark.parametrize("input_grad", [True, False])
def test_closed_form_classifier_path_equals_the_double_backward_per_group(input_grad):
    # The analytic classifier gradients and grouped problems (one per seed) give what the autograd
    # path gives for each group on its own.
    x, y, lam = candidates(8)
    groups = torch.tensor([0, 0, 1, 1, 0, 1, 1, 0])
    fast = DeepKKT(tiny_model(steps=10), "classifier", beta=0.7)
    slow = DeepKKT(tiny_model(steps=10), "classifier", beta=0.7, analytic=False)
    assert fast.analytic and not slow.analytic
    got = fast.kkt(x, y, lam, weight=2.0, input_grad=input_grad, groups=groups, n_groups=2)
    for g in range(2):
        members = groups == g
        want = slow.kkt(x[members], y[members], lam[members], weight=2.0, input_grad=input_grad)
        torch.testing.assert_close(got.stat[g:g + 1], want.stat, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got.primal[g:g + 1], want.primal, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got.grad_lam[members], want.grad_lam, rtol=1e-8, atol=1e-12)
        if input_grad:
            torch.testing.assert_close(got.grad_inputs[members], want.grad_inputs, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("method", ["dsvs", "dsvg"])
def test_seeds_built_together_equal_seeds_built_alone(method):
    spec = METHODS.get(method)
    recipe = dataclasses.replace(spec.make_recipe("tiny"), **{**spec.smoke, "steps": 6, "rescale_every": 2})
    alone = [spec.build(trained_context(method, seed=s), recipe) for s in (3, 4)]
    together = spec.build_all([trained_context(method, seed=s) for s in (3, 4)], recipe)
    for one, other in zip(alone, together):
        torch.testing.assert_close(one.images, other.images, rtol=1e-4, atol=1e-5)
        assert one.labels.tolist() == other.labels.tolist()
        assert one.metadata["alive"] == other.metadata["alive"]


def norm_free_model(dtype=torch.float64) -> torch.nn.Module:
    from dsvbench.models import ConvNet
    model = ConvNet(SHAPE, width=6, norm="none", pooling="maxpool").to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=dtype) * 0.3)
    return model.eval()


@pytest.mark.parametrize("objective", ["loss", "margin"])
@pytest.mark.parametrize("normalize", ["global", "mean"])
def test_all_parameters_of_every_group_in_one_pass_equal_per_group_autograd(objective, normalize):
    # Stationarity over all of a norm-free network's parameters, several seeds' candidates at once
    # (dsvbench.pergroup) against the double backward of each group alone.
    x, y, lam = candidates(8)
    groups = torch.tensor([1, 0, 0, 1, 1, 0, 1, 0])
    fast = DeepKKT(norm_free_model(), "all", normalize=normalize, beta=0.7, objective=objective)
    slow = DeepKKT(norm_free_model(), "all", normalize=normalize, beta=0.7, objective=objective)
    slow.grouped = False
    assert fast.grouped
    got = fast.kkt(x, y, lam, weight=2.0, groups=groups, n_groups=2)
    for g in range(2):
        members = groups == g
        want = slow.kkt(x[members], y[members], lam[members], weight=2.0)
        torch.testing.assert_close(got.stat[g:g + 1], want.stat, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got.grad_lam[members], want.grad_lam, rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(got.grad_inputs[members], want.grad_inputs, rtol=1e-8, atol=1e-12)


def test_margin_objective_in_closed_form_equals_autograd():
    x, y, lam = candidates(6)
    fast = DeepKKT(tiny_model(steps=10), "classifier", objective="margin")
    slow = DeepKKT(tiny_model(steps=10), "classifier", objective="margin", analytic=False)
    got, want = fast.kkt(x, y, lam), slow.kkt(x, y, lam)
    torch.testing.assert_close(got.stat, want.stat, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got.grad_inputs, want.grad_inputs, rtol=1e-8, atol=1e-12)
    # the margin's gradient is not the loss's
    assert not torch.allclose(got.grad_lam, DeepKKT(tiny_model(steps=10), "classifier").kkt(x, y, lam).grad_lam)


def test_theta_polish_fields_reach_the_pretraining_recipe_of_the_methods_own_theta():
    from dsvbench.config import PretrainRecipe
    from dsvbench.methods.kkt_recipe import KKTRecipe
    assert KKTRecipe(theta_model="convnet_dsv").pretrained_spec() == ("convnet_dsv", {"weight_decay": 5e-3})
    model, overrides = KKTRecipe(theta_model="convnet_dsv", theta_epochs=100, theta_polish="all",
                                 theta_polish_steps=1500).pretrained_spec()
    recipe = PretrainRecipe.for_dataset("digits", **overrides)
    assert model == "convnet_dsv" and (recipe.polish_params, recipe.polish_steps, recipe.epochs) == ("all", 1500, 100)
