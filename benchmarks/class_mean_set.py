"""A handmade outside set for ``dsvbench evaluate``: each class's mean training image, IPC 1.

    python benchmarks/class_mean_set.py --dataset digits --out /tmp/class-means.npz
    dsvbench evaluate /tmp/class-means.npz --dataset digits --name class-mean --scores \\
        --out results/digits-evaluate-class-mean

The file holds ``images`` (K×C×H×W, uint8 in 0–255, as an image file would) and ``labels`` (K),
so the evaluation also shows the 0–255 scale being detected and normalized.
"""
from __future__ import annotations

import argparse

import numpy as np

from dsvbench.config import DataConfig
from dsvbench.data import load_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--cache-dir", default=".dsvbench_cache")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    dataset = load_dataset(DataConfig(args.dataset, args.data_root), args.cache_dir)
    pixels = dataset.denormalize(dataset.train_x)   # 0–1
    means = np.stack([pixels[dataset.train_y == c].mean(0).numpy() for c in range(dataset.num_classes)])
    images = np.clip(np.round(means * 255), 0, 255).astype(np.uint8)
    np.savez(args.out, images=images, labels=np.arange(dataset.num_classes))
    print(f"{args.out}: {images.shape[0]} class means of {args.dataset}, uint8 0-255")


if __name__ == "__main__":
    main()
