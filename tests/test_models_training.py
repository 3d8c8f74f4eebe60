import pytest
import torch

from dsvbench.augment import apply, augment, draw, merge
from dsvbench.config import EvalRecipe, eval_recipe
from dsvbench.models import MODELS, AvgPool2x2, InputShape, create_model
from dsvbench.training import accuracy, retrain, train_on_set


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("shape", [InputShape(1, 8, 10), InputShape(1, 28, 10), InputShape(3, 32, 7)])
def test_every_model_maps_images_to_logits(name, shape):
    model = create_model(name, shape, torch.Generator().manual_seed(0))
    logits = model(torch.randn(2, shape.channels, shape.size, shape.size))
    assert logits.shape == (2, shape.num_classes)
    assert model.features(torch.randn(2, shape.channels, shape.size, shape.size)).shape == (2, model.embed_dim)


def test_convnet_geometry_follows_dc_reference():
    # 28×28: first conv padding 3 -> 32 -> 16 -> 8 -> 4: linear on 128·4·4.
    assert create_model("convnet", InputShape(1, 28, 10)).embed_dim == 128 * 4 * 4
    # 8×8 digits: two blocks -> 2×2 map, width 16 (the documented small-input choice).
    assert create_model("convnet", InputShape(1, 8, 10)).embed_dim == 16 * 2 * 2
    assert create_model("convnet", InputShape(3, 32, 10)).embed_dim == 128 * 4 * 4


@pytest.mark.parametrize("shape,dtype", [((7, 16, 8, 8), torch.float32), ((3, 4, 32, 32), torch.float64),
                                         ((5, 16, 4, 4), torch.float32)])
def test_cpu_average_pooling_is_atens_bit_for_bit(shape, dtype, monkeypatch):
    """AvgPool2x2 = nn.AvgPool2d(2, 2): forward, backward and the double backward (DC, DeepKKT)."""
    monkeypatch.setattr("dsvbench.models.FAST_POOL_MIN_ELEMENTS", 0)   # these small inputs too
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    weight = torch.randn(shape[0], shape[1], shape[2] // 2, shape[3] // 2,
                         generator=torch.Generator().manual_seed(1), dtype=dtype)
    values = []
    for pool in (torch.nn.AvgPool2d(2, 2), AvgPool2x2()):
        leaf = x.clone().requires_grad_(True)
        out = pool(leaf)
        (first,) = torch.autograd.grad((out.square() * weight).sum(), leaf, create_graph=True)
        (second,) = torch.autograd.grad((first * x).sin().sum(), leaf)   # not constant on a window
        values.append((out, first, second))
    for ours, aten in zip(values[1], values[0]):
        assert torch.equal(ours, aten)
    odd = torch.randn(2, 3, 5, 5)   # odd sides go to ATen (which drops the last row and column)
    assert torch.equal(AvgPool2x2()(odd), torch.nn.functional.avg_pool2d(odd, 2))


def test_cpu_average_pooling_goes_through_vmap(monkeypatch):
    monkeypatch.setattr("dsvbench.models.FAST_POOL_MIN_ELEMENTS", 0)
    from torch.func import functional_call, grad, stack_module_state, vmap
    shape = InputShape(1, 8, 10)
    models = [create_model("convnet", shape, torch.Generator().manual_seed(i)) for i in range(3)]
    params, _ = stack_module_state(models)
    x = torch.randn(3, 20, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.randint(0, 10, (3, 20), generator=torch.Generator().manual_seed(3))

    def loss(p, images, labels):
        return torch.nn.functional.cross_entropy(functional_call(models[0], p, (images,)), labels)
    stacked = vmap(grad(loss))(params, x, y)
    for i, model in enumerate(models):
        single = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x[i]), y[i]), list(model.parameters()))
        for name, g in zip(params, single):
            torch.testing.assert_close(stacked[name][i], g)


def test_model_init_is_deterministic_per_generator():
    first = create_model("convnet_tiny", InputShape(1, 8, 3), torch.Generator().manual_seed(5))
    second = create_model("convnet_tiny", InputShape(1, 8, 3), torch.Generator().manual_seed(5))
    third = create_model("convnet_tiny", InputShape(1, 8, 3), torch.Generator().manual_seed(6))
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
    assert not torch.equal(next(first.parameters()), next(third.parameters()))


def test_random_crop_moves_content_within_padding():
    x = torch.arange(16.0).view(1, 1, 4, 4) + 1
    out = augment(x.repeat(50, 1, 1, 1), "crop", torch.Generator().manual_seed(0))   # pad 1 on 4×4
    assert out.shape == (50, 1, 4, 4)
    # every output pixel is either padding (0) or an input pixel
    assert set(out.unique().tolist()) <= set(range(0, 17))
    assert len({tuple(o.flatten().tolist()) for o in out}) > 1


def test_augmentations_keep_shape_and_follow_the_generator():
    x = torch.randn(6, 3, 16, 16)
    for kind in ("none", "crop", "flip_crop", "dc"):
        a = augment(x, kind, torch.Generator().manual_seed(1))
        b = augment(x, kind, torch.Generator().manual_seed(1))
        assert a.shape == x.shape and torch.equal(a, b)
    assert torch.equal(augment(x, "none", torch.Generator()), x)
    assert not torch.equal(augment(x, "dc", torch.Generator().manual_seed(1)), x)


def test_drawn_parameters_of_several_batches_apply_as_one_call():
    # A population draws per network (its own generator) and applies once: the same images as
    # augmenting each batch with its own generator.
    batches = [torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    for kind in ("crop", "flip_crop", "dc"):
        one_by_one = [augment(b, kind, torch.Generator().manual_seed(10 + i)) for i, b in enumerate(batches)]
        params = [draw(kind, b.shape, torch.Generator().manual_seed(10 + i)) for i, b in enumerate(batches)]
        together = apply(torch.cat(batches), kind, merge(params))
        assert torch.allclose(together, torch.cat(one_by_one), atol=1e-6)


def test_recipes_have_the_published_defaults():
    dc = eval_recipe("dc", "cifar10")
    assert (dc.optimizer, dc.lr, dc.momentum, dc.weight_decay, dc.epochs, dc.batch_size, dc.augment) == \
        ("sgd", 0.01, 0.9, 5e-4, 300, 256, "none")
    assert eval_recipe("dc", "mnist").augment == "dc"
    dsv = eval_recipe("dsv", "cifar10")
    assert (dsv.optimizer, dsv.lr, dsv.sam_rho, dsv.augment) == ("sam", 0.1, 1e-4, "flip_crop")


@pytest.mark.parametrize("optimizer", ["sgd", "sam"])
def test_training_fits_a_separable_set_and_is_deterministic(tiny_dataset, optimizer):
    recipe = EvalRecipe("t", optimizer, lr=0.05, sam_rho=0.05, epochs=30)
    results = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(0)
        model = create_model("convnet_tiny", tiny_dataset.shape, generator)
        results.append(retrain(model, tiny_dataset.train_x, tiny_dataset.train_y, tiny_dataset.test_x,
                               tiny_dataset.test_y, recipe, generator))
    assert results[0].train_accuracy == 100.0
    assert results[0].test_accuracy > 90.0
    assert results[0].test_accuracy == results[1].test_accuracy
    assert results[0].final_loss == results[1].final_loss


def test_learning_rate_decays_once_after_half_the_epochs(tiny_dataset, monkeypatch):
    seen = []
    recipe = EvalRecipe("t", "sgd", lr=0.1, epochs=10)
    import dsvbench.training as training
    real = training.make_optimizer

    def spy(model, recipe_):
        optimizer = real(model, recipe_)
        seen.append(optimizer)
        return optimizer

    monkeypatch.setattr(training, "make_optimizer", spy)
    lrs = []
    model = create_model("convnet_tiny", tiny_dataset.shape)
    train_on_set(model, tiny_dataset.train_x, tiny_dataset.train_y, recipe, torch.Generator(),
                 on_epoch=lambda e: lrs.append(seen[0].param_groups[0]["lr"]))
    assert lrs[:6] == [0.1] * 6 and all(abs(lr - 0.01) < 1e-12 for lr in lrs[6:])
    assert accuracy(model, tiny_dataset.train_x, tiny_dataset.train_y) > 50


def test_stacked_evaluation_in_groups_gives_the_same_accuracies(monkeypatch):
    """Memory: the vmap-ed evaluation goes in groups of models under a byte budget; same numbers."""
    import dsvbench.vectorized as vectorized
    from dsvbench.models import activation_bytes
    models = [create_model("convnet", InputShape(1, 28, 10), torch.Generator().manual_seed(i)) for i in range(5)]
    images = torch.randn(300, 1, 28, 28, generator=torch.Generator().manual_seed(9))
    labels = torch.randint(0, 10, (300,), generator=torch.Generator().manual_seed(8))
    together = vectorized.evaluate_stacked(models, images, labels, 256)
    groups = []
    original = vectorized._evaluate_group
    monkeypatch.setattr(vectorized, "_evaluate_group", lambda ms, *a: groups.append(len(ms)) or original(ms, *a))
    monkeypatch.setattr(vectorized, "EVAL_BYTES", 2 * 256 * activation_bytes(models[0], images[:1]))
    assert vectorized.evaluate_stacked(models, images, labels, 256) == together
    assert groups == [2, 2, 1]


def test_one_model_per_group_is_evaluated_in_chunks_with_the_same_logits(monkeypatch):
    """Paper scale (one model per vmap-ed group): its test batches go in chunks under EVAL_CHUNK_BYTES;
    the logits of a chunked pass equal the whole batch's bit for bit, so the accuracies do too."""
    import copy
    from torch.func import functional_call, stack_module_state, vmap
    import dsvbench.vectorized as vectorized
    from dsvbench.models import activation_bytes
    model = create_model("convnet", InputShape(1, 28, 10), torch.Generator().manual_seed(3)).eval()
    images = torch.randn(256, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    labels = torch.randint(0, 10, (256,), generator=torch.Generator().manual_seed(5))
    batches = []
    original = vectorized._evaluate_group
    monkeypatch.setattr(vectorized, "_evaluate_group", lambda ms, x, y, b: batches.append(b) or original(ms, x, y, b))
    chunked = vectorized.evaluate_stacked([model], images, labels, 256)
    monkeypatch.setattr(vectorized, "EVAL_CHUNK_BYTES", 2 ** 40)
    whole = vectorized.evaluate_stacked([model], images, labels, 256)
    assert batches[1] == 256 and batches[0] == (64 * 2 ** 20) // activation_bytes(model, images[:1]) < 256
    assert chunked == whole
    params, buffers = stack_module_state([model])
    skeleton = copy.deepcopy(model).to("meta")
    forward = vmap(lambda p, b, x: functional_call(skeleton, (p, b), (x,)), in_dims=(0, 0, None))
    with torch.no_grad():
        one_pass = forward(params, buffers, images)
        in_chunks = torch.cat([forward(params, buffers, chunk) for chunk in images.split(batches[0])], dim=1)
    assert torch.equal(one_pass, in_chunks)
