"""Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021, "Dataset Condensation with
Differentiable Siamese Augmentation").

Every op is differentiable in the images (affine sampling, index gathers, masks and
arithmetic), so gradients reach synthetic images through the augmentation.  Strategy
``'color_crop_cutout_flip_scale_rotate'`` in the reference code's "S" mode: per call ONE
op group is drawn uniformly from the strategy (``color`` = brightness, then saturation,
then contrast), then its parameters are drawn.

* ``dsa_augment(x, generator)`` — each image gets its own parameters (the augmentation
  used when *training* on a condensed set: ``EvalRecipe.augment='dsa'``).
* ``dsa_siamese([real, syn], generator)`` — the *Siamese* mode used while condensing:
  one parameter draw shared by every image of every batch, so the real and the
  synthetic batch (of different sizes) see exactly the same transformation.  The
  reference code gets this by re-seeding the global RNG and copying the first image's
  parameters to the whole batch; here the generator state is replayed instead.

Parameters (``ParamDiffAug`` of the reference code) are the fields of :class:`DSAParams`.
All random draws come from the ``torch.Generator`` passed in (CPU), then move to the
images' device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"


@dataclass(frozen=True)
class DSAParams:
    """DSA reference defaults (``ParamDiffAug``)."""
    flip: float = 0.5          # probability of a horizontal flip
    scale: float = 1.2         # per-axis zoom factor drawn from [1/scale, scale]
    rotate: float = 15.0       # degrees, uniform in [-rotate, rotate]
    crop_pad: float = 0.125    # translation of up to round(size * crop_pad) px, zero fill
    cutout: float = 0.5        # a zeroed square of round(size * cutout) px per side
    brightness: float = 1.0    # add (u - 0.5) * brightness
    saturation: float = 2.0    # scale deviation from the channel mean by u * saturation
    contrast: float = 0.5      # scale deviation from the image mean by u + contrast


def _uniform(n: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """n uniform [0, 1) draws as an n×1×1×1 tensor on ``like``'s device and dtype."""
    return torch.rand(n, generator=generator).to(like.device, like.dtype).view(n, 1, 1, 1)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling of ``x`` by per-image (or one shared) 2×3 matrices, zero padding."""
    theta = theta.to(x.device, x.dtype).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _flip(x, n, generator, params):
    flip = _uniform(n, generator, x) < params.flip
    return torch.where(flip, x.flip(3), x)


def _scale(x, n, generator, params):
    low, high = 1.0 / params.scale, params.scale
    sx = torch.rand(n, generator=generator) * (high - low) + low
    sy = torch.rand(n, generator=generator) * (high - low) + low
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = sx, sy
    return _affine(x, theta)


def _rotate(x, n, generator, params):
    angle = (torch.rand(n, generator=generator) - 0.5) * 2 * params.rotate * math.pi / 180
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    return _affine(x, theta)


def _crop(x, n, generator, params):
    """Translate by integer (dy, dx) in [-s, s] with zero fill: out[i, j] = x[i + dy, j + dx]."""
    _, _, h, w = x.shape
    sy, sx = int(h * params.crop_pad + 0.5), int(w * params.crop_pad + 0.5)
    dy = torch.randint(-sy, sy + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(-sx, sx + 1, (n,), generator=generator).to(x.device)
    padded = F.pad(x, (sx, sx, sy, sy))
    rows = (torch.arange(h, device=x.device) + sy + dy[:, None]).expand(len(x), h)
    cols = (torch.arange(w, device=x.device) + sx + dx[:, None]).expand(len(x), w)
    batch = torch.arange(len(x), device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def _cutout(x, n, generator, params):
    """Zero a square of side round(size * cutout) centred at a random pixel (clipped at borders)."""
    _, _, h, w = x.shape
    ch, cw = int(h * params.cutout + 0.5), int(w * params.cutout + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n,), generator=generator).to(x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n,), generator=generator).to(x.device)
    top, left = cy - ch // 2, cx - cw // 2
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + ch)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + cw)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return x * keep[:, None].to(x.dtype)


def _color(x, n, generator, params):
    """Brightness, saturation, contrast in this order, each with its own draw."""
    x = x + (_uniform(n, generator, x) - 0.5) * params.brightness
    channel_mean = x.mean(dim=1, keepdim=True)
    x = (x - channel_mean) * (_uniform(n, generator, x) * params.saturation) + channel_mean
    image_mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - image_mean) * (_uniform(n, generator, x) + params.contrast) + image_mean


Op = Callable[[torch.Tensor, int, torch.Generator, DSAParams], torch.Tensor]
OPS: dict[str, Op] = {"color": _color, "crop": _crop, "cutout": _cutout, "flip": _flip,
                      "scale": _scale, "rotate": _rotate}


def parse_strategy(strategy: str) -> list[str]:
    """Op names of ``strategy`` ('a_b_c'); '' / 'none' means no augmentation."""
    if strategy.lower() in ("", "none"):
        return []
    names = strategy.split("_")
    unknown = [name for name in names if name not in OPS]
    if unknown:
        raise ValueError(f"unknown DSA op(s) {', '.join(unknown)} in strategy {strategy!r}; "
                         f"known: {', '.join(OPS)}")
    return names


def dsa_augment(x: torch.Tensor, generator: torch.Generator, params: DSAParams = DSAParams(),
                strategy: str = DEFAULT_STRATEGY, siamese: bool = False) -> torch.Tensor:
    """Apply one op group drawn from ``strategy`` to the batch ``x`` (N×C×H×W).

    ``siamese=False``: parameters drawn per image.  ``siamese=True``: one parameter draw
    shared by the whole batch; the draws then do not depend on the batch size, so
    replaying the same generator state on another batch repeats the transformation
    (see :func:`dsa_siamese`).
    """
    names = parse_strategy(strategy)
    if not names:
        return x
    name = names[int(torch.randint(len(names), (1,), generator=generator))]
    draws = 1 if siamese else len(x)
    return OPS[name](x, draws, generator, params).contiguous()


def dsa_siamese(batches: Sequence[torch.Tensor], generator: torch.Generator,
                params: DSAParams = DSAParams(), strategy: str = DEFAULT_STRATEGY) -> list[torch.Tensor]:
    """The same augmentation (op and parameters) on every batch — DSA's Siamese augmentation.

    The generator ends where a single ``dsa_augment(..., siamese=True)`` call leaves it.
    """
    state = generator.get_state()
    augmented = []
    for batch in batches:
        generator.set_state(state)
        augmented.append(dsa_augment(batch, generator, params, strategy, siamese=True))
    return augmented
