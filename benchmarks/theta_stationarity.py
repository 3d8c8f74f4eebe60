"""How stationary is θ*?  Eq. 6 of the DSV paper (θ* = −Σ λ_i ∇θ L_i) at λ = 1/(n·wd) and at the best
common λ, on the classifier and on all parameters, with θ*'s train / test accuracy.

    python benchmarks/theta_stationarity.py --dataset digits --model convnet_dsv --epochs 100
    python benchmarks/theta_stationarity.py --dataset digits --model convnet_dsv --epochs 100 --polish all

Trains θ* once (cached under --cache-dir like any θ*) and prints one line per target.
"""
from __future__ import annotations

import argparse
import time

import torch

from dsvbench.config import DataConfig, PretrainRecipe
from dsvbench.data import load_dataset
from dsvbench.methods.deepkkt import DeepKKT
from dsvbench.pretrain import load_or_pretrain
from dsvbench.process import keep_freed_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--model", default="convnet_dsv")
    parser.add_argument("--epochs", type=int, help="θ* epochs (default: the dataset's)")
    parser.add_argument("--polish", choices=("classifier", "all"), default="classifier",
                        help="θ*'s stationarity polish (PretrainRecipe.polish_params)")
    parser.add_argument("--polish-steps", type=int, help="L-BFGS iterations (default: the recipe's)")
    parser.add_argument("--cache-dir", default=".dsvbench_cache")
    args = parser.parse_args()
    keep_freed_memory()   # as every dsvbench process does (dsvbench.process)
    dataset = load_dataset(DataConfig(args.dataset, args.data_root), args.cache_dir)
    overrides = {"polish_params": args.polish}
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.polish_steps is not None:
        overrides["polish_steps"] = args.polish_steps
    recipe = PretrainRecipe.for_dataset(args.dataset, **overrides)
    start = time.perf_counter()
    theta = load_or_pretrain(dataset, args.model, recipe, args.cache_dir, "cpu", progress=False)
    seconds = time.perf_counter() - start
    n = len(dataset.train_y)
    print(f"θ* {args.model} on {args.dataset}, {recipe.epochs} epochs + {args.polish} polish "
          f"({recipe.polish_steps} L-BFGS steps at most; loaded/trained in {seconds:.0f} s): "
          f"train {theta.train_accuracy:.2f} %, test {theta.test_accuracy:.2f} %")
    for params in ("classifier", "all"):
        kkt = DeepKKT(theta.model, params)
        at_wd = kkt.residuals(dataset.train_x, dataset.train_y, torch.full((n,), 1.0 / (n * recipe.weight_decay)))
        scale = kkt.fit_uniform_scale(dataset.train_x, dataset.train_y)
        best = kkt.residuals(dataset.train_x, dataset.train_y, torch.full((n,), scale))
        print(f"  target {params:10s}  residual L1 at λ = 1/(n·wd): {at_wd['residual_l1']:.4f} "
              f"(cos {at_wd['cosine']:.4f});  best common λ ({scale * n * recipe.weight_decay:.3f}/(n·wd)): "
              f"{best['residual_l1']:.4f}")


if __name__ == "__main__":
    main()
