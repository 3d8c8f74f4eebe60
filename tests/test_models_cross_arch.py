"""The cross-architecture networks of the DC paper (Zhao, Mopuri & Bilen, ICLR 2021, Table 2) as the DC
reference code (VICO-UoE/DatasetCondensation, ``networks.py``) builds them: lenet, alexnet, vgg11,
resnet18 (and the batch-norm vgg11_bn, resnet18_bn)."""
import pytest
import torch
from torch import nn

from dsvbench.models import MODELS, InputShape, create_model, has_batch_norm

NEW = ("lenet", "alexnet", "vgg11", "vgg11_bn", "resnet18", "resnet18_bn")
INSTANCE_NORM = ("lenet", "alexnet", "vgg11", "resnet18")   # lenet, alexnet: no norm at all
DIGITS, MNIST, CIFAR10 = InputShape(1, 8, 10), InputShape(1, 28, 10), InputShape(3, 32, 10)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def _linear(fan_in: int, fan_out: int) -> int:
    return fan_in * fan_out + fan_out


def test_all_are_registered():
    assert set(NEW) <= set(MODELS.names())


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("shape", [DIGITS, MNIST, CIFAR10], ids=["digits", "mnist", "cifar10"])
def test_images_map_to_logits_through_the_embedding(name, shape):
    model = create_model(name, shape, torch.Generator().manual_seed(0))
    x = torch.randn(3, shape.channels, shape.size, shape.size, generator=torch.Generator().manual_seed(1))
    logits, features = model(x), model.features(x)
    assert logits.shape == (3, shape.num_classes)
    assert features.shape == (3, model.embed_dim)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == model.embed_dim
    torch.testing.assert_close(logits, model.classifier(features))
    # the logits depend on the image (no 1×1 instance-norm map that makes the network constant)
    assert (logits[0] - logits[1]).abs().max() > 1e-4


# Parameter counts of the reference networks on CIFAR-10 (3×32×32, 10 classes), summed by hand from
# the layer sizes of networks.py (conv: cin·cout·k² + cout bias; linear: fan_in·fan_out + fan_out;
# GroupNorm / BatchNorm: 2·C; the ResNet convs have no bias).
# LeNet: conv 3→6 5×5 456; conv 6→16 5×5 2 416; fc 400→120 48 120; fc 120→84 10 164; fc 84→10 850.
LENET_CIFAR10 = 456 + 2_416 + 48_120 + 10_164 + 850                      # = 62 006
# AlexNet: conv 3→128 5×5 9 728; 128→192 5×5 614 592; 192→256 3×3 442 624; 256→192 3×3 442 560;
# 192→192 3×3 331 968; fc 192·4·4 = 3072→10 30 730.
ALEXNET_CIFAR10 = 9_728 + 614_592 + 442_624 + 442_560 + 331_968 + 30_730  # = 1 872 202
# VGG11: convs 3→64 1 792; 64→128 73 856; 128→256 295 168; 256→256 590 080; 256→512 1 180 160;
# three 512→512 2 359 808 each; GroupNorm 2·(64+128+256+256+4·512) = 5 504; fc 512→10 5 130.
VGG11_CIFAR10 = 1_792 + 73_856 + 295_168 + 590_080 + 1_180_160 + 3 * 2_359_808 + 5_504 + 5_130  # = 9 231 114
# ResNet18: stem conv 3→64 1 728 + norm 128; stage 64: 4 convs 64→64 (36 864) + 4 norms (128) = 147 968;
# stage 128: 64→128 73 728, three 128→128 147 456, shortcut 1×1 64→128 8 192, 5 norms of 256 = 525 568;
# stage 256: 294 912 + 3·589 824 + 32 768 + 5·512 = 2 099 712; stage 512: 1 179 648 + 3·2 359 296
# + 131 072 + 5·1 024 = 8 393 728; fc 512→10 5 130.
RESNET18_CIFAR10 = 1_728 + 128 + 147_968 + 525_568 + 2_099_712 + 8_393_728 + 5_130  # = 11 173 962


@pytest.mark.parametrize("name,expected,total", [
    ("lenet", LENET_CIFAR10, 62_006), ("alexnet", ALEXNET_CIFAR10, 1_872_202),
    ("vgg11", VGG11_CIFAR10, 9_231_114), ("vgg11_bn", VGG11_CIFAR10, 9_231_114),
    ("resnet18", RESNET18_CIFAR10, 11_173_962), ("resnet18_bn", RESNET18_CIFAR10, 11_173_962)])
def test_parameter_counts_are_the_reference_networks(name, expected, total):
    assert expected == total                       # the hand sums above
    assert _count(create_model(name, CIFAR10)) == expected
    # MNIST: only the first conv sees 1 channel instead of 3 (same maps thanks to the reference's padding)
    first = {"lenet": (6, 5, True), "alexnet": (128, 5, True), "vgg11": (64, 3, True), "vgg11_bn": (64, 3, True),
             "resnet18": (64, 3, False), "resnet18_bn": (64, 3, False)}[name]
    saved = _conv(3, *first) - _conv(1, *first)
    assert _count(create_model(name, MNIST)) == expected - saved


def test_layer_building_blocks_follow_the_reference():
    assert [m.in_features for m in create_model("lenet", CIFAR10).modules() if isinstance(m, nn.Linear)] \
        == [16 * 5 * 5, 120, 84]
    for shape in (MNIST, CIFAR10):   # the reference pads 28×28 one-channel inputs to 32×32 maps
        assert create_model("lenet", shape).body[-4].in_features == 16 * 5 * 5
        assert create_model("alexnet", shape).embed_dim == 192 * 4 * 4
        assert create_model("vgg11", shape).embed_dim == 512
    assert create_model("vgg11", MNIST).body[0].padding == (3, 3)
    assert create_model("alexnet", MNIST).body[0].padding == (4, 4)
    assert create_model("lenet", MNIST).body[0].padding == (2, 2)
    convs = [m for m in create_model("alexnet", CIFAR10).modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.padding[0]) for c in convs] \
        == [(128, 5, 2), (192, 5, 2), (256, 3, 1), (192, 3, 1), (192, 3, 1)]
    convs = [m.out_channels for m in create_model("vgg11", CIFAR10).modules() if isinstance(m, nn.Conv2d)]
    assert convs == [64, 128, 256, 256, 512, 512, 512, 512]
    assert sum(isinstance(m, nn.MaxPool2d) for m in create_model("vgg11", CIFAR10).modules()) == 5
    resnet = create_model("resnet18", CIFAR10)
    assert all(c.bias is None for c in resnet.modules() if isinstance(c, nn.Conv2d))
    assert sum(isinstance(c, nn.Conv2d) for c in resnet.modules()) == 1 + 16 + 3   # stem, blocks, shortcuts


@pytest.mark.parametrize("name", ("vgg11", "resnet18"))
def test_instance_norm_is_groupnorm_per_channel(name):
    norms = [m for m in create_model(name, CIFAR10).modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_groups == m.num_channels and m.affine for m in norms)


def test_small_inputs_keep_maps_of_at_least_2x2_before_every_norm():
    """The suite's adaptation for 8×8 digits: no instance norm ever sees a 1×1 map."""
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for name in ("vgg11", "resnet18"):
        sides = []
        model = create_model(name, DIGITS)
        hooks = [m.register_forward_hook(lambda m, a, out: sides.append(a[0].shape[-1]))
                 for m in model.modules() if isinstance(m, nn.GroupNorm)]
        model(x)
        for hook in hooks:
            hook.remove()
        assert min(sides) == 2, name
    assert create_model("lenet", DIGITS).body[0].padding == (4, 4, 4, 4)   # 8×8 -> 16×16
    assert create_model("alexnet", DIGITS).embed_dim == 192


@pytest.mark.parametrize("name", NEW)
def test_init_is_deterministic_per_generator(name):
    first = create_model(name, DIGITS, torch.Generator().manual_seed(5)).state_dict()
    second = create_model(name, DIGITS, torch.Generator().manual_seed(5)).state_dict()
    third = create_model(name, DIGITS, torch.Generator().manual_seed(6)).state_dict()
    assert list(first) == list(second)
    assert all(torch.equal(first[k], second[k]) for k in first)
    weights = [k for k in first if first[k].dim() > 1]   # conv and linear weights: drawn from the generator
    assert weights and all(not torch.equal(first[k], third[k]) for k in weights)


@pytest.mark.parametrize("name", NEW)
def test_a_training_step_reduces_the_loss(name):
    shape = InputShape(3, 32, 4)
    model = create_model(name, shape, torch.Generator().manual_seed(0))
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 4
    before = nn.functional.cross_entropy(model(x), y)
    before.backward()
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    with torch.no_grad():
        after = nn.functional.cross_entropy(model(x), y)
    assert after < before.detach(), (before.item(), after.item())


def test_instance_norm_variants_have_no_batch_norm():
    for name in INSTANCE_NORM:
        for shape in (DIGITS, CIFAR10):
            assert not has_batch_norm(create_model(name, shape)), name
    assert has_batch_norm(create_model("vgg11_bn", CIFAR10))
    assert has_batch_norm(create_model("resnet18_bn", CIFAR10))
