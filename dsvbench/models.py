"""Networks, chosen by name from a registry (docs/sources.md#networks).

``convnet`` is the dataset-condensation ConvNet: ``depth`` blocks of
conv3x3 -> norm -> ReLU -> pool 2x2, then one linear layer.  Instance norm is
``GroupNorm(width, width, affine=True)`` as in the DC reference code.  For 28x28
one-channel inputs the first conv uses padding 3 (maps become 32x32).  ``lenet``, ``alexnet``,
``vgg11``, ``resnet18`` (``_bn``: batch norm) are the rest of DC's cross-architecture table (Zhao et al.,
ICLR 2021, Table 2) as the DC reference code builds them; class docstrings say what 8×8 inputs change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


@dataclass(frozen=True)
class InputShape:
    channels: int
    size: int  # square images
    num_classes: int


def default_depth(size: int) -> int:
    """Blocks such that a spatial map of at least 2x2 is left before the linear layer.

    32x32 (and 28x28 padded to 32x32) -> 3 blocks (4x4 map), as in the DC literature;
    8x8 digits -> 2 blocks (2x2 map).
    """
    depth, side = 0, (32 if size == 28 else size)
    while side // 2 >= 2 and depth < 3:
        side //= 2
        depth += 1
    return max(depth, 1)


# Width of the ConvNet for small inputs (choice, documented): the DC literature's width 128 is
# sized for 32×32 maps.  On the 8×8 ``digits`` images a width-128 net costs 2.4 M multiply-adds per
# image (≈ 88 TFLOP for DC's published 1000 iterations × ~1 200 real images × 5 seeds — far beyond a
# 2-core CPU in minutes); width 16 costs 46 k and still fits the training set (θ* 100 % train).
# The same width serves θ*, every condensation network and every retraining on that dataset.
SMALL_INPUT_WIDTH = 16
SMALL_INPUT_SIDE = 8


def default_width(size: int) -> int:
    """128 (the DC ConvNet) except for inputs of at most 8×8 pixels (``digits``): 16."""
    return SMALL_INPUT_WIDTH if size <= SMALL_INPUT_SIDE else 128


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "instancenorm":
        return nn.GroupNorm(width, width, affine=True)
    if kind == "batchnorm":
        return nn.BatchNorm2d(width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; known: instancenorm, batchnorm, none")


class _LinearMap(torch.autograd.Function):
    """A linear map with nothing to save for its backward (its adjoint needs no inputs); written in
    torch ops, so ``vmap`` derives its batching rule."""
    generate_vmap_rule = True

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass


class _AvgPool2x2Function(_LinearMap):
    """2×2 / stride-2 average pooling written with strided views: (((a + b) + c) + d) / 4 in the
    order of ATen's CPU kernel.  Its backward is :class:`_Unpool2x2Function` (g / 4 copied into
    each window, as ``avg_pool2d_backward``), whose own backward is this pooling again (ATen's
    double-backward formula), so first and second derivatives are ATen's bit for bit (tested)."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return (((x[..., 0::2, 0::2] + x[..., 0::2, 1::2]) + x[..., 1::2, 0::2]) + x[..., 1::2, 1::2]) / 4

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _Unpool2x2Function.apply(grad)


class _Unpool2x2Function(_LinearMap):
    """The adjoint of 2×2 average pooling: each value / 4 into its 2×2 window (concatenations,
    3.5× faster than ATen's ``avg_pool2d_backward`` on 8×8 maps)."""

    @staticmethod
    def forward(grad: torch.Tensor) -> torch.Tensor:
        quarter = (grad / 4).unsqueeze(-1)
        rows = torch.cat([quarter, quarter], -1).flatten(-2).unsqueeze(-2)        # … × h × 1 × 2w
        return torch.cat([rows, rows], -2).flatten(-3, -2)                       # … × 2h × 2w

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return _AvgPool2x2Function.apply(grad)


# From this many input elements on, the strided-view pooling beats ATen's CPU kernel (measured
# forward + backward, one thread: 1 198×16×8×8 2.3 ms vs 4.5 ms; 200×16×8×8 0.53 vs 0.86 ms; but
# 50×16×8×8 0.26 vs 0.22 ms, where the Python of two autograd Functions costs more than it saves).
FAST_POOL_MIN_ELEMENTS = 1 << 17


class AvgPool2x2(nn.Module):
    """``nn.AvgPool2d(2, 2)`` with the same numbers; large CPU inputs (DC's and DD's real batches)
    go through :class:`_AvgPool2x2Function` — ATen's CPU kernels are not vectorized over 2×2
    windows of small maps."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type != "cpu" or x.numel() < FAST_POOL_MIN_ELEMENTS
                or x.shape[-1] % 2 or x.shape[-2] % 2):
            return F.avg_pool2d(x, 2, 2)
        return _AvgPool2x2Function.apply(x)


def _pool(kind: str) -> nn.Module:
    if kind == "avgpool":
        return AvgPool2x2()
    if kind == "maxpool":
        return nn.MaxPool2d(2, 2)
    raise ValueError(f"unknown pooling {kind!r}; known: avgpool, maxpool")


class ConvNet(nn.Module):
    """The DC ConvNet; ``features`` gives the penultimate (flattened) embedding."""

    def __init__(self, shape: InputShape, width: int | None = None, depth: int | None = None,
                 norm: str = "instancenorm", pooling: str = "avgpool"):
        super().__init__()
        depth = default_depth(shape.size) if depth is None else depth
        width = default_width(shape.size) if width is None else width
        layers: list[nn.Module] = []
        channels, side = shape.channels, shape.size
        for block in range(depth):
            padding = 3 if (block == 0 and shape.size == 28) else 1
            layers += [nn.Conv2d(channels, width, 3, padding=padding), _norm(norm, width),
                       nn.ReLU(inplace=True), _pool(pooling)]
            side = (side + 2 * padding - 2) // 2
            channels = width
        self.body = nn.Sequential(*layers)
        self.embed_dim = width * side * side
        self.classifier = nn.Linear(self.embed_dim, shape.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _Embedder(nn.Module):
    """``features`` = ``body`` (the flattened ``embed_dim``-wide embedding); ``forward`` =
    ``classifier(features(x))``."""

    def __init__(self, body: nn.Module, embed_dim: int, num_classes: int):
        super().__init__()
        self.body, self.embed_dim, self.classifier = body, embed_dim, nn.Linear(embed_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MLP(_Embedder):
    """Three-layer perceptron (two hidden ReLU layers), as in the DC literature's MLP."""

    def __init__(self, shape: InputShape, width: int = 128):
        super().__init__(nn.Sequential(
            nn.Flatten(), nn.Linear(shape.channels * shape.size ** 2, width), nn.ReLU(inplace=True),
            nn.Linear(width, width), nn.ReLU(inplace=True)), width, shape.num_classes)


def _mnist(shape: InputShape) -> bool:
    """28×28 one-channel inputs, whose first conv the DC reference pads more (as for 32×32)."""
    return shape.channels == 1 and shape.size == 28


class LeNet(_Embedder):
    """DC reference LeNet: conv 6@5×5 -> max-pool -> conv 16@5×5 -> max-pool -> linear 120 -> 84
    (the embedding) -> classes, ReLU after each but the last; the first conv pads by 2 on 28×28
    one-channel inputs.  Choice of this suite: inputs under 16×16 (8×8 ``digits``) are zero-padded,
    centred, to 16×16, the smallest side leaving a (1×1) map after the second pool."""

    def __init__(self, shape: InputShape):
        frame, pad = max(0, -(-(16 - shape.size) // 2)), (2 if _mnist(shape) else 0)
        side = ((shape.size + 2 * frame + 2 * pad - 4) // 2 - 4) // 2
        super().__init__(nn.Sequential(
            *([nn.ZeroPad2d(frame)] if frame else []),
            nn.Conv2d(shape.channels, 6, 5, padding=pad), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2, 2), nn.Flatten(),
            nn.Linear(16 * side * side, 120), nn.ReLU(inplace=True), nn.Linear(120, 84), nn.ReLU(inplace=True)),
            84, shape.num_classes)


class AlexNet(_Embedder):
    """DC reference AlexNet, no normalization: conv 128@5×5 (padding 2; 4 on 28×28 one-channel
    inputs) -> max-pool -> conv 192@5×5 -> max-pool -> conv 256, 192, 192 @3×3 -> max-pool, ReLU
    after each conv, 'same' padding after the first; linear on 192·4·4 (32×32, 28×28 inputs);
    8×8 inputs need no change (1×1 map, 192-d embedding)."""

    def __init__(self, shape: InputShape):
        pad, layers = (4 if _mnist(shape) else 2), []
        for cin, cout, k, p, pool in ((shape.channels, 128, 5, pad, 1), (128, 192, 5, 2, 1),
                                      (192, 256, 3, 1, 0), (256, 192, 3, 1, 0), (192, 192, 3, 1, 1)):
            layers += [nn.Conv2d(cin, cout, k, padding=p), nn.ReLU(inplace=True)] + [nn.MaxPool2d(2, 2)] * pool
        super().__init__(nn.Sequential(*layers, nn.Flatten()), 192 * ((shape.size + 2 * pad - 4) // 8) ** 2,
                         shape.num_classes)


VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(_Embedder):
    """DC reference VGG11: ``VGG11_LAYERS`` (conv 3×3 -> norm -> ReLU; 'M' 2×2 max-pool), linear on
    the 512 channels of a 1×1 map; the first conv pads by 3 on 28×28 one-channel inputs (maps become
    32×32); the reference's closing 1×1 average pool (an identity) is left out.  Choice of this suite:
    no pool but the last leaves a map under 2×2 (instance norm of a 1×1 map is constant: the net
    would ignore its input); others are skipped (8×8 inputs: the third and fourth)."""

    def __init__(self, shape: InputShape, norm: str = "instancenorm"):
        layers: list[nn.Module] = []
        channels, side = shape.channels, shape.size
        for i, item in enumerate(VGG11_LAYERS):
            if item == "M":
                if side >= (2 if i == len(VGG11_LAYERS) - 1 else 4):
                    layers, side = layers + [nn.MaxPool2d(2, 2)], side // 2
            else:
                pad = 3 if (i == 0 and _mnist(shape)) else 1
                layers += [nn.Conv2d(channels, item, 3, padding=pad), _norm(norm, item), nn.ReLU(inplace=True)]
                channels, side = item, side + 2 * pad - 2
        super().__init__(nn.Sequential(*layers, nn.Flatten()), channels * side * side, shape.num_classes)


class BasicBlock(nn.Module):
    """ResNet block: ReLU(norm(conv 3×3(ReLU(norm(conv 3×3, stride(x))))) + shortcut(x)), convs
    without bias; the shortcut is conv 1×1 (stride) -> norm when the stride or width changes."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), _norm(norm, cout)
        self.conv2, self.norm2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), _norm(norm, cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))
                         if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x))))) + self.shortcut(x))


class ResNet18(_Embedder):
    """DC reference ResNet18 (``BasicBlock`` ×[2, 2, 2, 2]): small-image stem (conv 3×3 stride 1 ->
    norm -> ReLU, 64 channels, no max-pool), stages of 64, 128, 256, 512 channels (stride 2 from the
    second), average pooling (the reference's 4×4: the whole final map of 32×32 and 28×28 inputs),
    linear on 512.  Choices of this suite: the pool takes the whole final map, and a stage keeps stride
    1 on a 2×2 map (instance norm of 1×1 is constant), so 8×8 inputs end on 2×2 (strides 1, 2, 2, 1)."""

    def __init__(self, shape: InputShape, norm: str = "instancenorm"):
        layers: list[nn.Module] = [nn.Conv2d(shape.channels, 64, 3, 1, 1, bias=False), _norm(norm, 64),
                                   nn.ReLU(inplace=True)]
        side = shape.size
        for stage, width in enumerate((64, 128, 256, 512)):
            stride = 2 if stage and side > 2 else 1
            layers += [BasicBlock(64 if stage == 0 else width // 2, width, stride, norm),
                       BasicBlock(width, width, 1, norm)]
            side = -(-side // stride)   # conv 3×3, padding 1
        super().__init__(nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()), 512, shape.num_classes)


@MODELS.register("convnet")
def convnet(shape: InputShape) -> nn.Module:
    """DC ConvNet: width 128 (16 on 8×8 inputs, see ``default_width``), instance norm, average pooling."""
    return ConvNet(shape)


@MODELS.register("convnet_bn")
def convnet_bn(shape: InputShape) -> nn.Module:
    """ConvNet with batch norm instead of instance norm."""
    return ConvNet(shape, norm="batchnorm")


@MODELS.register("convnet_nonorm")
def convnet_nonorm(shape: InputShape) -> nn.Module:
    """ConvNet with no normalization layer."""
    return ConvNet(shape, norm="none")


@MODELS.register("convnet_maxpool")
def convnet_maxpool(shape: InputShape) -> nn.Module:
    """ConvNet with max pooling, as the DSV paper describes its pretraining network."""
    return ConvNet(shape, pooling="maxpool")


@MODELS.register("convnet_dsv")
def convnet_dsv(shape: InputShape) -> nn.Module:
    """θ* of the DSV paper: conv layers followed by max pooling and one linear layer, no
    normalization (NeurIPS version, Implementation Details) — every parameter can then carry the
    stationarity of Eq. 6 (no scale-invariant weights, see ``dsvbench.methods.deepkkt``)."""
    return ConvNet(shape, norm="none", pooling="maxpool")


@MODELS.register("mlp")
def mlp(shape: InputShape) -> nn.Module:
    """Two hidden layers of 128 units."""
    return MLP(shape)


@MODELS.register("convnet_tiny")
def convnet_tiny(shape: InputShape) -> nn.Module:
    """A width-8 ConvNet for fast tests."""
    return ConvNet(shape, width=8)


@MODELS.register("lenet")
def lenet(shape: InputShape) -> nn.Module:
    """DC reference LeNet (no norm); 8×8 inputs zero-padded to 16×16."""
    return LeNet(shape)


@MODELS.register("alexnet")
def alexnet(shape: InputShape) -> nn.Module:
    """DC reference AlexNet (no norm)."""
    return AlexNet(shape)


@MODELS.register("vgg11")
def vgg11(shape: InputShape) -> nn.Module:
    """DC reference VGG11, instance norm; 8×8 inputs skip pools (maps stay ≥ 2×2)."""
    return VGG11(shape)


@MODELS.register("vgg11_bn")
def vgg11_bn(shape: InputShape) -> nn.Module:
    """DC reference VGG11BN: VGG11 with batch norm."""
    return VGG11(shape, norm="batchnorm")


@MODELS.register("resnet18")
def resnet18(shape: InputShape) -> nn.Module:
    """DC reference ResNet18, instance norm; 8×8 inputs keep a 2×2 final map."""
    return ResNet18(shape)


@MODELS.register("resnet18_bn")
def resnet18_bn(shape: InputShape) -> nn.Module:
    """DC reference ResNet18BN: ResNet18 with batch norm."""
    return ResNet18(shape, norm="batchnorm")

_PER_IMAGE_BYTES: dict[tuple, int] = {}


def activation_bytes(net: nn.Module, image: torch.Tensor) -> int:
    """Bytes of every module's output for one image (measured once per architecture and input shape
    with a no-grad forward in eval mode, every module's train/eval state restored after)."""
    key = (type(net).__name__, sum(p.numel() for p in net.parameters()), tuple(image.shape), image.dtype)
    if key not in _PER_IMAGE_BYTES:
        sizes = []
        hooks = [m.register_forward_hook(lambda m, a, out: sizes.append(out.numel() * out.element_size()))
                 for m in net.modules() if not list(m.children())]
        modes = {m: m.training for m in net.modules()}
        try:
            net.eval()
            with torch.no_grad():
                net(image)
        finally:
            for hook in hooks:
                hook.remove()
            for module, training in modes.items():
                module.training = training
        _PER_IMAGE_BYTES[key] = sum(sizes)
    return _PER_IMAGE_BYTES[key]


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` normalizes with batch statistics (its output for one example depends on the batch)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def create_model(name: str, shape: InputShape, generator: torch.Generator | None = None) -> nn.Module:
    """Build model ``name``; with ``generator`` the initialization is deterministic.

    Parameters are re-initialized with torch's default schemes drawn from ``generator``
    (``torch.nn.init`` accepts a generator), so no global seed is touched.
    """
    model = MODELS.get(name)(shape)
    if generator is not None:
        _reset_parameters(model, generator)
    return model


def _reset_parameters(model: nn.Module, generator: torch.Generator) -> None:
    """Default PyTorch init (kaiming-uniform a=sqrt(5) weights, fan-in uniform bias) from a generator."""
    import math
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5), generator=generator)
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                bound = 1 / math.sqrt(fan_in)
                nn.init.uniform_(module.bias, -bound, bound, generator=generator)
