"""mtt: expert trajectories (trained once, cached per expert, checked, resumable), the unrolled student, the learned rate."""
import dataclasses

import pytest
import torch
from torch.func import functional_call

from dsvbench.baselines import mtt
from dsvbench.methods import METHODS
from dsvbench.models import create_model
from dsvbench.testing import tiny_context, tiny_dataset

SMALL = dict(iterations=3, syn_steps=2, expert_epochs=1, max_start_epoch=2, num_experts=3, lr_img=10.0)


def recipe(**fields):
    return dataclasses.replace(METHODS.get("mtt").make_recipe("digits"), **{**SMALL, **fields})


def context(cache=None, seed=0):
    return dataclasses.replace(tiny_context(tiny_dataset(), "mtt", seed=seed), cache_dir=cache)


def test_flat_parameters_drive_the_network_like_its_own_parameters():
    model = create_model("convnet_tiny", tiny_dataset().shape, torch.Generator().manual_seed(0))
    shapes = {n: p.shape for n, p in model.named_parameters()}
    x = torch.randn(4, 1, 8, 8)
    out = functional_call(model, mtt.unflatten(mtt.flat_parameters(model), shapes), (x,))
    assert torch.equal(out, model(x))


def test_experts_are_trained_once_kept_per_expert_and_resumed(tmp_path, monkeypatch):
    trained = []
    original = mtt.train_expert
    monkeypatch.setattr(mtt, "train_expert", lambda ctx, r, i, key: trained.append(i) or original(ctx, r, i, key))
    first = mtt.experts(context(tmp_path), recipe())
    assert trained == [0, 1, 2] and first[0].shape[0] == recipe().expert_epochs_kept + 1
    folder = next(tmp_path.glob("mtt-experts-*"))
    (folder / "expert-1.pt").unlink()                       # an interrupted run: the rest is kept
    (folder / "expert-2.pt").write_bytes(b"garbage")        # a damaged file: said and trained again
    again = mtt.experts(context(tmp_path, seed=5), recipe())   # another seed: the same experts
    assert trained == [0, 1, 2, 1, 2]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert len(list(tmp_path.glob("mtt-experts-*"))) == 1
    mtt.experts(context(tmp_path), recipe(lr_teacher=0.02))  # another expert recipe: other experts
    assert len(list(tmp_path.glob("mtt-experts-*"))) == 2


def test_the_set_carries_its_learned_rate_and_is_retrained_with_it(tmp_path):
    condensed = METHODS.get("mtt").build(context(tmp_path), recipe(lr_lr=1e-7))
    assert condensed.lr is not None and condensed.lr > 0 and condensed.lr != 0.01   # α moved
    assert condensed.metadata["learned_lr"] == condensed.lr
    assert recipe().retrain == "mtt"


def test_a_learned_rate_that_turns_negative_fails_the_build(tmp_path):
    with pytest.raises(Exception, match="learned learning rate|α"):
        METHODS.get("mtt").build(context(tmp_path), recipe(lr_lr=10.0, iterations=0))


def test_seeds_in_one_vmapped_pass_follow_their_single_seed_runs(tmp_path):
    together = mtt.build_mtt_many([context(tmp_path, seed=s) for s in (0, 1)], recipe(lr_lr=1e-7))
    for seed, batched in zip((0, 1), together):
        alone = mtt.build_mtt(context(tmp_path, seed=seed), recipe(lr_lr=1e-7))
        assert torch.allclose(batched.images, alone.images, atol=1e-4) and batched.lr == pytest.approx(alone.lr, rel=1e-4)


def test_expert_training_reports_progress_after_every_epoch(tmp_path):
    """An MNIST expert epoch takes minutes on a CPU: progress comes per epoch, trained or read from the cache."""
    seen = []
    ctx = dataclasses.replace(context(tmp_path), progress=lambda **m: seen.append((m["step"], m["total"], m["phase"])))
    r = recipe(num_experts=2, max_start_epoch=2, expert_epochs=1)          # 2 epochs kept per expert
    mtt.experts(ctx, r)
    assert seen == [(1, 4, "expert epochs"), (2, 4, "expert epochs"), (2, 4, "expert epochs"),
                    (3, 4, "expert epochs"), (4, 4, "expert epochs"), (4, 4, "expert epochs")]
    seen.clear()
    mtt.experts(ctx, r)                                                    # cached: one report per expert
    assert seen == [(2, 4, "expert epochs"), (4, 4, "expert epochs")]
