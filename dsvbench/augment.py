"""Training-time augmentations on batched tensors, all randomness from a ``torch.Generator``.

* ``flip_crop`` / ``crop`` — random crop with zero padding (= the mean in normalized
  space; pad = size/8, i.e. 4 px on 32×32) and horizontal flip: the paper's pretraining
  and SAM retraining augmentation.
* ``dc`` — the DC reference code's MNIST augmentation: per image one of crop (4 px),
  scale (±0.2), rotate (±45°), noise (σ 0.001).  Vectorized with affine sampling
  (bilinear) instead of scipy's spline rotation; pixel amounts scale with size/28.
* ``dsa`` — differentiable Siamese augmentation, see :mod:`dsvbench.dsa`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "flip_crop", "crop", "dc", "dsa")


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` and cut a random window of the original size per image."""
    if pad <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    top = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    left = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    flip = (torch.rand(len(x), generator=generator) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def dc_augment(x: torch.Tensor, generator: torch.Generator, crop: float = 4, scale: float = 0.2,
               rotate: float = 45, noise: float = 0.001) -> torch.Tensor:
    """DC's 'crop_scale_rotate_noise': one op drawn per image, as in the reference ``augment``."""
    n, _, h, _ = x.shape
    crop_px = crop * h / 28.0
    op = torch.randint(0, 4, (n,), generator=generator)
    shift = (torch.randint(0, max(int(2 * crop_px), 1), (n, 2), generator=generator).float()
             - crop_px) * 2.0 / h                                # crop: integer shift, as a translation
    zoom = _uniform(n * 2, 1 - scale, 1 + scale, generator).view(n, 2)
    angle = torch.randint(-int(rotate), int(rotate), (n,), generator=generator).float() * math.pi / 180
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    is_crop, is_scale, is_rot = op == 0, op == 1, op == 2
    theta[is_crop, :, 2] = shift[is_crop]
    theta[is_scale, 0, 0] = 1.0 / zoom[is_scale, 0]
    theta[is_scale, 1, 1] = 1.0 / zoom[is_scale, 1]
    cos, sin = torch.cos(angle[is_rot]), torch.sin(angle[is_rot])
    theta[is_rot, 0, 0], theta[is_rot, 0, 1] = cos, -sin
    theta[is_rot, 1, 0], theta[is_rot, 1, 1] = sin, cos
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    is_noise = (op == 3).to(x.device)[:, None, None, None]
    jitter = noise * torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    return torch.where(is_noise, x + jitter, out)


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Apply augmentation ``kind`` (one of ``AUGMENTATIONS``) to a batch."""
    if kind == "none":
        return x
    if kind in ("flip_crop", "crop"):
        out = random_crop(x, max(x.shape[-1] // 8, 1), generator)
        return random_flip(out, generator) if kind == "flip_crop" else out
    if kind == "dc":
        return dc_augment(x, generator)
    if kind == "dsa":
        from .dsa import dsa_augment
        return dsa_augment(x, generator)
    raise ValueError(f"unknown augmentation {kind!r}; known: {', '.join(AUGMENTATIONS)}")
