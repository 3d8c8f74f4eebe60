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


def test_the_retrain_engine_stacks_small_maps_and_trains_large_ones_model_by_model_on_the_cpu():
    """auto: stacked for the digits ConvNet (16 KiB of activations per image), plain for MNIST's (2.1 MiB);
    a batch-norm network is always plain; an explicit engine is kept."""
    from dsvbench.models import InputShape
    from dsvbench.training import PLAIN_MIN_IMAGE_BYTES, retrain_engine
    small, large = InputShape(1, 8, 10), InputShape(1, 28, 10)
    digits, mnist = create_model("convnet", small), create_model("convnet", large)
    assert retrain_engine("auto", digits, torch.zeros(3, 1, 8, 8)) == "stacked"
    assert retrain_engine("auto", mnist, torch.zeros(3, 1, 28, 28)) == "plain"
    assert retrain_engine("stacked", mnist, torch.zeros(3, 1, 28, 28)) == "stacked"
    assert retrain_engine("plain", digits, torch.zeros(3, 1, 8, 8)) == "plain"
    assert retrain_engine("stacked", create_model("convnet_bn", small), torch.zeros(3, 1, 8, 8)) == "plain"
    assert PLAIN_MIN_IMAGE_BYTES > 202 * 1024   # digits' largest (VGG11) stays stacked: its committed tables


def test_the_plain_engine_is_one_model_after_another_and_agrees_with_the_stacked_one(tiny_dataset):
    """engine='plain' gives exactly what :func:`retrain` gives model by model (progress ticks per model and
    pass); the stacked population agrees up to summation order."""
    from dsvbench.training import retrain, retrain_passes, retrain_population
    recipe = EvalRecipe("t", "sgd", lr=0.05, epochs=3, batch_size=16, augment="crop", weight_decay=5e-4)
    x, y = tiny_dataset.train_x, tiny_dataset.train_y
    sets = [(x[:18], y[:18]), (x[18:36], y[18:36])]   # one size: one stacked population
    test = (tiny_dataset.test_x, tiny_dataset.test_y)
    outcomes = {}
    for engine in ("plain", "stacked", "one-by-one"):
        generators = [torch.Generator().manual_seed(seed) for seed in (0, 1)]
        models = [create_model("convnet_tiny", tiny_dataset.shape, g) for g in generators]
        ticks = []
        if engine == "one-by-one":
            results = [retrain(m, x, y, *test, recipe, g) for m, g, (x, y) in zip(models, generators, sets)]
        else:
            results = retrain_population(models, generators, sets, *test, recipe, on_epoch=lambda: ticks.append(1),
                                         engine=engine)
            assert len(ticks) == retrain_passes(models, sets, recipe, engine) == (6 if engine == "plain" else 3)
        outcomes[engine] = ([r.test_accuracy for r in results], [torch.cat([p.flatten() for p in m.parameters()])
                                                                 for m in models])
    assert outcomes["plain"][0] == outcomes["one-by-one"][0]
    assert all(torch.equal(a, b) for a, b in zip(outcomes["plain"][1], outcomes["one-by-one"][1]))
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(outcomes["plain"][1], outcomes["stacked"][1]))


def test_the_engine_benchmark_prints_both_engines_and_autos_pick(capsys):
    import importlib
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        bench = importlib.import_module("bench_retrain_engine")
    finally:
        sys.path.pop(0)
    assert bench.main(["--shape", "1", "8", "--images", "10", "--models", "2", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "auto picks stacked" in out and "| stacked" in out and "| plain" in out
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(["--models", "0"])
    assert exit_.value.code == 2
