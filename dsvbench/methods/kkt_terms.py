"""The terms of the reconstruction regime of Haim et al. 2022 (*Reconstructing Training Data from
Trained Neural Networks*, NeurIPS 2022, §3-4 and their supplementary "implementation details"),
as options of the DeepKKT engine.  Each is a recipe field of :class:`.kkt_recipe.KKTRecipe`; the
defaults keep DSV's reading (plain ReLU, λ < 0 removed, no pixel penalty, no momentum).

* ``activation="smooth"``: θ*'s ReLUs are replaced, during synthesis only, by a ReLU whose
  backward is sigmoid(α·z) instead of the step 1[z > 0] (Haim et al., "modified ReLU").  The
  stationarity residual θ* + G depends on x through the ReLU masks of ∇θΦ; with the plain step
  those masks have a zero derivative, so ∇x of the residual sees only the activations, not which
  units are on.  The forward pass (and so every prediction) is unchanged.
* ``dual="floor"``: instead of removing candidates whose λ turns negative (DSV's Algorithm 1),
  every λ pays FLOOR_WEIGHT·max(0, floor − μ)² (Haim et al.'s dual-feasibility term, weight 5 in
  their code), so no candidate leaves and λ is kept away from 0.
* ``range_weight``: Σ max(0, x − hi)² + max(0, lo − x)² over the pixels (Haim et al.'s penalty
  keeping the reconstruction inside the data's range).
"""
from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = ("relu", "smooth")
DUALS = ("remove", "floor")
LAMBDA_INITS = ("ones", "uniform")
FLOOR_WEIGHT = 5.0   # Haim et al.'s weight of the λ floor penalty


class _SmoothBackwardReLU(torch.autograd.Function):
    """ReLU forward; backward g·sigmoid(α z), written in torch ops so that it is itself
    differentiable (the double backward of the stationarity loss goes through it)."""

    @staticmethod
    def forward(z: torch.Tensor, alpha: float) -> torch.Tensor:
        return z.clamp_min(0)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        z, alpha = inputs
        ctx.save_for_backward(z)
        ctx.alpha = alpha

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        z, = ctx.saved_tensors
        return grad * torch.sigmoid(ctx.alpha * z), None


class SmoothBackwardReLU(nn.Module):
    """ReLU whose backward is the sigmoid(α z) surrogate (Haim et al. 2022's modified ReLU)."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return _SmoothBackwardReLU.apply(z, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


def smooth_relus(model: nn.Module, alpha: float) -> int:
    """Replace every ``nn.ReLU`` module of ``model`` (in place) by :class:`SmoothBackwardReLU`;
    returns how many were replaced (0 means the model applies its ReLUs functionally)."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(module, name, SmoothBackwardReLU(alpha))
                replaced += 1
    return replaced


def floor_gradient(mu: torch.Tensor, floor: float) -> torch.Tensor:
    """∂/∂μ of FLOOR_WEIGHT·Σ max(0, floor − μ)²."""
    return -2.0 * FLOOR_WEIGHT * (floor - mu).clamp_min(0)


def range_penalty(images: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Σ max(0, x − high)² + max(0, low − x)² (``low``/``high`` broadcast over N×C×H×W)."""
    return (images - high).clamp_min(0).square().sum() + (low - images).clamp_min(0).square().sum()


def pixel_bounds(spec: str, mean: tuple[float, ...], std: tuple[float, ...], channels: int,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) of valid pixels in the units the candidates live in, shaped 1×C×1×1.

    ``data``: pixel values 0 and 1 through the dataset's normalization (x − mean)/std (mean 0,
    std 1 when the context has none); ``"lo,hi"``: those numbers in every channel (Haim et al.
    use −1,1 on mean-subtracted [0, 1] pixels)."""
    if spec == "data":
        m = torch.tensor(mean or (0.0,) * channels, dtype=torch.float32)
        s = torch.tensor(std or (1.0,) * channels, dtype=torch.float32)
        low, high = (0 - m) / s, (1 - m) / s
    else:
        lo, hi = parse_bounds(spec)
        low, high = torch.full((channels,), lo), torch.full((channels,), hi)
    return low.view(1, -1, 1, 1).to(device), high.view(1, -1, 1, 1).to(device)


def parse_bounds(spec: str) -> tuple[float, float]:
    """``"lo,hi"`` → (lo, hi) with lo < hi; ValueError otherwise."""
    try:
        lo, hi = (float(v) for v in spec.split(","))
    except ValueError:
        raise ValueError(f"range_bounds={spec!r}: 'data' or two numbers 'lo,hi'") from None
    if not lo < hi:
        raise ValueError(f"range_bounds={spec!r}: lo must be below hi")
    return lo, hi


def initial_multipliers(kind: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """μ at the start: ones (DSV) or U(0, 1) per candidate (Haim et al.), drawn from ``generator``."""
    if kind == "uniform":
        return torch.rand(n, generator=generator)
    return torch.ones(n)
