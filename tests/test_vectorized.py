import pytest
import torch

from dsvbench.config import EvalRecipe
from dsvbench.models import create_model
from dsvbench.training import accuracy, train_on_set
from dsvbench.vectorized import evaluate_stacked, supports_stacking, train_stacked


@pytest.mark.parametrize("optimizer, augment", [("sgd", "crop"), ("sam", "flip_crop")])
def test_stacked_training_equals_one_after_another(tiny_dataset, optimizer, augment):
    recipe = EvalRecipe("t", optimizer, lr=0.05, sam_rho=0.05, epochs=6, batch_size=16, augment=augment,
                        weight_decay=5e-4)
    seeds = (0, 1, 2)
    sequential, stacked = [], []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        model = create_model("convnet_tiny", tiny_dataset.shape, generator)
        train_on_set(model, tiny_dataset.train_x, tiny_dataset.train_y, recipe, generator)
        sequential.append(model)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    stacked = [create_model("convnet_tiny", tiny_dataset.shape, g) for g in generators]
    train_stacked(stacked, tiny_dataset.train_x, tiny_dataset.train_y, recipe, generators)
    for one, other in zip(sequential, stacked):
        for a, b in zip(one.parameters(), other.parameters()):
            assert torch.allclose(a, b, atol=1e-4), "stacked training drifted from sequential training"
    assert not torch.allclose(next(stacked[0].parameters()), next(stacked[1].parameters()))


def test_population_of_different_sets_equals_one_by_one(tiny_dataset):
    # All retrainings of a column at once: model m on set m, each with its own generator.
    recipe = EvalRecipe("t", "sam", lr=0.05, sam_rho=0.05, epochs=5, batch_size=16, augment="dc")
    sets = [(tiny_dataset.train_x[i::3][:10], tiny_dataset.train_y[i::3][:10]) for i in range(3)]
    sequential = []
    for seed, (x, y) in enumerate(sets):
        generator = torch.Generator().manual_seed(seed)
        model = create_model("convnet_tiny", tiny_dataset.shape, generator)
        train_on_set(model, x, y, recipe, generator)
        sequential.append(model)
    generators = [torch.Generator().manual_seed(seed) for seed in range(3)]
    stacked = [create_model("convnet_tiny", tiny_dataset.shape, g) for g in generators]
    train_stacked(stacked, [x for x, _ in sets], [y for _, y in sets], recipe, generators)
    for one, other in zip(sequential, stacked):
        for a, b in zip(one.parameters(), other.parameters()):
            assert torch.allclose(a, b, atol=1e-4), "population training drifted from one-by-one training"
    expected = [accuracy(m, tiny_dataset.test_x, tiny_dataset.test_y) for m in sequential]
    assert evaluate_stacked(stacked, tiny_dataset.test_x, tiny_dataset.test_y, 7) == pytest.approx(expected, abs=1e-4)


def test_batchnorm_models_are_not_stacked(tiny_dataset):
    assert supports_stacking(create_model("convnet", tiny_dataset.shape))
    assert not supports_stacking(create_model("convnet_bn", tiny_dataset.shape))


def test_stacked_adam_equals_torch_adam(tiny_dataset):
    # The NeurIPS retraining recipe (Adam lr 1e-4) in the stacked population.  On an MLP: a conv
    # bias before instance norm has a zero gradient up to rounding noise, which Adam's
    # normalization blows up to ±lr differently in the two summation orders.
    recipe = EvalRecipe("adam", "adam", lr=1e-3, momentum=0.0, weight_decay=0.0, epochs=4, batch_size=16,
                        augment="crop")
    one = create_model("mlp", tiny_dataset.shape, torch.Generator().manual_seed(0))
    train_on_set(one, tiny_dataset.train_x, tiny_dataset.train_y, recipe, torch.Generator().manual_seed(0))
    other = create_model("mlp", tiny_dataset.shape, torch.Generator().manual_seed(0))
    train_stacked([other], tiny_dataset.train_x, tiny_dataset.train_y, recipe, [torch.Generator().manual_seed(0)])
    for a, b in zip(one.parameters(), other.parameters()):
        assert torch.allclose(a, b, atol=1e-5)
