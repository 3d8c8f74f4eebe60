"""Training and evaluation loops (no argparse inside): retraining on condensed sets
with the ``dc`` (SGD) or ``dsv`` (SAM) recipe, and test accuracy."""
from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .augment import augment
from .config import EvalRecipe
from .sam import SAM


def minibatches(n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True
                ) -> Iterator[torch.Tensor]:
    """Index batches of one epoch (the last one may be short), order drawn from ``generator``."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    yield from order.split(batch_size)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512,
            on_batch: Callable[[int], None] | None = None) -> torch.Tensor:
    """Logits for ``images`` in eval mode, batched; ``on_batch(n)`` after each batch of n (progress)."""
    was_training = model.training
    model.eval()
    parts = []
    for chunk in images.split(batch_size):
        parts.append(model(chunk))
        if on_batch is not None:
            on_batch(len(chunk))
    logits = torch.cat(parts)
    model.train(was_training)
    return logits


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512,
             on_batch: Callable[[int], None] | None = None) -> float:
    """Top-1 accuracy in percent (soft labels, K×classes, count their most likely class)."""
    if len(labels) == 0:
        return float("nan")
    if labels.is_floating_point():
        labels = labels.argmax(1)
    predictions = predict(model, images, batch_size, on_batch).argmax(1)
    return 100.0 * (predictions == labels).float().mean().item()


def per_class_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       num_classes: int) -> list[float]:
    correct = (predict(model, images).argmax(1) == labels).float()
    return [100.0 * correct[labels == c].mean().item() for c in range(num_classes)]


def make_optimizer(model: nn.Module, recipe: EvalRecipe) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                               weight_decay=recipe.weight_decay)
    if recipe.optimizer == "sam":
        return SAM(model.parameters(), torch.optim.SGD, rho=recipe.sam_rho, lr=recipe.lr,
                   momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; known: sgd, sam, adam")


def train_on_set(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, recipe: EvalRecipe,
                 generator: torch.Generator, on_epoch: Callable[[int], None] | None = None) -> float:
    """Train ``model`` from its current weights on (images, labels) with ``recipe``.

    ``recipe.passes`` passes over the set; the learning rate is multiplied by 0.1 once, at the
    start of pass ``recipe.drop_pass``, with a fresh optimizer when ``recipe.reset_at_drop``
    (the DC reference's ``evaluate_synset``; see :class:`EvalRecipe`).  Returns the final
    training loss.
    """
    optimizer = make_optimizer(model, recipe)
    loss = torch.tensor(float("nan"))
    model.train()
    for epoch in range(recipe.passes):
        if epoch == recipe.drop_pass:
            optimizer = drop_learning_rate(model, optimizer, recipe)
        for batch in minibatches(len(labels), recipe.batch_size, generator):
            batch = batch.to(images.device)
            inputs, targets = augment(images[batch], recipe.augment, generator), labels[batch]
            loss = _step(model, optimizer, inputs, targets)
        if on_epoch is not None:
            on_epoch(epoch)
    return float(loss)


def drop_learning_rate(model: nn.Module, optimizer: torch.optim.Optimizer, recipe: EvalRecipe
                       ) -> torch.optim.Optimizer:
    """The learning rate ×0.1: a new optimizer at that rate (state from zero) when
    ``recipe.reset_at_drop``, else the same optimizer with its rate scaled."""
    if recipe.reset_at_drop:
        return make_optimizer(model, dataclasses.replace(recipe, lr=recipe.lr * 0.1))
    for group in optimizer.param_groups:
        group["lr"] *= 0.1
    return optimizer


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
          targets: torch.Tensor) -> torch.Tensor:
    optimizer.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(inputs), targets)
    loss.backward()
    if isinstance(optimizer, SAM):
        optimizer.first_step()
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), targets).backward()
        optimizer.second_step()
    else:
        optimizer.step()
    return loss.detach()


@dataclass
class RetrainResult:
    test_accuracy: float
    train_accuracy: float      # on the condensed set itself
    final_loss: float
    seconds: float


@contextmanager
def numeric_precision(precision: str, device: torch.device) -> Iterator[None]:
    """The arithmetic of :class:`EvalRecipe` ``precision`` inside the block, restored after it.

    ``fp32``: unchanged (PyTorch's exact defaults).  ``tf32`` (CUDA): TF32 matmuls and
    convolutions and cuDNN autotuning (``cudnn.benchmark``) — ~1e-3 relative error per product,
    run-to-run algorithm choice.  ``bf16``: as ``tf32`` on CUDA, plus bfloat16 autocast of the
    forward passes (weights, gradients and optimizer state stay fp32; the loss is computed in
    fp32 by autocast's rules).  Only retraining and test evaluation use it — never DeepKKT's
    stationarity, the θ* polish or a condensation method.
    """
    if precision == "fp32":
        yield
        return
    if precision not in ("tf32", "bf16"):
        raise ValueError(f"precision={precision!r}; valid: fp32, tf32, bf16")
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = flags


def retrain(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor,
            test_labels: torch.Tensor, recipe: EvalRecipe, generator: torch.Generator,
            on_epoch: Callable[[int], None] | None = None, lr: float | None = None) -> RetrainResult:
    """Train a fresh ``model`` on a condensed set and measure accuracy on the real test set; ``lr``
    (a set's learned rate) replaces the recipe's; ``labels`` may be soft (K×classes)."""
    if lr is not None and lr != recipe.lr:
        recipe = dataclasses.replace(recipe, lr=lr)
    start = time.perf_counter()
    with numeric_precision(recipe.precision, images.device):
        final_loss = train_on_set(model, images, labels, recipe, generator, on_epoch)
        test = accuracy(model, test_images, test_labels, recipe.test_batch_size)
        train = accuracy(model, images, labels)
    return RetrainResult(test, train, final_loss, time.perf_counter() - start)


# From this many bytes of activations per image on (``models.activation_bytes``), ``auto`` trains a CPU
# population model by model.  Measured on this 2-core CPU, one thread, CPU ms per model and epoch of the DC recipe,
# 5 models, stacked / plain (benchmarks/bench_retrain_engine.py): digits ConvNet (16 KiB per image) 0.96 / 1.31;
# MNIST ConvNet (2.1 MiB) on 10 images 46.5 / 39.9, on 100 images 899 / 373; MNIST LeNet (58 KiB) 2.61 / 2.88;
# digits VGG11 (202 KiB) 106 / 55.  Under ``torch.func`` the instance norm runs as a composite of separate
# operations, which costs more than the stacking saves once the maps are large.  1 MiB keeps every digits model
# stacked (its committed tables).
PLAIN_MIN_IMAGE_BYTES = 1 << 20


def retrain_engine(engine: str, model: nn.Module, image: torch.Tensor) -> str:
    """The engine that retrains a population of ``model`` on sets of ``image``'s shape: ``stacked`` (one
    ``torch.func`` population, :mod:`.vectorized`) or ``plain`` (model by model, autograd and ``torch.optim``,
    :func:`retrain`).  ``auto``: plain on the CPU from :data:`PLAIN_MIN_IMAGE_BYTES` of activations per image,
    else stacked; batch-norm networks are always trained plain.  The two agree up to floating-point
    summation order, so the engine is part of what the numbers depend on (``run.json``, every record)."""
    from .models import activation_bytes
    from .vectorized import supports_stacking
    if not supports_stacking(model):
        return "plain"
    if engine != "auto":
        return engine
    if image.device.type != "cpu":
        return "stacked"
    return "plain" if activation_bytes(model, image[:1]) >= PLAIN_MIN_IMAGE_BYTES else "stacked"


def retrain_population(models: list[nn.Module], generators: list[torch.Generator],
                       sets: list[tuple[torch.Tensor, torch.Tensor]], test_images: torch.Tensor,
                       test_labels: torch.Tensor, recipe: EvalRecipe,
                       on_epoch: Callable[[], None] | None = None,
                       lrs: list[float] | None = None, engine: str = "auto") -> list[RetrainResult]:
    """Retrain model m on set m (all of one column: seeds × evals): one stacked population per set size,
    or one after another, as :func:`retrain_engine` decides for ``engine``; the numbers agree up to
    summation order.  ``on_epoch()`` after every pass of every population (or model): :func:`retrain_passes`
    in all.  ``lrs``: model m's learning rate (sets with a learned one), else the recipe's for all."""
    tick = (lambda _: on_epoch()) if on_epoch is not None else None
    if lrs is not None and all(lr == recipe.lr for lr in lrs):
        lrs = None   # the recipe's rate for everyone: the plain path, bit for bit
    if retrain_engine(engine, models[0], sets[0][0]) == "plain":
        return [retrain(m, x, y, test_images, test_labels, recipe, g, tick, None if lrs is None else lrs[i])
                for i, (m, g, (x, y)) in enumerate(zip(models, generators, sets))]
    with numeric_precision(recipe.precision, test_images.device):
        return _retrain_stacked(models, generators, sets, test_images, test_labels, recipe, tick, lrs)


def retrain_passes(models: list[nn.Module], sets: list[tuple[torch.Tensor, torch.Tensor]], recipe: EvalRecipe,
                   engine: str = "auto") -> int:
    """How many times :func:`retrain_population` calls its ``on_epoch`` (the length of its progress bar)."""
    stacked = retrain_engine(engine, models[0], sets[0][0]) == "stacked"
    groups = len({len(y) for _, y in sets}) if stacked else len(models)
    return groups * recipe.passes


def _retrain_stacked(models, generators, sets, test_images, test_labels, recipe, on_epoch=None,
                     lrs=None) -> list[RetrainResult]:
    from .vectorized import evaluate_stacked, train_stacked
    results: list[RetrainResult | None] = [None] * len(models)
    for size in sorted({len(y) for _, y in sets}):
        members = [i for i, (_, y) in enumerate(sets) if len(y) == size]
        start = time.perf_counter()
        group = [models[i] for i in members]
        train_stacked(group, [sets[i][0] for i in members], [sets[i][1] for i in members], recipe,
                      [generators[i] for i in members], on_epoch, None if lrs is None else [lrs[i] for i in members])
        test = evaluate_stacked(group, test_images, test_labels, recipe.test_batch_size)
        seconds = (time.perf_counter() - start) / len(members)
        for i, accuracy_ in zip(members, test):
            results[i] = RetrainResult(accuracy_, accuracy(models[i], *sets[i]), float("nan"), seconds)
    return results
