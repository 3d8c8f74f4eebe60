"""Scores of a training-data reconstruction (``dsvbench.reconstruction``).

* Haim et al. 2022 / Buzaglo et al. 2023: for each training image, its nearest candidate by
  normalised cross-correlation (both sides downsampled ×½ bicubic first where the side is at
  least 16, their ``ncc2`` search), then the SSIM between the training image and that candidate
  (the dataset mean added back, the candidate min-max scaled to [0, 1]); a training image counts
  as reconstructed when SSIM > 0.4.  SSIM with a 3×3 Gaussian window (σ 1.5) averaged over the
  map, as their evaluation calls it.
  Its chance references: the same count with held-out real images (as many as there are
  candidates) or Gaussian noise in the place of the candidates.
* Calibrated by held-out images: the share of candidates nearer to a training image than 95 %
  of the held-out images are (held-out images score 0.05 by construction, noise ≈ 0).
* Chance-calibrated: the share of candidates whose NCC-nearest real image, searched over the
  training images and held-out images of the same classes, is a training image.  Noise and
  held-out digits score the share of training images in the search set (≈ chance), so the score
  says how much the candidates are *training* images rather than digit-like ones.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .images import cell_pixels, write_png

SSIM_THRESHOLD = 0.4
SSIM_WINDOW, SSIM_SIGMA = 3, 1.5
C1, C2 = 0.01 ** 2, 0.03 ** 2


def standardize(images: torch.Tensor) -> torch.Tensor:
    """Each image and channel to mean 0, std 1 (the NCC normalization), flattened to N×D."""
    n, c = images.shape[:2]
    flat = images.reshape(n, c, -1)
    flat = (flat - flat.mean(-1, keepdim=True)) / flat.std(-1, keepdim=True).clamp_min(1e-12)
    return flat.reshape(n, -1)


def ncc_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Len(a)×len(b) squared L2 between standardized images, divided by the dimension."""
    a, b = standardize(a.double()), standardize(b.double())
    return torch.cdist(a, b).square() / a.shape[1]


def _search_view(images: torch.Tensor) -> torch.Tensor:
    if images.shape[-1] >= 16:
        return F.interpolate(images, scale_factor=0.5, mode="bicubic", align_corners=False)
    return images


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pair SSIM of images in [0, 1] (N×C×H×W), Gaussian window 3 (σ 1.5), reflect padding."""
    half = SSIM_WINDOW // 2
    coords = torch.arange(SSIM_WINDOW, dtype=torch.float64) - half
    g = torch.exp(-coords.square() / (2 * SSIM_SIGMA ** 2))
    kernel = (g[:, None] * g[None, :]) / g.sum() ** 2
    channels = a.shape[1]
    weight = kernel.expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)   # float64, as the images below

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (half,) * 4, mode="reflect"), weight, groups=channels)
    a, b = a.double(), b.double()
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a ** 2 + mu_b ** 2 + C1) * (var_a + var_b + C2))
    return index.flatten(1).mean(1)


def minmax(images: torch.Tensor) -> torch.Tensor:
    flat = images.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    return ((flat - low[:, None]) / (high - low).clamp_min(1e-12)[:, None]).view_as(images)


def haim_scores(train: torch.Tensor, candidates: torch.Tensor, mean: torch.Tensor) -> dict:
    """Per training image: nearest candidate (NCC), SSIM; the count above 0.4 (module docstring).
    ``train`` and ``candidates`` are mean-subtracted; ``mean`` (1×C×H×W) is added back."""
    distance = ncc_distance(_search_view(train), _search_view(candidates))
    nearest = distance.argmin(1)
    paired = minmax(candidates[nearest] + mean)
    values = ssim((train + mean).clamp(0, 1), paired)
    top = values.sort(descending=True).values
    return {"ssim": values, "nearest": nearest, "count_above": int((values > SSIM_THRESHOLD).sum()),
            "n_train": len(train), "ssim_top10_mean": float(top[:10].mean()),
            "ssim_median": float(values.median())}


def training_share(train: torch.Tensor, heldout: torch.Tensor, candidates: torch.Tensor) -> float:
    """Share of candidates whose NCC-nearest image in train ∪ held-out is a training image."""
    distance = ncc_distance(candidates, torch.cat([train, heldout]))
    return float((distance.argmin(1) < len(train)).double().mean())


def heldout_threshold(train: torch.Tensor, heldout: torch.Tensor, quantile: float = 0.05) -> torch.Tensor:
    """The ``quantile`` of the held-out images' NCC distances to their nearest training image."""
    return torch.quantile(ncc_distance(heldout, train).min(1).values, quantile)


def closer_than_heldout(train: torch.Tensor, candidates: torch.Tensor, threshold: torch.Tensor) -> float:
    """Share of candidates nearer (NCC) to their nearest training image than ``threshold``
    (:func:`heldout_threshold`): held-out images score the quantile by construction, so a share
    far above it says the candidates are copies of training images, not just digit-like."""
    return float((ncc_distance(candidates, train).min(1).values < threshold).double().mean())


def score(train: torch.Tensor, heldout: torch.Tensor, candidates: torch.Tensor, mean: torch.Tensor,
          generator: torch.Generator) -> dict:
    """Both scores, with their chance references: Gaussian noise and held-out images as candidates."""
    haim = haim_scores(train, candidates, mean)
    noise = torch.randn(candidates.shape, generator=generator, dtype=candidates.dtype)
    threshold = heldout_threshold(train, heldout)
    return {"count_above_0.4": haim["count_above"], "n_train": haim["n_train"],
            "count_chance_heldout": haim_scores(train, heldout[: len(candidates)], mean)["count_above"],
            "count_chance_noise": haim_scores(train, noise, mean)["count_above"],
            "ssim_top10_mean": round(haim["ssim_top10_mean"], 4), "ssim_median": round(haim["ssim_median"], 4),
            "closer_than_heldout": round(closer_than_heldout(train, candidates, threshold), 4),
            "closer_noise": round(closer_than_heldout(train, noise, threshold), 4),
            "training_share": round(training_share(train, heldout, candidates), 4),
            "chance_noise": round(training_share(train, heldout, noise), 4),
            "chance_heldout": round(training_share(train, heldout[: len(heldout) // 2],
                                                   heldout[len(heldout) // 2:]), 4),
            "train_fraction_of_search": round(len(train) / (len(train) + len(heldout)), 4)}, haim


def save_pairs(train: torch.Tensor, candidates: torch.Tensor, mean: torch.Tensor, haim: dict, path: Path | str,
               count: int = 60, per_row: int = 15) -> Path:
    """PNG: training images (top row of each band) over their nearest candidates, best SSIM first."""
    order = haim["ssim"].argsort(descending=True)[:count]
    top = (train[order] + mean).clamp(0, 1)
    bottom = minmax(candidates[haim["nearest"][order]] + mean)
    side = train.shape[-1]
    scale = max(1, 56 // side)
    cell, pad = side * scale, 2
    rows = math.ceil(len(order) / per_row)
    canvas = np.full((rows * (2 * cell + 3 * pad) + pad, per_row * (cell + pad) + pad, 3), 255, np.uint8)
    for k in range(len(order)):
        r, c = divmod(k, per_row)
        for band, image in enumerate((top[k], bottom[k])):
            y = pad + r * (2 * cell + 3 * pad) + band * (cell + pad)
            x = pad + c * (cell + pad)
            canvas[y:y + cell, x:x + cell] = cell_pixels(image, scale)
    return write_png(canvas, path)
