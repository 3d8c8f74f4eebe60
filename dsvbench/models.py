"""Networks, chosen by name from a registry (docs/sources.md#networks).

``convnet`` is the dataset-condensation ConvNet: ``depth`` blocks of
conv3x3 -> norm -> ReLU -> pool 2x2, then one linear layer.  Instance norm is
``GroupNorm(width, width, affine=True)`` as in the DC reference code.  For 28x28
one-channel inputs the first conv uses padding 3 (maps become 32x32).
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


class MLP(nn.Module):
    """Three-layer perceptron (two hidden ReLU layers), as in the DC literature's MLP."""

    def __init__(self, shape: InputShape, width: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(shape.channels * shape.size ** 2, width), nn.ReLU(inplace=True),
            nn.Linear(width, width), nn.ReLU(inplace=True))
        self.embed_dim = width
        self.classifier = nn.Linear(width, shape.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


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
