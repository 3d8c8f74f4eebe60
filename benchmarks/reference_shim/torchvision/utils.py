"""``torchvision.utils.save_image``: a grid of N×C×H×W images in [0, 1] as one PNG."""
from __future__ import annotations

import math

import torch
from PIL import Image


def save_image(tensor: torch.Tensor, fp, nrow: int = 8, padding: int = 2, **_) -> None:
    images = tensor.detach().cpu().float().clamp(0, 1)
    if images.dim() == 3:
        images = images.unsqueeze(0)
    count, channels, height, width = images.shape
    columns = min(nrow, count)
    rows = math.ceil(count / columns)
    grid = torch.zeros(channels, rows * (height + padding) + padding, columns * (width + padding) + padding)
    for k in range(count):
        top, left = padding + (k // columns) * (height + padding), padding + (k % columns) * (width + padding)
        grid[:, top:top + height, left:left + width] = images[k]
    array = (grid * 255 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).squeeze(-1).numpy()
    Image.fromarray(array).save(fp)
