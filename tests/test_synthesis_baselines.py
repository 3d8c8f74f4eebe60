"""dc, dd and DSA: hand-computed distances, differentiability, Siamese augmentation, determinism."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dsvbench.baselines.dc import (DCRecipe, _class_matching_loss, _matching_loss, build_dc, layer_distance,
                                   matching_distance)
from dsvbench.baselines.dd import DDRecipe, build_dd, dd_defaults, unrolled_loss
from dsvbench.augment import DSA_OPS, DSAParams, dsa_augment, dsa_siamese
from dsvbench.methods import METHODS, MethodFailed, load_methods
from dsvbench.models import create_model
from tests.conftest import make_context, make_tiny_dataset

DATASET = make_tiny_dataset(per_class=12)
DC_FAST = DCRecipe(iterations=2, outer_loop=2, inner_loop=1, batch_real=8)
DD_FAST = DDRecipe(epochs=1, batch_size=18, distill_epochs=1)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- DC distance (Eq. 10)
# conv gradient 2×1×1×2 (two output channels):
#   channel 0: syn (1, 0) vs real (0, 1): cos 0 -> 1;  channel 1: (1, 1) vs (2, 2): cos 1 -> 0
# linear gradient 2×2 (two output units, compared row by row):
#   row 0: (3, 4) vs (4, 3): cos 24/25 -> 0.04;  row 1: (1, 0) vs (-1, 0): cos -1 -> 2
# bias (1-D): ignored, although the two gradients point in opposite directions.
CONV_SYN, CONV_REAL = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]]), torch.tensor([[[[0.0, 1.0]]], [[[2.0, 2.0]]]])
LIN_SYN, LIN_REAL = torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[4.0, 3.0], [-1.0, 0.0]])
BIAS_SYN, BIAS_REAL = torch.tensor([1.0, 2.0]), torch.tensor([-1.0, -2.0])


def test_dc_layer_distance_matches_hand_computation():
    assert layer_distance(CONV_SYN, CONV_REAL).item() == pytest.approx(1.0, abs=1e-5)
    assert layer_distance(LIN_SYN, LIN_REAL).item() == pytest.approx(2.04, abs=1e-5)
    assert layer_distance(BIAS_SYN, BIAS_REAL).item() == 0.0


def test_dc_matching_distance_sums_layers():
    total = matching_distance([CONV_SYN, LIN_SYN, BIAS_SYN], [CONV_REAL, LIN_REAL, BIAS_REAL])
    assert total.item() == pytest.approx(3.04, abs=1e-5)


def test_dc_loops_follow_the_reference_per_ipc():
    assert [DCRecipe().loops(ipc) for ipc in (1, 10, 50)] == [(1, 1), (10, 50), (50, 10)]
    assert DCRecipe(outer_loop=3, inner_loop=7).loops(10) == (3, 7)


@pytest.mark.parametrize("dsa", [False, True])
def test_dc_matching_loss_vanishes_when_synthetic_equals_real(dsa):
    # Identical batches give identical gradients — with DSA only if the augmentation is Siamese.
    net = create_model("convnet_tiny", DATASET.shape, generator(1))
    real = DATASET.train_x[DATASET.train_y == 1][:4]
    loss = _class_matching_loss(net, real, real.clone(), 1, DCRecipe(dsa=dsa), generator(2))
    assert loss.item() == pytest.approx(0.0, abs=1e-3)


def test_dc_matching_loss_has_a_gradient_for_the_images():
    net = create_model("convnet_tiny", DATASET.shape, generator(1))
    syn = torch.randn(2, *DATASET.train_x.shape[1:], generator=generator(3), requires_grad=True)
    loss = _class_matching_loss(net, DATASET.train_x[:8], syn, 0, DCRecipe(), generator(2))
    loss.backward()
    assert loss.item() > 0 and syn.grad.abs().sum().item() > 0


# ---------------------------------------------------------------- DD unroll
def test_dd_unroll_reaches_images_and_step_sizes():
    net = create_model("convnet_tiny", DATASET.shape, generator(1))
    start = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters()}
    groups = torch.randn(2, 3, *DATASET.train_x.shape[1:], generator=generator(2), requires_grad=True)
    raw = torch.full((4,), math.log(math.expm1(0.02)), requires_grad=True)
    loss = unrolled_loss(net, start, groups, torch.arange(3), F.softplus(raw), DATASET.train_x, DATASET.train_y)
    loss.backward()
    assert groups.grad[0].abs().sum() > 0 and groups.grad[1].abs().sum() > 0   # both step groups used
    assert (raw.grad != 0).all()                                                # every learned step size


def test_dd_step_size_gradient_is_minus_the_gradient_inner_product():
    # At step size 0: dL_real(w0 − η g_syn)/dη = −⟨∇L_real(w0), ∇L_syn(w0)⟩ (first order).
    net = nn.Linear(4, 3)
    start = {n: p.detach().clone().requires_grad_(True) for n, p in net.named_parameters()}
    syn, syn_y = torch.randn(1, 3, 4, generator=generator(1)), torch.arange(3)
    real, real_y = torch.randn(6, 4, generator=generator(2)), torch.tensor([0, 1, 2, 0, 1, 2])
    step = torch.zeros(1, requires_grad=True)
    loss = unrolled_loss(net, start, syn, syn_y, step, real, real_y)
    (derivative,) = torch.autograd.grad(loss, step)
    params = list(start.values())
    g_real = torch.autograd.grad(F.cross_entropy(torch.func.functional_call(net, start, (real,)), real_y), params)
    g_syn = torch.autograd.grad(F.cross_entropy(torch.func.functional_call(net, start, (syn[0],)), syn_y), params)
    expected = -sum((a * b).sum() for a, b in zip(g_real, g_syn))
    assert derivative.item() == pytest.approx(expected.item(), rel=1e-5)


def test_dd_cifar10_defaults_to_the_smaller_step_size():
    assert dd_defaults("cifar10") == {"distill_lr": 0.001} and dd_defaults("mnist") == {}


# ---------------------------------------------------------------- builds
@pytest.mark.parametrize("ipc", [1, 10])
def test_builds_give_ipc_images_per_class(ipc):
    for build, recipe in ((build_dc, DC_FAST), (build_dd, DD_FAST)):
        condensed = build(make_context(DATASET, ipc=ipc), recipe)
        assert condensed.images.shape == (3 * ipc, *DATASET.train_x.shape[1:])
        assert torch.bincount(condensed.labels, minlength=3).tolist() == [ipc] * 3


def test_dd_metadata_holds_one_learned_step_size_per_unrolled_step():
    condensed = build_dd(make_context(DATASET, ipc=2), dataclasses.replace(DD_FAST, distill_epochs=3))
    assert len(condensed.metadata["step_sizes"]) == 2 * 3
    assert condensed.metadata["step_sizes"] != pytest.approx([0.02] * 6)   # they were learned


def test_dc_moves_the_images_away_from_their_real_initialization():
    ctx = make_context(DATASET, ipc=1)
    condensed = build_dc(ctx, DC_FAST)
    assert min((DATASET.train_x - image).abs().flatten(1).amax(1).min() for image in condensed.images) > 1e-4


@pytest.mark.parametrize("build, recipe", [(build_dc, DC_FAST), (build_dc, dataclasses.replace(DC_FAST, dsa=True)),
                                           (build_dd, DD_FAST)])
def test_builds_are_deterministic_per_seed(build, recipe):
    first, again = build(make_context(DATASET, seed=5), recipe), build(make_context(DATASET, seed=5), recipe)
    other = build(make_context(DATASET, seed=6), recipe)
    assert torch.equal(first.images, again.images)
    assert not torch.equal(first.images, other.images)


@pytest.mark.parametrize("build, recipe", [(build_dc, DC_FAST), (build_dd, DD_FAST)])
def test_nan_in_the_data_stops_the_build_with_method_failed(build, recipe):
    broken = make_tiny_dataset(per_class=12)
    broken.train_x[:] = float("nan")
    with pytest.raises(MethodFailed):
        build(make_context(broken), recipe)


def test_progress_reports_the_loss():
    reports = []
    ctx = make_context(DATASET)
    ctx.progress = lambda **metrics: reports.append(metrics)
    build_dc(ctx, DC_FAST)
    # reported at the logging interval (a host sync) and at the end, not every iteration
    assert [r["step"] for r in reports] == [2] and all(r["total"] == 2 and r["loss"] > 0 for r in reports)


@pytest.mark.parametrize("model", ["convnet_tiny", "convnet_bn", "mlp"])
def test_dc_all_class_gradients_in_one_pass_equal_per_class_autograd(model):
    # The batched matching loss (one forward/backward, per-class weight gradients as grouped
    # products) must give the loss and image gradient of ten separate per-class autograd calls.
    net = create_model(model, DATASET.shape, generator(3)).eval()
    side, channels = DATASET.shape.size, DATASET.shape.channels
    reals = [torch.randn(3 + c, channels, side, side, generator=generator(c)) for c in range(DATASET.num_classes)]
    syn = torch.randn(DATASET.num_classes, channels, side, side, generator=generator(9), requires_grad=True)
    per_class = sum(_class_matching_loss(net, reals[c], syn[c:c + 1], c, DCRecipe(), generator())
                    for c in range(DATASET.num_classes))
    expected, = torch.autograd.grad(per_class, syn)
    batched = _matching_loss(net, list(reals), syn, 1, DCRecipe(), generator())
    got, = torch.autograd.grad(batched, syn)
    assert batched.item() == pytest.approx(per_class.item(), rel=1e-5)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- DSA
BATCH = torch.randn(5, 3, 8, 8, generator=generator(7))


@pytest.mark.parametrize("op", list(DSA_OPS))
def test_dsa_op_keeps_shape_and_passes_gradients(op):
    x = BATCH.clone().requires_grad_(True)
    out = dsa_augment(x, generator(1), strategy=op)
    out.square().sum().backward()
    assert out.shape == x.shape and x.grad.abs().sum() > 0


@pytest.mark.parametrize("op", list(DSA_OPS))
def test_dsa_siamese_applies_the_same_parameters_to_both_batches(op):
    real, syn = BATCH, BATCH[2:3]
    real_out, syn_out = dsa_siamese([real, syn], generator(4), strategy=op)
    assert torch.allclose(real_out[2:3], syn_out, atol=1e-6)


def test_dsa_siamese_leaves_the_generator_as_one_call_would():
    first, second = generator(4), generator(4)
    dsa_siamese([BATCH, BATCH[:1]], first)
    dsa_augment(BATCH[:2], second, siamese=True)
    assert torch.equal(first.get_state(), second.get_state())


@pytest.mark.parametrize("op", list(DSA_OPS))
def test_dsa_goes_through_the_common_draw_and_apply(op):
    from dsvbench.augment import apply, draw, dsa_apply, dsa_draw
    assert torch.equal(apply(BATCH, "dsa", draw("dsa", BATCH.shape, generator(5))), dsa_augment(BATCH, generator(5)))
    drawn = dsa_draw(len(BATCH), BATCH.shape, generator(6), op)
    assert torch.equal(dsa_apply(BATCH, drawn), dsa_augment(BATCH, generator(6), strategy=op))
    one = dsa_draw(1, BATCH.shape, generator(7), op)          # the Siamese draw, broadcast
    assert all(torch.equal(dsa_apply(b, one), s)
               for b, s in zip((BATCH, BATCH[:2]), dsa_siamese([BATCH, BATCH[:2]], generator(7), strategy=op)))


def test_dsa_without_siamese_draws_per_image_parameters():
    x = BATCH[:1].expand(6, -1, -1, -1)
    out = dsa_augment(x, generator(2), strategy="rotate")
    assert not torch.allclose(out[0], out[1])


def test_dsa_is_deterministic_per_generator_state():
    assert torch.equal(dsa_augment(BATCH, generator(9)), dsa_augment(BATCH, generator(9)))


def test_dsa_neutral_parameters_leave_images_unchanged():
    neutral = DSAParams(flip=0.0, scale=1.0, rotate=0.0, crop_pad=0.0, cutout=0.0)
    for op in ("flip", "scale", "rotate", "crop", "cutout"):
        assert torch.allclose(dsa_augment(BATCH, generator(3), neutral, op), BATCH, atol=1e-5), op
    assert torch.equal(dsa_augment(BATCH, generator(3), DSAParams(flip=1.0), "flip"), BATCH.flip(3))


def test_dsa_crop_is_an_integer_shift_with_zero_fill():
    x = torch.arange(16.0).view(1, 1, 4, 4) + 1
    out = dsa_augment(x, generator(0), DSAParams(crop_pad=0.25), "crop")[0, 0]   # shifts in [-1, 1]
    padded = F.pad(x[0, 0], (1, 1, 1, 1))
    shifts = [padded[1 + dy:5 + dy, 1 + dx:5 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    assert any(torch.equal(out, shifted) for shifted in shifts)


def test_dsa_cutout_zeroes_a_half_size_square():
    out = dsa_augment(torch.ones(3, 1, 8, 8), generator(0), strategy="cutout")
    zeros = (out == 0).sum(dim=(1, 2, 3))
    assert ((zeros > 0) & (zeros <= 16)).all()   # a 4×4 square, clipped at the border


def test_dc_and_dd_run_with_batchnorm_networks():
    # DC fixes BatchNorm statistics from real images first (reference code); DD unrolls through BN.
    for build, recipe in ((build_dc, DC_FAST), (build_dd, DD_FAST)):
        condensed = build(make_context(DATASET, model_name="convnet_bn"), recipe)
        assert torch.isfinite(condensed.images).all()


def test_dc_with_dsa_is_evaluated_with_dsa_for_1000_epochs():
    from dsvbench.config import BenchConfig
    from dsvbench.plan import column_eval_recipe
    load_methods()
    spec = METHODS.get("dc")
    plain = column_eval_recipe(BenchConfig(methods=("dc",)), spec, "cifar10")
    dsa = column_eval_recipe(BenchConfig(methods=("dc",), method_overrides=(("dc", "dsa", "true"),)),
                             spec, "cifar10")
    forced = column_eval_recipe(BenchConfig(methods=("dc",), method_overrides=(("dc", "dsa", "true"),),
                                            eval_epochs=7), spec, "cifar10")
    assert (plain.augment, plain.epochs) == ("none", 300)
    assert (dsa.augment, dsa.epochs) == ("dsa", 1000)
    assert (forced.augment, forced.epochs) == ("dsa", 7)


@pytest.mark.parametrize("model", ["convnet_tiny", "mlp"])
def test_dc_seeds_stacked_equal_seeds_one_by_one(model):
    # The accelerator path (vmap over seeds of the torch.func matching step) against build_dc.
    from dsvbench.baselines.dc import build_dc_stacked
    recipe = DCRecipe(iterations=3, batch_real=8)
    alone = [build_dc(make_context(DATASET, seed=s, model_name=model), recipe) for s in (0, 1)]
    stacked = build_dc_stacked([make_context(DATASET, seed=s, model_name=model) for s in (0, 1)], recipe)
    for one, other in zip(alone, stacked):
        torch.testing.assert_close(one.images, other.images, rtol=1e-4, atol=1e-4)
        assert one.metadata["matching_loss_last"] == pytest.approx(other.metadata["matching_loss_last"], rel=1e-4)


def test_dd_seeds_stacked_equal_seeds_one_by_one():
    from dsvbench.baselines.dd import build_dd_stacked
    recipe = DDRecipe(epochs=2, batch_size=16, distill_epochs=2)
    alone = [build_dd(make_context(DATASET, seed=s), recipe) for s in (0, 1)]
    stacked = build_dd_stacked([make_context(DATASET, seed=s) for s in (0, 1)], recipe)
    for one, other in zip(alone, stacked):
        torch.testing.assert_close(one.images, other.images, rtol=1e-4, atol=1e-5)
        assert one.metadata["step_sizes"] == pytest.approx(other.metadata["step_sizes"], rel=1e-5)


def test_dc_real_gradients_in_class_passes_equal_one_pass_at_mnist_size(monkeypatch):
    """Memory: MNIST's ten 256-image real batches are not one pass (≈10 GB at width 128), but passes of
    whole classes under a byte budget; at 28 × 28, one thread, the numbers are the one-pass numbers bit
    for bit (with several threads the weight-gradient reductions split by batch size: last bits move)."""
    import dsvbench.baselines.dc as dc
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _check_class_passes(dc, monkeypatch)
    finally:
        torch.set_num_threads(threads)


def _check_class_passes(dc, monkeypatch):
    from dsvbench.models import InputShape
    generator = torch.Generator().manual_seed(0)
    net = create_model("convnet", InputShape(1, 28, 10), generator)
    real = torch.randn(10, 32, 1, 28, 28, generator=generator)
    mask = torch.ones(10, 32)
    mask[3, 27:] = 0   # a short class, padded
    labels = torch.arange(10)
    default = dc.REAL_PASS_BYTES
    one_pass = dc._real_class_grads(net, real, mask, labels)      # 10 × 32 images fit the default budget
    monkeypatch.setattr(dc, "REAL_PASS_BYTES", 3 * 32 * dc.activation_bytes(net, real[0, :1]))
    passes = []
    original = dc.class_weight_grads
    monkeypatch.setattr(dc, "class_weight_grads", lambda *a, **k: passes.append(len(a[3])) or original(*a, **k))
    in_passes = dc._real_class_grads(net, real, mask, labels)
    assert passes == [3, 3, 3, 1]
    assert all(torch.equal(a, b) for a, b in zip(one_pass, in_passes))
    assert all(g.grad_fn is None and not g.requires_grad for g in in_passes)   # no pass's graph is held
    assert default // (dc.activation_bytes(net, real[0, :1]) * 256) < 10   # MNIST's 256 per class: split
    # a class per pass (MNIST's case): a plain gradient per class, the same numbers again
    monkeypatch.setattr(dc, "REAL_PASS_BYTES", 32 * dc.activation_bytes(net, real[0, :1]))
    singles = dc._real_class_grads(net, real, mask, labels)
    assert passes == [3, 3, 3, 1]   # the per-group pass was not used
    assert all(torch.equal(a, b) for a, b in zip(one_pass, singles))
    assert all(g.grad_fn is None and not g.requires_grad for g in singles)


def test_a_plain_class_gradient_equals_the_per_group_one_with_two_threads():
    import dsvbench.baselines.dc as dc
    from dsvbench.models import InputShape
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        generator = torch.Generator().manual_seed(1)
        net = create_model("convnet", InputShape(1, 28, 10), generator)
        real = torch.randn(1, 64, 1, 28, 28, generator=generator)
        grouped = dc.class_weight_grads(net, real, torch.ones(1, 64), torch.tensor([7]))
        plain = dc.single_class_weight_grads(net, real[0], torch.tensor(7))
    finally:
        torch.set_num_threads(threads)
    assert len(plain) == len(grouped) == 4 and all(torch.equal(a, b) for a, b in zip(grouped, plain))


def test_dc_on_digits_stays_in_one_pass():
    import dsvbench.baselines.dc as dc
    from dsvbench.models import InputShape
    net = create_model("convnet", InputShape(1, 8, 10), torch.Generator().manual_seed(0))
    assert dc.REAL_PASS_BYTES // (dc.activation_bytes(net, torch.zeros(1, 1, 8, 8)) * 256) >= 10


# ----- the newer baselines: dsa (its own column), dm -------------------------------------------
def test_dsa_column_builds_what_dc_with_dsa_builds():
    """The dsa column is DC's code with DSA on: same seed, same recipe values -> the same set."""
    from dsvbench.methods import METHODS
    from dsvbench.testing import tiny_context, tiny_dataset
    dsa, dc = METHODS.get("dsa"), METHODS.get("dc")
    data = tiny_dataset()
    fields = dict(iterations=2, outer_loop=2, inner_loop=1, batch_real=8)
    a = dsa.build(tiny_context(data, "dsa"), dsa.make_recipe("digits", {k: str(v) for k, v in fields.items()}))
    b = dc.build(tiny_context(data, "dc"), dc.make_recipe("digits", {**{k: str(v) for k, v in fields.items()},
                                                              "dsa": "true", "dsa_strategy": "color_crop_cutout_scale_rotate"}))
    assert torch.equal(a.images, b.images)
    recipe = dsa.make_recipe("digits")
    assert recipe.dsa and "flip" not in recipe.dsa_strategy and recipe.retrain == "dsa"
    assert "flip" in dsa.make_recipe("cifar10").dsa_strategy


def test_dm_loss_is_the_squared_distance_of_class_mean_embeddings():
    """By hand: an embedding that is the identity on 2-pixel images; class 0 real mean (1, 1), syn (0, 3)
    -> 1 + 4; class 1 real mean (0, 0), syn (0, 0) -> 0."""
    from dsvbench.baselines.dm import mean_embedding_loss

    class Identity(nn.Module):
        def features(self, x):
            return x.flatten(1)

    reals = [torch.tensor([[0.0, 2.0], [2.0, 0.0]]).view(2, 1, 1, 2), torch.zeros(3, 1, 1, 2)]
    syn = torch.tensor([[[0.0, 3.0]], [[0.0, 0.0]]]).view(2, 1, 1, 1, 2)
    assert mean_embedding_loss(Identity(), reals, syn).item() == pytest.approx(5.0)


def test_dm_one_pass_for_all_classes_equals_class_by_class():
    """All classes through the network at once (instance norm: per image) = the reference's loop over classes."""
    from dsvbench.baselines.dm import mean_embedding_loss
    from dsvbench.models import InputShape, create_model
    net = create_model("convnet_tiny", InputShape(1, 8, 3), torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    reals = [torch.randn(n, 1, 8, 8, generator=g) for n in (5, 7, 6)]
    syn = torch.randn(3, 2, 1, 8, 8, generator=g)
    per_class = sum(mean_embedding_loss(net, [r], s.unsqueeze(0)) for r, s in zip(reals, syn))
    assert mean_embedding_loss(net, reals, syn).item() == pytest.approx(per_class.item(), rel=1e-5)


def test_dm_updates_iterations_plus_one_times_and_moves_the_images():
    from dsvbench.methods import METHODS
    from dsvbench.testing import tiny_context, tiny_dataset
    spec, data = METHODS.get("dm"), tiny_dataset()
    start = spec.build(tiny_context(data, "dm"), spec.make_recipe("digits", {"iterations": "0", "batch_real": "8"}))
    moved = spec.build(tiny_context(data, "dm"), spec.make_recipe("digits", {"iterations": "3", "batch_real": "8"}))
    assert start.metadata["updates"] == 1 and moved.metadata["updates"] == 4
    assert not torch.equal(start.images, moved.images)


def test_methods_all_is_table_1_and_new_baselines_run_by_name():
    from dsvbench.options import expand_methods
    table1 = ["random", "herding", "forgetting", "dsvs", "dd", "dc", "dsvg"]
    assert expand_methods(["all"]) == table1
    assert expand_methods(["all", "dm", "kcenter", "dc"]) == table1 + ["dm", "kcenter"]


def test_dm_seeds_in_one_vmapped_pass_follow_their_single_seed_runs():
    from dsvbench.baselines.dm import build_dm, build_dm_many
    from dsvbench.methods import METHODS
    from dsvbench.testing import tiny_context, tiny_dataset
    data = tiny_dataset()
    recipe = METHODS.get("dm").make_recipe("digits", {"iterations": "5", "batch_real": "8"})
    together = build_dm_many([tiny_context(data, "dm", seed=s) for s in (0, 1, 2)], recipe)
    for seed, batched in zip((0, 1, 2), together):
        alone = build_dm(tiny_context(data, "dm", seed=seed), recipe)
        assert torch.allclose(batched.images, alone.images, atol=1e-5)
    assert not torch.allclose(together[0].images, together[1].images)


def test_dm_real_embeddings_in_class_passes_are_the_same_bits(monkeypatch):
    """Paper scale: DM's no-grad real embedding goes a class (or a few) per pass; the loss is unchanged
    bit for bit, and a batch-norm network keeps its one pass (its statistics span the batch)."""
    import dsvbench.baselines.dc as dc
    import dsvbench.baselines.dm as dm
    from dsvbench.models import InputShape, activation_bytes
    generator = torch.Generator().manual_seed(2)
    net = create_model("convnet", InputShape(1, 28, 10), generator)
    reals = [torch.randn(16, 1, 28, 28, generator=generator) for _ in range(4)]
    syn = torch.randn(4, 1, 1, 28, 28, generator=generator)
    one_pass = dm.mean_embedding_loss(net, reals, syn)
    monkeypatch.setattr(dc, "REAL_PASS_BYTES", 2 * 16 * activation_bytes(net, reals[0][:1]))
    assert [len(p) for p in dm._real_passes(net, reals)] == [2, 2]
    assert torch.equal(dm.mean_embedding_loss(net, reals, syn), one_pass)
    bn = create_model("convnet_bn", InputShape(1, 28, 10), generator)
    assert [len(p) for p in dm._real_passes(bn, reals)] == [4]
