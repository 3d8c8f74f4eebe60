"""What the integrity checks (issue 20) cost on a run: each check timed on the artefacts it sees.

    python benchmarks/integrity_overhead.py                      # digits, as the main job
    python benchmarks/integrity_overhead.py --dataset mnist --data-root ../shared/datasets/mnist

Times, one thread: the configuration's types and ranges (flags and --replay), every recipe's
ranges, the check of each built set (shape, labels, finiteness) and of each cached set on load
(claims and sha256), the confinement check of each write, and the content hash of the source
files (the dataset cache key; digits is embedded and reads none).  Prints each per call, the
count a run of ``--methods all --seeds 5`` makes, their total, and that total as a share of
``--job-seconds`` (the main job's measured wall time).  Also prints wall time and peak memory.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

from dsvbench import atomic
from dsvbench.options import config_from_flags
from dsvbench.config import DataConfig
from dsvbench.process import peak_rss_mb
from dsvbench.data import SOURCES, load_dataset
from dsvbench.data.cache import source_key
from dsvbench.setcache import set_claims, set_digest, set_problem
from dsvbench.methods import METHODS, CondensedSet
from dsvbench.ranges import check_bench_config, check_recipe


def timed(call, repeat: int) -> float:
    """Seconds per call (best of three batches of ``repeat``)."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            call()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--job-seconds", type=float, default=169.0,
                        help="the main job's wall time to compare with (default: 169 s, CHANGELOG.md)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="integrity-overhead-")   # --out is checked by writing a probe file there
    config = config_from_flags(dataset=args.dataset, data_root=args.data_root, methods=["all"], out=scratch)
    dataset = load_dataset(DataConfig(args.dataset, args.data_root))
    shape = dataset.shape
    sets = 7 * 5
    images = torch.randn(dataset.num_classes, shape.channels, shape.size, shape.size)
    condensed = CondensedSet(images, torch.arange(dataset.num_classes))
    claims = set_claims("k" * 12, "random", 0, 1, dataset)
    state = condensed.state_dict()
    rows = [
        ("config types and ranges", timed(lambda: check_bench_config(config), 200), 1),
        ("recipe ranges (every method)", timed(lambda: [check_recipe(METHODS.get(m).make_recipe(args.dataset), m)
                                                       for m in METHODS.names()], 50), 4),
        ("built set: shape, labels, finite", timed(lambda: set_problem(condensed, claims["image_shape"],
                                                                        dataset.num_classes), 2000), sets),
        ("cached set: claims + sha256", timed(lambda: set_digest(state, claims), 2000), sets),
    ]
    with TemporaryDirectory() as folder, atomic.confined(folder):
        rows.append(("write confined to --out", timed(lambda: atomic._check_inside(Path(folder)), 2000), 250))
    if args.dataset in SOURCES or args.dataset == "folder":
        rows.append(("source files: sha256 of bytes", timed(lambda: source_key(DataConfig(args.dataset, args.data_root)),
                                                            1), 1))
    total = sum(seconds * count for _, seconds, count in rows)
    for name, seconds, count in rows:
        print(f"{name:36s} {seconds * 1e6:10.1f} µs/call × {count:4d} = {seconds * count * 1e3:8.2f} ms")
    print(f"total {total * 1e3:.1f} ms = {100 * total / args.job_seconds:.3f} % of a {args.job_seconds:.0f} s job")
    print(f"wall {time.perf_counter() - start:.1f} s, peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
