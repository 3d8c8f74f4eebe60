"""What a condensed set may carry besides images and hard labels: a learned learning rate (MTT) and
soft labels; how retraining uses them, how the cache keeps them, and that other sets are untouched."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from dsvbench.config import EvalRecipe, config_hash, eval_recipe, to_dict
from dsvbench.methods import CondensedSet, MethodFailed
from dsvbench.models import create_model
from dsvbench.setcache import load_cached_set, save_cached_set, set_digest, set_problem
from dsvbench.training import retrain_population, train_on_set
from dsvbench.vectorized import train_stacked


def test_a_learning_rate_per_model_in_a_stacked_population_equals_one_by_one(tiny_dataset):
    recipe = EvalRecipe("t", "sgd", lr=0.05, epochs=4, batch_size=16, augment="crop", weight_decay=5e-4)
    rates = [0.05, 0.02, 0.1]
    sequential = []
    for seed, lr in enumerate(rates):
        generator = torch.Generator().manual_seed(seed)
        model = create_model("convnet_tiny", tiny_dataset.shape, generator)
        train_on_set(model, tiny_dataset.train_x, tiny_dataset.train_y, dataclasses.replace(recipe, lr=lr), generator)
        sequential.append(model)
    generators = [torch.Generator().manual_seed(seed) for seed in range(3)]
    stacked = [create_model("convnet_tiny", tiny_dataset.shape, g) for g in generators]
    train_stacked(stacked, tiny_dataset.train_x, tiny_dataset.train_y, recipe, generators, lrs=rates)
    for one, other in zip(sequential, stacked):
        for a, b in zip(one.parameters(), other.parameters()):
            assert torch.allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="Adam"):
        train_stacked(stacked, tiny_dataset.train_x, tiny_dataset.train_y,
                      dataclasses.replace(recipe, optimizer="adam"), generators, lrs=rates)


def test_one_hot_soft_labels_train_as_the_hard_labels(tiny_dataset):
    recipe = EvalRecipe("t", "sgd", lr=0.05, epochs=3, batch_size=16)
    x, y = tiny_dataset.train_x, tiny_dataset.train_y
    soft = F.one_hot(y, tiny_dataset.num_classes).float()
    results = []
    for labels in (y, soft):
        generators = [torch.Generator().manual_seed(0)]
        models = [create_model("convnet_tiny", tiny_dataset.shape, generators[0])]
        results.append(retrain_population(models, generators, [(x, labels)], tiny_dataset.test_x,
                                          tiny_dataset.test_y, recipe)[0])
        results[-1] = (results[-1], [p.detach().clone() for p in models[0].parameters()])
    (hard, hard_params), (soft_result, soft_params) = results
    assert hard.train_accuracy == soft_result.train_accuracy
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(hard_params, soft_params))


def test_the_cache_keeps_lr_and_soft_labels_and_checks_them(tmp_path, tiny_dataset):
    images = tiny_dataset.train_x[:6]
    labels = tiny_dataset.train_y[:6]
    soft = torch.softmax(torch.randn(6, tiny_dataset.num_classes), 1)
    condensed = CondensedSet(images, labels, soft_labels=soft, lr=0.0123)
    claims = {"key": "k", "method": "m", "seed": 0, "ipc": 2, "image_shape": list(images.shape[1:]),
              "num_classes": tiny_dataset.num_classes}
    save_cached_set(tmp_path / "s.pt", condensed, {}, claims)
    loaded, _ = load_cached_set(tmp_path / "s.pt", claims)
    assert loaded.lr == 0.0123 and torch.equal(loaded.soft_labels, soft)
    assert set_digest(condensed.state_dict()) != set_digest(dataclasses.replace(condensed, lr=0.5).state_dict())
    plain = CondensedSet(images, labels)
    assert "lr" not in plain.state_dict() and "soft_labels" not in plain.state_dict()   # other sets' files as before
    wrong = dataclasses.replace(condensed, soft_labels=torch.ones(6, tiny_dataset.num_classes + 1))
    assert "soft labels" in set_problem(wrong, claims["image_shape"], claims["num_classes"])
    with pytest.raises(MethodFailed):
        CondensedSet(images, labels, lr=-1.0)


def test_the_new_recipe_fields_leave_every_older_key_unchanged():
    recipe = eval_recipe("dc", "mnist")
    assert "lr_from_set" not in to_dict(recipe) and "soft_labels" not in to_dict(recipe)
    assert config_hash(recipe) != config_hash(dataclasses.replace(recipe, soft_labels=True))
    assert to_dict(eval_recipe("mtt", "cifar10"))["lr_from_set"] is True
