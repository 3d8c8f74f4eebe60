"""herding, forgetting and k-center: hand-computed selections, determinism, IPC 1/10/50."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dsvbench.baselines.forgetting import build_forgetting, forgetting_counts, ForgettingRecipe
from dsvbench.baselines import herding as herding_module
from dsvbench.baselines.herding import HerdingRecipe, build_herding, herding_order, training_features
from dsvbench.baselines.kcenter import KCenterRecipe, build_kcenter, kcenter_order
from dsvbench.methods.base import embed
from dsvbench.config import PretrainRecipe
from dsvbench.data import ImageDataset
from dsvbench.methods import METHODS, BuildContext, MethodFailed, load_methods
from dsvbench.models import InputShape, create_model
from dsvbench.pretrain import load_or_pretrain
from dsvbench.registry import UserError

# Class mean (0, 0).  Step 0: target (0,0), distances 2, 1, 3, √10 -> pick 1.
# Step 1: target 2μ − p1 = (1,0): p0 1, p2 √10, p3 √13 -> pick 0.
# Step 2: target 3μ − (p1+p0) = (−1,0): p2 √10, p3 3 -> pick 3.  Step 3: 2.
# (argmax would pick 3 first: the farthest point from the mean.)
POINTS = torch.tensor([[2.0, 0.0], [-1.0, 0.0], [0.0, 3.0], [-1.0, -3.0]])
HERDING_ORDER = [1, 0, 3, 2]

# Columns = examples, rows = epochs.  Hand counts (correct -> incorrect transitions):
# n0 1010: 2 | n1 0000: never learned -> 4+1 | n2 1111: 0 | n3 0101: 1 | n4 1001: 1 | n5 0111: 0
DYNAMICS = torch.tensor([[1, 0, 1, 0, 1, 0],
                         [0, 0, 1, 1, 0, 1],
                         [1, 0, 1, 0, 0, 1],
                         [0, 0, 1, 1, 1, 1]], dtype=torch.bool)
COUNTS = [2, 5, 0, 1, 1, 0]


def make_context(images, labels, num_classes, ipc, seed=0, model=None, dynamics=None,
                 cache_dir=None, method="test"):
    shape = InputShape(images.shape[1], images.shape[2], num_classes)
    return BuildContext(method=method, num_classes=num_classes, ipc=ipc, shape=shape,
                        generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"),
                        model_name="convnet_tiny", cache_dir=cache_dir, _train=(images, labels),
                        data_fingerprint=_fingerprint(images, labels),
                        _pretrained=model, _dynamics=dynamics)


def _fingerprint(images, labels):
    import hashlib
    return hashlib.sha256(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()[:16]


def synthetic_digits(per_class=60, num_classes=10, seed=0):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat(per_class)
    images = torch.randn(len(labels), 1, 8, 8, generator=generator) + labels.view(-1, 1, 1, 1) * 0.1
    return images, labels


def points_as_images():
    """Class 0 = POINTS at even indices, class 1 = POINTS mirrored at odd ones; 2×1×1 'images'."""
    images = torch.stack([POINTS, -POINTS], 1).reshape(-1, 2, 1, 1)
    labels = torch.tensor([0, 1] * len(POINTS))
    return images, labels


def test_herding_order_matches_hand_computation():
    assert herding_order(POINTS, 4).tolist() == HERDING_ORDER


def test_herding_is_argmin_not_argmax():
    # The argmax variant of the public library would start with the farthest point, index 3.
    assert herding_order(POINTS, 1).tolist() == [1]


def test_herding_build_maps_class_positions_to_training_indices():
    images, labels = points_as_images()
    ctx = make_context(images, labels, num_classes=2, ipc=2)
    condensed = build_herding(ctx, HerdingRecipe(features="pixels"))
    # class 0 sits at indices 0,2,4,6 and class 1 (mirrored, same order) at 1,3,5,7
    assert condensed.metadata["indices"] == [2 * 1, 2 * 0, 2 * 1 + 1, 2 * 0 + 1]


class CountingFeatures(nn.Module):
    """A stand-in 'pretrained' model whose features are the pixels, counting its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def features(self, x):
        self.calls += 1
        return x.flatten(1)


def test_herding_pretrained_embedding_is_cached_and_reused(tmp_path):
    images, labels = points_as_images()
    model = CountingFeatures()
    first = build_herding(make_context(images, labels, 2, 2, model=model, cache_dir=tmp_path),
                          HerdingRecipe(batch_size=3))
    calls = model.calls
    second = build_herding(make_context(images, labels, 2, 2, seed=1, model=model, cache_dir=tmp_path),
                           HerdingRecipe())
    assert (tmp_path / "herding_features_pretrained.pt").exists()
    assert calls == 3 and model.calls == calls          # 8 images in batches of 3, then none
    assert first.metadata["indices"] == second.metadata["indices"] == [2, 0, 3, 1]


def test_herding_rejects_unknown_feature_kind():
    with pytest.raises(UserError, match="pretrained, per-seed, random-init, pixels"):
        HerdingRecipe(features="penultimate")
    with pytest.raises(UserError, match="argmin, argmax"):
        HerdingRecipe(criterion="closest")
    with pytest.raises(UserError, match="none, l2"):
        HerdingRecipe(normalize="l1")


# DeepCore's argmax on POINTS.  Step 0: target (0,0): 2, 1, 3, √10 -> pick 3.
# Step 1: target 2μ − p3 = (1,3): p0 √10, p1 √13, p2 1 -> pick 1.
# Step 2: target 3μ − (p3+p1) = (2,3): p0 3, p2 2 -> pick 0.  Step 3: 2.
def test_herding_argmax_variant_matches_hand_computation():
    assert herding_order(POINTS, 4, criterion="argmax").tolist() == [3, 1, 0, 2]


def test_herding_l2_normalization_changes_the_pick():
    # One class: a = (10, 0), b = (0, 1), c = (0, -1).  Unnormalized μ = (10/3, 0): b is
    # closest (‖(−10/3, 1)‖ ≈ 3.48 < 6.67).  Normalized a = (1, 0), μ = (1/3, 0): a (0.67) < b (1.05).
    images = torch.tensor([[10.0, 0.0], [0.0, 1.0], [0.0, -1.0]]).reshape(3, 2, 1, 1)
    labels = torch.zeros(3, dtype=torch.long)

    def pick(normalize):
        ctx = make_context(images, labels, 1, 1)
        return build_herding(ctx, HerdingRecipe(features="pixels", normalize=normalize)).metadata["indices"]

    assert pick("none") == [1] and pick("l2") == [0]


def tiny_dataset(seed=0):
    images, labels = synthetic_digits(per_class=12, seed=seed)
    return ImageDataset("digits", images, labels, images[:10], labels[:10], (0.0,), (1.0,),
                        [str(c) for c in range(10)])


def test_herding_per_seed_network_at_seed_0_is_theta_star_before_the_polish(tmp_path):
    # Same loop, same recipe, same generator seed: the per-seed network of seed 0 is θ*.
    dataset = tiny_dataset()
    recipe = PretrainRecipe.for_dataset("digits", epochs=2, polish_steps=0)
    theta = load_or_pretrain(dataset, "convnet_tiny", recipe, tmp_path, "cpu", progress=False)
    ctx = make_context(dataset.train_x, dataset.train_y, 10, 1, seed=0)
    ctx.dataset_name = "digits"
    herding = HerdingRecipe(features="per-seed", feature_epochs=2)
    features = training_features(ctx, herding)
    assert torch.equal(features, embed(theta.model, dataset.train_x, 512))


def test_herding_per_seed_features_are_cached_per_seed_and_differ_across_seeds(tmp_path, monkeypatch):
    dataset = tiny_dataset()
    trained = []
    original = herding_module.train_feature_network
    monkeypatch.setattr(herding_module, "train_feature_network",
                        lambda ctx, recipe, seed: trained.append(seed) or original(ctx, recipe, seed))

    def select(seed):
        ctx = make_context(dataset.train_x, dataset.train_y, 10, 1, seed=seed, cache_dir=tmp_path)
        ctx.dataset_name = "digits"
        return build_herding(ctx, HerdingRecipe(features="per-seed", feature_epochs=1)).metadata["indices"]

    first = select(0)
    assert select(0) == first and trained == [0]             # the second build read the cache
    assert select(1) != first and trained == [0, 1]
    assert len(list(tmp_path.glob("herding_features_per-seed-*.pt"))) == 2


def test_forgetting_counts_on_hand_made_matrix():
    assert forgetting_counts(DYNAMICS, "max").tolist() == COUNTS


def test_forgetting_default_is_deepcores_zero():
    # the reading that reproduces the DC paper's MNIST figure (baselines/forgetting.py)
    assert ForgettingRecipe().never_learned == "zero"
    assert forgetting_counts(DYNAMICS).tolist() == forgetting_counts(DYNAMICS, "zero").tolist()


def test_forgetting_never_learned_conventions():
    assert forgetting_counts(DYNAMICS, "max").tolist() == COUNTS
    assert forgetting_counts(DYNAMICS, "zero").tolist() == [2, 0, 0, 1, 1, 0]
    assert forgetting_counts(DYNAMICS, "exclude").tolist() == [2, -1, 0, 1, 1, 0]


def test_forgetting_zero_and_exclude_pick_the_most_forgotten_learned_example():
    images = torch.randn(6, 1, 8, 8)
    labels = torch.zeros(6, dtype=torch.long)
    for convention in ("zero", "exclude"):
        condensed = build_forgetting(make_context(images, labels, 1, 1, dynamics=DYNAMICS),
                                     ForgettingRecipe(never_learned=convention))
        assert condensed.metadata["indices"] == [0] and condensed.metadata["never_learned_picked"] == 0
    # exclude: the never-learned example comes last, after the ties at 0 events
    condensed = build_forgetting(make_context(images, labels, 1, 6, dynamics=DYNAMICS),
                                 ForgettingRecipe(never_learned="exclude"))
    assert condensed.metadata["indices"][-1] == 1 and condensed.metadata["never_learned_picked"] == 1


def test_forgetting_scores_only_the_first_epochs():
    # First 2 epochs: n0 10 -> 1, n1 never learned, n2 11 -> 0, n3 01 -> 0, n4 10 -> 1, n5 01 -> 0
    images = torch.randn(6, 1, 8, 8)
    labels = torch.zeros(6, dtype=torch.long)
    condensed = build_forgetting(make_context(images, labels, 1, 3, dynamics=DYNAMICS),
                                 ForgettingRecipe(never_learned="zero", epochs=2))
    assert condensed.metadata["epochs"] == 2
    assert sorted(condensed.metadata["indices"][:2]) == [0, 4]
    with pytest.raises(MethodFailed, match="recorded 4 epochs"):
        build_forgetting(make_context(images, labels, 1, 1, dynamics=DYNAMICS), ForgettingRecipe(epochs=5))
    with pytest.raises(UserError, match="never_learned"):
        ForgettingRecipe(never_learned="infinite")


def test_forgetting_ranks_never_learned_first_and_breaks_ties_by_seed():
    images = torch.randn(6, 1, 8, 8)
    labels = torch.zeros(6, dtype=torch.long)
    picks = set()
    for seed in range(20):
        indices = build_forgetting(make_context(images, labels, 1, 3, seed=seed, dynamics=DYNAMICS),
                                   ForgettingRecipe(never_learned="max")).metadata["indices"]
        assert indices[:2] == [1, 0]                    # never learned, then 2 events
        picks.add(indices[2])
    assert picks == {3, 4}                              # the tie at 1 event goes either way


def test_forgetting_missing_dynamics_says_repretrain():
    images, labels = synthetic_digits(per_class=2)
    with pytest.raises(MethodFailed, match="re-pretrain"):
        build_forgetting(make_context(images, labels, 10, 1), ForgettingRecipe())
    with pytest.raises(MethodFailed, match="re-pretrain"):
        build_forgetting(make_context(images, labels, 10, 1, dynamics=torch.zeros(0, 20, dtype=torch.bool)),
                         ForgettingRecipe())


def test_forgetting_is_deterministic_per_seed_and_varies_across_seeds():
    images, labels = synthetic_digits()
    tie_heavy = torch.ones(5, len(labels), dtype=torch.bool)   # nobody ever forgotten: all tie at 0

    def select(seed):
        ctx = make_context(images, labels, 10, 10, seed=seed, dynamics=tie_heavy)
        return build_forgetting(ctx, ForgettingRecipe()).metadata["indices"]

    assert select(3) == select(3)
    assert select(3) != select(4)


def test_herding_random_init_depends_on_seed_only():
    images, labels = synthetic_digits()

    def select(seed):
        ctx = make_context(images, labels, 10, 10, seed=seed)
        return build_herding(ctx, HerdingRecipe(features="random-init")).metadata["indices"]

    assert select(5) == select(5)
    assert select(5) != select(6)


@pytest.mark.parametrize("ipc", [1, 10, 50])
@pytest.mark.parametrize("method", ["herding", "forgetting", "kcenter"])
def test_selection_returns_ipc_training_images_per_class(method, ipc):
    images, labels = synthetic_digits()
    model = create_model("convnet_tiny", InputShape(1, 8, 10), torch.Generator().manual_seed(0))
    dynamics = torch.rand(6, len(labels), generator=torch.Generator().manual_seed(1)) > 0.3
    ctx = make_context(images, labels, 10, ipc, model=model, dynamics=dynamics, method=method)
    spec = METHODS.get(method)
    condensed = spec.build(ctx, spec.make_recipe("digits"))
    indices = torch.tensor(condensed.metadata["indices"])
    assert len(set(indices.tolist())) == 10 * ipc
    assert torch.equal(condensed.images, images[indices])
    assert torch.equal(condensed.labels, labels[indices])
    assert torch.bincount(condensed.labels, minlength=10).tolist() == [ipc] * 10


def test_registry_declares_needs_and_table_order():
    load_methods()
    herding, forgetting = METHODS.get("herding"), METHODS.get("forgetting")
    assert (herding.needs, herding.order, herding.group) == ("data+model", 1, "selection")
    assert (forgetting.needs, forgetting.order, forgetting.group) == ("data+dynamics", 2, "selection")


# From POINTS[0] = (2, 0): distances to it 0, 3, √13, √18 -> pick 3 = (−1, −3); nearest-center
# distances then p1 min(3, 3) = 3, p2 min(√13, √37) = √13 ≈ 3.61 -> pick 2; then p1.
KCENTER_ORDER = [0, 3, 2, 1]


def test_kcenter_order_matches_hand_computation():
    assert kcenter_order(POINTS, 4, first=0).tolist() == KCENTER_ORDER


def test_kcenter_mean_first_is_deterministic_and_random_first_follows_the_seed():
    images, labels = points_as_images()
    model = CountingFeatures()
    mean = [build_kcenter(make_context(images, labels, 2, 2, seed=s, model=model), KCenterRecipe(first="mean"))
            .metadata["indices"] for s in (0, 1)]
    assert mean[0] == mean[1] == [2 * 1, 2 * 2, 2 * 1 + 1, 2 * 2 + 1]   # nearest the mean (0, 0): p1; then p2
    images, labels = synthetic_digits()
    model = create_model("convnet_tiny", InputShape(1, 8, 10), torch.Generator().manual_seed(0))
    pick = [build_kcenter(make_context(images, labels, 10, 1, seed=s, model=model), KCenterRecipe())
            .metadata["indices"] for s in (0, 0, 1)]
    assert pick[0] == pick[1] != pick[2]


def test_kcenter_shares_herdings_cached_embedding(tmp_path):
    images, labels = points_as_images()
    model = CountingFeatures()
    build_herding(make_context(images, labels, 2, 2, model=model, cache_dir=tmp_path), HerdingRecipe())
    calls = model.calls
    build_kcenter(make_context(images, labels, 2, 2, model=model, cache_dir=tmp_path), KCenterRecipe())
    assert calls > 0 and model.calls == calls           # the θ* embedding computed once for both


def test_kcenter_rejects_an_unknown_first_center():
    with pytest.raises(UserError, match="kcenter.first"):
        KCenterRecipe(first="far")
