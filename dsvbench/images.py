"""PNG grids of condensed sets: one row per class, IPC images per row (Pillow, no matplotlib)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_write_bytes

PADDING = 2   # white pixels around every cell of a grid



def save_grid(images: torch.Tensor, labels: torch.Tensor, num_classes: int, path: Path | str,
              scale: int | None = None, padding: int = PADDING) -> Path:
    """Write ``images`` (K×C×H×W in [0, 1] after denormalization) as a class-per-row grid.

    Small images are upscaled (nearest) so that each cell is at least 64 px wide.
    """
    images = images.detach().float().clamp(0, 1).cpu()
    _, _, height, width = images.shape
    scale = scale or max(1, 64 // width)
    rows = [images[labels == c] for c in range(num_classes)]
    columns = max(1, max(len(r) for r in rows))
    cell_h, cell_w = height * scale + padding, width * scale + padding
    canvas = np.full((num_classes * cell_h + padding, columns * cell_w + padding, 3), 255, dtype=np.uint8)
    for row, members in enumerate(rows):
        for column, image in enumerate(members):
            top, left = padding + row * cell_h, padding + column * cell_w
            canvas[top:top + height * scale, left:left + width * scale] = cell_pixels(image, scale)
    return write_png(canvas, path)


def cell_pixels(image: torch.Tensor, scale: int) -> np.ndarray:
    """One C×H×W image in [0, 1] as H·scale × W·scale × 3 uint8 (grey repeated to RGB, nearest upscale)."""
    pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    if pixels.shape[2] == 1:
        pixels = np.repeat(pixels, 3, axis=2)
    return pixels.repeat(scale, axis=0).repeat(scale, axis=1)


def write_png(canvas: np.ndarray, path: Path | str) -> Path:
    """Write an H×W×3 uint8 canvas atomically (:func:`dsvbench.atomic.atomic_write_bytes`)."""
    buffer = io.BytesIO()
    Image.fromarray(canvas).save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def class_rows(path: Path | str, num_classes: int, padding: int = PADDING) -> list[np.ndarray]:
    """The inverse of :func:`save_grid`: the grid in ``path`` cut into its ``num_classes`` rows
    (H×W×3 uint8, the cells of one class side by side, outer padding removed)."""
    canvas = np.asarray(Image.open(path).convert("RGB"))
    cell_h = (canvas.shape[0] - padding) // num_classes
    return [canvas[padding + c * cell_h: (c + 1) * cell_h, padding:canvas.shape[1] - padding]
            for c in range(num_classes)]
