"""Time the pipeline's stages on one dataset: load, pretraining, retraining, test evaluation.

    python benchmarks/bench_pipeline.py --dataset digits
    python benchmarks/bench_pipeline.py --dataset mnist --data-root ../shared/datasets/mnist --device cuda

Prints wall time, images/s and peak memory (CUDA: max allocated; CPU: process peak RSS)
for each stage.  Pretraining is timed on ``--pretrain-batches`` batches, not a full run.
"""
from __future__ import annotations

import argparse
import time

import dsvbench  # noqa: F401  (first: it asks torch for huge pages before torch loads, dsvbench.process)
import torch
import torch.nn.functional as F

from dsvbench.augment import augment
from dsvbench.config import DataConfig, PretrainRecipe, eval_recipe
from dsvbench.data import load_dataset
from dsvbench.models import create_model
from dsvbench.process import keep_freed_memory, peak_memory_mb
from dsvbench.training import accuracy, train_on_set


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pretrain-batches", type=int, default=20)
    parser.add_argument("--eval-epochs", type=int, default=300)
    args = parser.parse_args()
    keep_freed_memory()   # as every dsvbench process does (dsvbench.process)
    device = torch.device(args.device)

    start = time.perf_counter()
    dataset = load_dataset(DataConfig(args.dataset, args.data_root), ".dsvbench_cache")
    print(f"load {dataset.name}: {time.perf_counter() - start:.2f} s ({len(dataset.train_y)} train images)")
    train_x, train_y = dataset.train_x.to(device), dataset.train_y.to(device)

    recipe = PretrainRecipe.for_dataset(args.dataset)
    model = create_model(args.model, dataset.shape, torch.Generator().manual_seed(0)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(train_y), (recipe.batch_size,), generator=generator)
               for _ in range(args.pretrain_batches + 2)]
    for i, batch in enumerate(batches):
        if i == 2:  # two warm-up batches
            sync(device)
            start = time.perf_counter()
        batch = batch.to(device)
        loss = F.cross_entropy(model(augment(train_x[batch], recipe.augment, generator)), train_y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sync(device)
    seconds = time.perf_counter() - start
    per_second = args.pretrain_batches * recipe.batch_size / seconds
    print(f"pretrain {args.model}: {per_second:.0f} images/s -> {len(train_y) / per_second:.1f} s/epoch "
          f"(batch {recipe.batch_size}, {recipe.augment}), peak {peak_memory_mb(device):.0f} MB")

    condensed = torch.stack([torch.nonzero(train_y == c)[0, 0] for c in range(dataset.num_classes)])
    images, labels = train_x[condensed], train_y[condensed]
    for name in ("dc", "dsv"):
        evaluation = eval_recipe(name, args.dataset, epochs=args.eval_epochs)
        fresh = create_model(args.model, dataset.shape, torch.Generator().manual_seed(1)).to(device)
        sync(device)
        start = time.perf_counter()
        train_on_set(fresh, images, labels, evaluation, torch.Generator().manual_seed(1))
        sync(device)
        train_seconds = time.perf_counter() - start
        start = time.perf_counter()
        test_acc = accuracy(fresh, dataset.test_x.to(device), dataset.test_y.to(device))
        sync(device)
        test_seconds = time.perf_counter() - start
        print(f"retrain '{name}' ({evaluation.optimizer}, {evaluation.epochs} epochs, IPC 1): "
              f"{train_seconds:.2f} s; test {len(dataset.test_y) / test_seconds:.0f} images/s "
              f"({test_acc:.1f}%), peak {peak_memory_mb(device):.0f} MB")


if __name__ == "__main__":
    main()
