"""Training-time augmentations on batched tensors, all randomness from a ``torch.Generator``.

* ``flip_crop`` / ``crop`` — random crop with zero padding (= the mean in normalized
  space; pad = size/8, i.e. 4 px on 32×32) and horizontal flip: the paper's pretraining
  and SAM retraining augmentation.
* ``dc`` — the DC reference code's MNIST augmentation: per image one of crop (4 px),
  scale (±0.2), rotate (±45°), noise (σ 0.001).  Vectorized with affine sampling
  (bilinear) instead of scipy's spline rotation; pixel amounts scale with size/28.
* ``dsa`` — differentiable Siamese augmentation, see :mod:`dsvbench.dsa`.
* :func:`manifold_draw` / :func:`manifold_apply` — DeepKKT's A(X) for the manifold term.

Every kind but ``dsa`` is split in two: :func:`draw` takes the random parameters of a batch
from a ``torch.Generator`` (on the generator's device, in bulk) and :func:`apply` is a pure
function of the batch and those parameters — so a population of networks, each with its own
generator, draws per network and augments all batches in one call.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("none", "flip_crop", "crop", "dc", "dsa")
# DC reference ``get_daparam`` for MNIST: crop 4 px (of 28), scale ±0.2, rotate ±45°, noise σ 0.001
DC_CROP, DC_SCALE, DC_ROTATE, DC_NOISE = 4, 0.2, 45, 0.001


Params = dict[str, torch.Tensor]


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=generator.device)


def _randint(low: int, high: int, size: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randint(low, high, size, generator=generator, device=generator.device)


def crop_pad(size: int) -> int:
    """Zero padding of the random crop: size/8 (4 px on 32×32), at least 1."""
    return max(size // 8, 1)


# ----- draw: the random parameters of a batch, from the generator, in one go ------------------
def draw(kind: str, shape: tuple[int, ...] | torch.Size, generator: torch.Generator) -> Params:
    """The random parameters of augmentation ``kind`` for a batch of ``shape`` (N×C×H×W), drawn
    from ``generator`` (on the generator's device) in a fixed order."""
    n, _, h, _ = shape
    if kind == "none":
        return {}
    if kind in ("flip_crop", "crop"):
        pad = crop_pad(shape[-1])
        params = {"top": _randint(0, 2 * pad + 1, (n,), generator),
                  "left": _randint(0, 2 * pad + 1, (n,), generator)}
        if kind == "flip_crop":
            params["flip"] = torch.rand(n, generator=generator, device=generator.device) < 0.5
        return params
    if kind == "dc":
        crop_px = DC_CROP * h / 28.0
        op = _randint(0, 4, (n,), generator)
        shift = (_randint(0, max(int(2 * crop_px), 1), (n, 2), generator).float() - crop_px) * 2.0 / h
        zoom = _uniform(n * 2, 1 - DC_SCALE, 1 + DC_SCALE, generator).view(n, 2)
        angle = _randint(-int(DC_ROTATE), int(DC_ROTATE), (n,), generator).float() * math.pi / 180
        jitter = DC_NOISE * torch.randn(tuple(shape), generator=generator, device=generator.device)
        return {"op": op, "shift": shift, "zoom": zoom, "angle": angle, "jitter": jitter}
    raise ValueError(f"unknown augmentation {kind!r}; known: {', '.join(AUGMENTATIONS)}")


def merge(parameters: list[Params]) -> Params:
    """The parameters of several batches as those of their concatenation."""
    return {k: torch.cat([p[k] for p in parameters]) for k in parameters[0]} if parameters else {}


# ----- apply: a pure function of the batch and its parameters -----------------------------------
def apply(x: torch.Tensor, kind: str, params: Params) -> torch.Tensor:
    """Augmentation ``kind`` with the drawn ``params`` (differentiable in ``x``)."""
    if kind == "none":
        return x
    params = {k: v.to(x.device) for k, v in params.items()}
    if kind in ("flip_crop", "crop"):
        out = _crop(x, crop_pad(x.shape[-1]), params["top"], params["left"])
        return torch.where(params["flip"][:, None, None, None], out.flip(3), out) if kind == "flip_crop" else out
    if kind == "dc":
        return _dc(x, params)
    raise ValueError(f"unknown augmentation {kind!r}; known: {', '.join(AUGMENTATIONS)}")


def _crop(x: torch.Tensor, pad: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """Zero-pad by ``pad`` and cut the window at (top, left) of the original size per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def _dc(x: torch.Tensor, params: Params) -> torch.Tensor:
    """DC's 'crop_scale_rotate_noise': one op per image (crop as an integer translation)."""
    op, shift, zoom, angle = params["op"], params["shift"], params["zoom"], params["angle"]
    n = len(x)
    is_crop, is_scale, is_rot = (op == 0)[:, None], (op == 1)[:, None], (op == 2)[:, None]
    one, zero = torch.ones(n, device=x.device), torch.zeros(n, device=x.device)
    cos, sin = torch.cos(angle), torch.sin(angle)
    a = torch.where(is_scale[:, 0], 1.0 / zoom[:, 0], torch.where(is_rot[:, 0], cos, one))
    b = torch.where(is_rot[:, 0], -sin, zero)
    c = torch.where(is_rot[:, 0], sin, zero)
    d = torch.where(is_scale[:, 0], 1.0 / zoom[:, 1], torch.where(is_rot[:, 0], cos, one))
    tx = torch.where(is_crop[:, 0], shift[:, 0], zero)
    ty = torch.where(is_crop[:, 0], shift[:, 1], zero)
    theta = torch.stack([torch.stack([a, b, tx], 1), torch.stack([c, d, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    is_noise = (op == 3)[:, None, None, None]
    return torch.where(is_noise, x + params["jitter"].to(x.dtype), out)


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Apply augmentation ``kind`` (one of ``AUGMENTATIONS``) to a batch: draw, then apply."""
    if kind == "dsa":
        from .dsa import dsa_augment
        return dsa_augment(x, generator)
    return apply(x, kind, draw(kind, x.shape, generator))


def manifold_draw(n: int, generator: torch.Generator) -> torch.Tensor:
    """The parameters of :func:`manifold_apply` for n images: one bulk draw of 6 uniforms in [-1, 1)."""
    return torch.rand(n, 6, generator=generator, device=generator.device) * 2 - 1


def manifold_apply(x: torch.Tensor, u: torch.Tensor, flip: bool, shift: float, scale: float,
                   brightness: float, contrast: float) -> torch.Tensor:
    """Differentiable A(X) of DeepKKT's manifold term: per image a random translation (up to
    ``shift``·size), zoom (1 ± ``scale``), optional horizontal flip, brightness (± ``brightness``,
    normalized units) and contrast (1 ± ``contrast``), from the drawn ``u`` (n×6)."""
    u = u.to(x.device, x.dtype)
    zoom = 1 + scale * u[:, 2]
    sign = torch.where(u[:, 3] < 0, -1.0, 1.0).to(x.dtype) if flip else torch.ones_like(zoom)
    zero = torch.zeros_like(zoom)
    theta = torch.stack([torch.stack([zoom * sign, zero, 2 * shift * u[:, 0]], 1),
                         torch.stack([zero, zoom, 2 * shift * u[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * (1 + contrast * u[:, 4]).view(-1, 1, 1, 1) + mean
    return out + brightness * u[:, 5].view(-1, 1, 1, 1)

