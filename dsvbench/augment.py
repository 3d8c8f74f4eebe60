"""Every augmentation of the suite, all randomness from a ``torch.Generator``, in two steps.

* ``flip_crop`` / ``crop`` — random crop with zero padding (= the mean in normalized
  space; pad = size/8, i.e. 4 px on 32×32) and horizontal flip: the paper's pretraining
  and SAM retraining augmentation.
* ``dc`` — the DC reference code's MNIST augmentation (``utils.get_daparam``: strategy
  'crop_scale_rotate'): per image one of crop (4 px), scale (±0.2), rotate (±45°).
  ``dc_noise`` adds the noise option (σ 0.001) to the draw ('crop_scale_rotate_noise', the
  suite's earlier ``dc``); ``dc_crop_noise`` is the reference's strategy for a batch-norm
  ConvNet.  Vectorized with affine sampling (bilinear) instead of scipy's spline rotation;
  pixel amounts scale with size/28.
* ``dsa`` — Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021): per call one op
  group of the strategy (default ``color_crop_cutout_flip_scale_rotate``, the reference code's
  "S" mode; ``color`` = brightness, then saturation, then contrast), then its parameters.
  :func:`dsa_augment` draws per image (training on a condensed set, ``EvalRecipe.augment='dsa'``);
  :func:`dsa_siamese` draws once and applies the same transformation to every batch — the real
  and the synthetic batch of DC's matching step (the reference code re-seeds the global RNG and
  copies the first image's parameters; here one draw of one image's parameters is broadcast).
  Every op is differentiable in the images (affine sampling, index gathers, masks, arithmetic).
* :func:`manifold_draw` / :func:`manifold_apply` — DeepKKT's A(X) for the manifold term.

Each kind is split in two: :func:`draw` takes the random parameters of a batch from a
``torch.Generator`` (on the generator's device, in bulk, in a fixed order) and :func:`apply` is a
pure function of the batch and those parameters — so a population of networks, each with its own
generator, draws per network and augments all batches in one call, and a Siamese pair shares one draw.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

# DC reference ``get_daparam``: crop 4 px (of 28), scale ±0.2, rotate ±45°, noise σ 0.001; the ops
# of each DC strategy, by the op codes of :func:`_dc` (0 crop, 1 scale, 2 rotate, 3 noise)
DC_CROP, DC_SCALE, DC_ROTATE, DC_NOISE = 4, 0.2, 45, 0.001
DC_STRATEGIES = {"dc": (0, 1, 2), "dc_noise": (0, 1, 2, 3), "dc_crop_noise": (0, 3)}
# DSA's strategies as augmentation kinds: ``dsa`` = its default; ``dsa_noflip`` = the one the DC/DSA
# reference README gives for digit datasets (MNIST, SVHN: "flip augmentation is not good for digits")
DSA_KINDS = {"dsa": "color_crop_cutout_flip_scale_rotate", "dsa_noflip": "color_crop_cutout_scale_rotate"}
AUGMENTATIONS = ("none", "flip_crop", "crop", *DC_STRATEGIES, *DSA_KINDS)


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
    if kind in DSA_KINDS:
        return dsa_draw(n, shape, generator, DSA_KINDS[kind])
    if kind in ("flip_crop", "crop"):
        pad = crop_pad(shape[-1])
        params = {"top": _randint(0, 2 * pad + 1, (n,), generator),
                  "left": _randint(0, 2 * pad + 1, (n,), generator)}
        if kind == "flip_crop":
            params["flip"] = torch.rand(n, generator=generator, device=generator.device) < 0.5
        return params
    if kind in DC_STRATEGIES:
        ops = DC_STRATEGIES[kind]
        crop_px = DC_CROP * h / 28.0
        op = torch.tensor(ops, device=generator.device)[_randint(0, len(ops), (n,), generator)]
        shift = (_randint(0, max(int(2 * crop_px), 1), (n, 2), generator).float() - crop_px) * 2.0 / h
        zoom = _uniform(n * 2, 1 - DC_SCALE, 1 + DC_SCALE, generator).view(n, 2)
        angle = _randint(-int(DC_ROTATE), int(DC_ROTATE), (n,), generator).float() * math.pi / 180
        params = {"op": op, "shift": shift, "zoom": zoom, "angle": angle}
        if 3 in ops:
            params["jitter"] = DC_NOISE * torch.randn(tuple(shape), generator=generator, device=generator.device)
        return params
    raise ValueError(f"unknown augmentation {kind!r}; known: {', '.join(AUGMENTATIONS)}")


def merge(parameters: list[Params]) -> Params:
    """The parameters of several batches as those of their concatenation."""
    return {k: torch.cat([p[k] for p in parameters]) for k in parameters[0]} if parameters else {}


# ----- apply: a pure function of the batch and its parameters -----------------------------------
def apply(x: torch.Tensor, kind: str, params: Params) -> torch.Tensor:
    """Augmentation ``kind`` with the drawn ``params`` (differentiable in ``x``)."""
    if kind == "none":
        return x
    if kind in DSA_KINDS:
        return dsa_apply(x, params)
    params = {k: v.to(x.device) for k, v in params.items()}
    if kind in ("flip_crop", "crop"):
        out = _crop(x, crop_pad(x.shape[-1]), params["top"], params["left"])
        return torch.where(params["flip"][:, None, None, None], out.flip(3), out) if kind == "flip_crop" else out
    if kind in DC_STRATEGIES:
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
    """One DC op per image (crop as an integer translation, scale, rotate, noise by op code)."""
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
    if "jitter" not in params:
        return out
    is_noise = (op == 3)[:, None, None, None]
    return torch.where(is_noise, x + params["jitter"].to(x.dtype), out)


def augment(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Apply augmentation ``kind`` (one of ``AUGMENTATIONS``) to a batch: draw, then apply."""
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


# ----- DSA --------------------------------------------------------------------------------------
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DSA_OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


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


def parse_strategy(strategy: str) -> list[str]:
    """Op names of ``strategy`` ('a_b_c'); '' / 'none' means no augmentation."""
    if strategy.lower() in ("", "none"):
        return []
    names = strategy.split("_")
    unknown = [name for name in names if name not in DSA_OPS]
    if unknown:
        raise ValueError(f"unknown DSA op(s) {', '.join(unknown)} in strategy {strategy!r}; "
                         f"known: {', '.join(DSA_OPS)}")
    return names


def _dsa_crop_shift(h: int, w: int, params: DSAParams) -> tuple[int, int]:
    """Largest translation (rows, columns) of DSA's crop: round(size · crop_pad) px."""
    return int(h * params.crop_pad + 0.5), int(w * params.crop_pad + 0.5)


def _dsa_cutout_size(h: int, w: int, params: DSAParams) -> tuple[int, int]:
    """Side (rows, columns) of DSA's cutout square: round(size · cutout) px."""
    return int(h * params.cutout + 0.5), int(w * params.cutout + 0.5)


def dsa_draw(n: int, shape: tuple[int, ...] | torch.Size, generator: torch.Generator,
             strategy: str = DEFAULT_STRATEGY, params: DSAParams = DSAParams()) -> Params:
    """One op group of ``strategy``, then its parameters for n images (n = 1: one draw that
    :func:`dsa_apply` broadcasts to a whole batch), on the generator's device.  The keys name the
    op: ``flip``; ``theta`` (scale, rotate); ``dy``/``dx`` (crop); ``cy``/``cx`` (cutout);
    ``brightness``/``saturation``/``contrast`` (color, three uniforms)."""
    names = parse_strategy(strategy)
    if not names:
        return {}
    rand = lambda: torch.rand(n, generator=generator, device=generator.device)  # noqa: E731
    name = names[int(torch.randint(len(names), (1,), generator=generator, device=generator.device))]
    _, _, h, w = shape
    if name == "flip":
        return {"flip": rand() < params.flip}
    if name in ("scale", "rotate"):
        theta = torch.zeros(n, 2, 3, device=generator.device)
        if name == "scale":
            low, high = 1.0 / params.scale, params.scale
            sx = rand() * (high - low) + low
            theta[:, 0, 0], theta[:, 1, 1] = sx, rand() * (high - low) + low
        else:
            angle = (rand() - 0.5) * 2 * params.rotate * math.pi / 180
            cos, sin = torch.cos(angle), torch.sin(angle)
            theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        return {"theta": theta}
    if name == "crop":
        sy, sx = _dsa_crop_shift(h, w, params)
        dy = _randint(-sy, sy + 1, (n,), generator)
        return {"dy": dy, "dx": _randint(-sx, sx + 1, (n,), generator)}
    if name == "cutout":
        ch, cw = _dsa_cutout_size(h, w, params)
        cy = _randint(0, h + (1 - ch % 2), (n,), generator)
        return {"cy": cy, "cx": _randint(0, w + (1 - cw % 2), (n,), generator)}
    brightness = rand()
    saturation = rand()
    return {"brightness": brightness, "saturation": saturation, "contrast": rand()}


def dsa_apply(x: torch.Tensor, drawn: Params, params: DSAParams = DSAParams()) -> torch.Tensor:
    """The DSA op of ``drawn`` (:func:`dsa_draw`) on the batch ``x`` (N×C×H×W), differentiable in ``x``."""
    if not drawn:
        return x
    drawn = {k: v.to(x.device) for k, v in drawn.items()}
    _, _, h, w = x.shape
    if "flip" in drawn:
        out = torch.where(drawn["flip"].view(-1, 1, 1, 1), x.flip(3), x)
    elif "theta" in drawn:
        theta = drawn["theta"].to(x.dtype).expand(len(x), 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    elif "dy" in drawn:   # integer translation with zero fill: out[i, j] = x[i + dy, j + dx]
        sy, sx = _dsa_crop_shift(h, w, params)
        padded = F.pad(x, (sx, sx, sy, sy))
        rows = (torch.arange(h, device=x.device) + sy + drawn["dy"][:, None]).expand(len(x), h)
        cols = (torch.arange(w, device=x.device) + sx + drawn["dx"][:, None]).expand(len(x), w)
        batch = torch.arange(len(x), device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    elif "cy" in drawn:   # a zeroed square centred at (cy, cx), clipped at the borders
        ch, cw = _dsa_cutout_size(h, w, params)
        top, left = drawn["cy"] - ch // 2, drawn["cx"] - cw // 2
        rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
        in_rows = (rows >= top[:, None]) & (rows < top[:, None] + ch)
        in_cols = (cols >= left[:, None]) & (cols < left[:, None] + cw)
        out = x * (~(in_rows[:, :, None] & in_cols[:, None, :]))[:, None].to(x.dtype)
    else:                 # color: brightness, saturation, contrast in this order
        u = {k: v.to(x.dtype).view(-1, 1, 1, 1) for k, v in drawn.items()}
        out = x + (u["brightness"] - 0.5) * params.brightness
        channel_mean = out.mean(dim=1, keepdim=True)
        out = (out - channel_mean) * (u["saturation"] * params.saturation) + channel_mean
        image_mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - image_mean) * (u["contrast"] + params.contrast) + image_mean
    return out.contiguous()


def dsa_augment(x: torch.Tensor, generator: torch.Generator, params: DSAParams = DSAParams(),
                strategy: str = DEFAULT_STRATEGY, siamese: bool = False) -> torch.Tensor:
    """One op group drawn from ``strategy`` on the batch ``x``: parameters per image, or with
    ``siamese=True`` one draw shared by the whole batch."""
    return dsa_apply(x, dsa_draw(1 if siamese else len(x), x.shape, generator, strategy, params), params)


def dsa_siamese(batches: Sequence[torch.Tensor], generator: torch.Generator,
                params: DSAParams = DSAParams(), strategy: str = DEFAULT_STRATEGY) -> list[torch.Tensor]:
    """The same augmentation (op and parameters: one draw) on every batch — DSA's Siamese
    augmentation; the batches must share their height and width."""
    drawn = dsa_draw(1, batches[0].shape, generator, strategy, params)
    return [dsa_apply(batch, drawn, params) for batch in batches]
