import dataclasses

import pytest
import torch

import dsvbench.pretrain as pretrain_module
from dsvbench.config import PretrainRecipe
from dsvbench.pretrain import load_or_pretrain, pretrain_key

RECIPE = PretrainRecipe(epochs=3, batch_size=16, augment="crop", polish_steps=0)


def test_pretraining_records_dynamics_and_accuracy(tiny_dataset, tmp_path):
    pretrained = load_or_pretrain(tiny_dataset, "convnet_tiny", RECIPE, tmp_path, "cpu", progress=False)
    assert pretrained.dynamics.shape == (3, len(tiny_dataset.train_y))
    assert pretrained.dynamics.dtype == torch.bool
    assert 0 <= pretrained.test_accuracy <= 100 and pretrained.train_accuracy > 34  # above chance
    assert pretrained.path.exists() and pretrained.seconds_per_epoch > 0


def test_second_call_loads_the_cache(tiny_dataset, tmp_path, monkeypatch):
    first = load_or_pretrain(tiny_dataset, "convnet_tiny", RECIPE, tmp_path, "cpu", progress=False)

    def fail(*args, **kwargs):
        raise AssertionError("pretrained again although the cache holds the model")

    monkeypatch.setattr(pretrain_module, "_pretrain", fail)
    second = load_or_pretrain(tiny_dataset, "convnet_tiny", RECIPE, tmp_path, "cpu", progress=False)
    assert second.key == first.key and torch.equal(second.dynamics, first.dynamics)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)


def test_cache_key_covers_recipe_model_and_data(tiny_dataset):
    from tests.conftest import make_tiny_dataset
    base = pretrain_key(tiny_dataset, "convnet_tiny", RECIPE)
    assert base != pretrain_key(tiny_dataset, "convnet_tiny", dataclasses.replace(RECIPE, epochs=4))
    assert base != pretrain_key(tiny_dataset, "mlp", RECIPE)
    assert base != pretrain_key(make_tiny_dataset(seed=1), "convnet_tiny", RECIPE)


def test_checkpoint_without_dynamics_is_retrained_when_dynamics_are_needed(tiny_dataset, tmp_path):
    first = load_or_pretrain(tiny_dataset, "convnet_tiny", RECIPE, tmp_path, "cpu", progress=False)
    state = torch.load(first.path, weights_only=True)
    state["dynamics"] = None
    torch.save(state, first.path)
    loaded = load_or_pretrain(tiny_dataset, "convnet_tiny", RECIPE, tmp_path, "cpu", progress=False)
    assert loaded.dynamics.numel() == 0
    again = load_or_pretrain(tiny_dataset, "convnet_tiny", RECIPE, tmp_path, "cpu", progress=False,
                             require_dynamics=True)
    assert again.dynamics.shape == (3, len(tiny_dataset.train_y))


def test_polish_makes_the_classifier_stationary_and_is_cached_on_top(tiny_dataset, tmp_path, monkeypatch):
    """After the polish θ*_classifier = −Σ λ ∇L with the uniform λ = 1/(n·wd) of Eq. 6."""
    from dsvbench.methods.deepkkt import DeepKKT
    polished_recipe = dataclasses.replace(RECIPE, polish_steps=200)
    base = load_or_pretrain(tiny_dataset, "convnet_tiny", RECIPE, tmp_path, "cpu", progress=False)
    polished = load_or_pretrain(tiny_dataset, "convnet_tiny", polished_recipe, tmp_path, "cpu", progress=False)
    assert polished.key != base.key and polished.path != base.path
    x, y = tiny_dataset.train_x, tiny_dataset.train_y
    lam = torch.full((len(y),), 1.0 / (len(y) * RECIPE.weight_decay))

    def residual(model):
        kkt = DeepKKT(model, params="classifier", sqrt="none", distance="sq_l2")
        grads = kkt.total_grad(x, y, lam)
        theta = torch.cat([t.flatten() for t in kkt.targets])
        return float((theta + torch.cat([g.flatten() for g in grads])).norm() / theta.norm())
    assert residual(polished.model) < 1e-2 < residual(base.model)
    # features untouched, dynamics kept; a second call loads both stages without training
    body = {k: v for k, v in base.model.state_dict().items() if not k.startswith("classifier")}
    assert all(torch.equal(v, polished.model.state_dict()[k]) for k, v in body.items())
    assert torch.equal(polished.dynamics, base.dynamics)
    monkeypatch.setattr(pretrain_module, "_pretrain", lambda *a, **k: pytest.fail("retrained"))
    again = load_or_pretrain(tiny_dataset, "convnet_tiny", polished_recipe, tmp_path, "cpu", progress=False)
    assert torch.equal(again.model.classifier.weight, polished.model.classifier.weight)


def test_all_layer_polish_makes_every_parameter_stationary_and_has_its_own_key(tiny_dataset, tmp_path,
                                                                                monkeypatch):
    """polish_params=all: Eq. 6 over all of θ* at λ = 1/(n·wd), far closer than Adam's iterate."""
    from dsvbench.methods.deepkkt import DeepKKT
    from dsvbench.pretrain import theta_key
    classifier_recipe = dataclasses.replace(RECIPE, polish_steps=300)
    all_recipe = dataclasses.replace(classifier_recipe, polish_params="all")
    base = load_or_pretrain(tiny_dataset, "convnet_dsv", RECIPE, tmp_path, "cpu", progress=False)
    polished = load_or_pretrain(tiny_dataset, "convnet_dsv", all_recipe, tmp_path, "cpu", progress=False)
    keys = {base.key, theta_key(tiny_dataset, "convnet_dsv", classifier_recipe), polished.key}
    assert len(keys) == 3 and polished.key == theta_key(tiny_dataset, "convnet_dsv", all_recipe)
    assert pretrain_key(tiny_dataset, "convnet_dsv", all_recipe) == base.key   # the Adam stage is shared
    x, y = tiny_dataset.train_x, tiny_dataset.train_y
    lam = torch.full((len(y),), 1.0 / (len(y) * RECIPE.weight_decay))

    def residual(model):
        return DeepKKT(model, params="all").residuals(x, y, lam)["residual_l1_all"]
    before, after = residual(base.model), residual(polished.model)
    assert after < 0.05 and after < before / 10, (before, after)
    # the conv layers moved too (not only the classifier), dynamics kept, a second call loads it
    assert not torch.equal(base.model.body[0].weight, polished.model.body[0].weight)
    assert torch.equal(polished.dynamics, base.dynamics)
    monkeypatch.setattr(torch.optim, "LBFGS", lambda *a, **k: pytest.fail("polished again"))
    again = load_or_pretrain(tiny_dataset, "convnet_dsv", all_recipe, tmp_path, "cpu", progress=False)
    assert torch.equal(again.model.body[0].weight, polished.model.body[0].weight)
    with pytest.raises(ValueError, match="polish_params"):
        PretrainRecipe(polish_params="conv")
