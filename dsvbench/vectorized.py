"""Retrain several networks on one condensed set at once (vectorized over models; docs/sources.md#scale).

The networks' parameters are stacked (``torch.func.stack_module_state``) and one
``vmap``-ed gradient call serves all of them, which on a GPU turns M tiny IPC-1 batches
into one kernel launch per layer.  Each network keeps its own ``torch.Generator``, and
draws from it in the same order as :func:`dsvbench.training.train_on_set` (epoch
permutation, then augmentation per batch), so the result equals training the networks
one after another up to floating-point summation order.  SGD with momentum and weight
decay and the SAM step (per-network gradient norm) are written out on the stacked
tensors.  Networks with batch norm are not supported here (they are trained one by one).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from .augment import DSA_KINDS, apply, draw, dsa_augment, merge
from .config import EvalRecipe
from .models import activation_bytes, has_batch_norm

Stacked = dict[str, torch.Tensor]


def supports_stacking(model: nn.Module) -> bool:
    return not has_batch_norm(model)


def train_stacked(models: list[nn.Module], images: torch.Tensor | list[torch.Tensor],
                  labels: torch.Tensor | list[torch.Tensor], recipe: EvalRecipe,
                  generators: list[torch.Generator], on_epoch: Callable[[int], None] | None = None,
                  lrs: list[float] | None = None) -> None:
    """Train ``models`` (same architecture) in place, each with its own generator — on one shared
    set (tensors) or each on its own set (lists, one per model, all of the same size);
    ``on_epoch(pass)`` after every pass (progress); ``lrs``: a learning rate per model (SGD / SAM)."""
    if len(models) != len(generators):
        raise ValueError("one generator per model is needed")
    sets_x = images if isinstance(images, (list, tuple)) else [images] * len(models)
    sets_y = labels if isinstance(labels, (list, tuple)) else [labels] * len(models)
    if len({len(y) for y in sets_y}) != 1:
        raise ValueError("stacked training needs sets of equal size")
    params, buffers = stack_module_state(models)
    params = {k: v.detach().clone() for k, v in params.items()}
    skeleton = copy.deepcopy(models[0]).to("meta")

    def loss(p: Stacked, b: Stacked, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(skeleton, (p, b), (x,)), y)

    gradients = vmap(grad(loss), in_dims=(0, 0, 0, 0))
    momentum: Stacked = {}
    lr: float | torch.Tensor = recipe.lr
    if lrs is not None:
        if recipe.optimizer == "adam":
            raise ValueError("a learning rate per model is supported for SGD and SAM, not Adam")
        lr = torch.tensor(lrs, dtype=next(iter(params.values())).dtype, device=next(iter(params.values())).device)
    size = len(sets_y[0])
    for epoch in range(recipe.passes):
        if epoch == recipe.drop_pass:     # as training.drop_learning_rate
            lr *= 0.1
            if recipe.reset_at_drop:
                momentum.clear()
        orders = [torch.randperm(size, generator=g).split(recipe.batch_size) for g in generators]
        for step in range(len(orders[0])):
            batches = [order[step].to(x.device) for order, x in zip(orders, sets_x)]
            inputs = augment_population([x[b] for x, b in zip(sets_x, batches)], recipe.augment, generators)
            targets = torch.stack([y[b] for y, b in zip(sets_y, batches)])
            grads = gradients(params, buffers, inputs, targets)
            if recipe.optimizer == "sam":
                grads = _sam_gradients(params, buffers, grads, inputs, targets, recipe.sam_rho, gradients)
            if recipe.optimizer == "adam":
                _adam_step(params, grads, momentum, lr, recipe.weight_decay)
            else:
                _sgd_step(params, grads, momentum, lr, recipe.momentum, recipe.weight_decay)
        if on_epoch is not None:
            on_epoch(epoch)
    with torch.no_grad():
        for index, model in enumerate(models):
            for name, parameter in model.named_parameters():
                parameter.copy_(params[name][index])


def augment_population(batches: list[torch.Tensor], kind: str, generators: list[torch.Generator]) -> torch.Tensor:
    """Augment model m's batch with model m's generator (the draws of a one-by-one run), applied
    to all batches in one call: parameters drawn per model, one stacked apply."""
    if kind in DSA_KINDS:   # DSA draws its op per call: applied batch by batch, each with its generator
        return torch.stack([dsa_augment(batch, g, strategy=DSA_KINDS[kind]) for batch, g in zip(batches, generators)])
    parameters = [draw(kind, batch.shape, g) for batch, g in zip(batches, generators)]
    flat = apply(torch.cat(batches), kind, merge(parameters))
    return flat.view(len(batches), *batches[0].shape)


# One vmap-ed forward of the evaluation holds at most about this many bytes of activations; more
# models are evaluated in groups (MNIST at width 128: 5 models × 256 test images was 2.6 GB).  The
# logits are the same bit for bit whatever the grouping (each model and image is its own computation).
EVAL_BYTES = 512 * 2 ** 20
EVAL_CHUNK_BYTES = 64 * 2 ** 20


@torch.no_grad()
def evaluate_stacked(models: list[nn.Module], images: torch.Tensor, labels: torch.Tensor,
                     batch_size: int = 512) -> list[float]:
    """Top-1 accuracy (percent) of every model on one set: models in vmap-ed groups whose forward
    stays within :data:`EVAL_BYTES` of activations (all models in one group on small inputs)."""
    if len(labels) == 0:
        return [float("nan")] * len(models)
    per_image = activation_bytes(models[0], images[:1])
    group = max(1, EVAL_BYTES // max(1, per_image * min(batch_size, len(labels))))
    # one model per group (paper scale): its test batches in chunks of EVAL_CHUNK_BYTES, the same logits
    # bit for bit (tested) with a third of the peak (MNIST, 256 images at width 128: +404 MB in one vmap-ed pass)
    batch = batch_size if group > 1 else max(1, min(batch_size, EVAL_CHUNK_BYTES // per_image))
    accuracies: list[float] = []
    for start in range(0, len(models), group):
        accuracies += _evaluate_group(models[start:start + group], images, labels, batch)
    return accuracies


def _evaluate_group(models: list[nn.Module], images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> list[float]:
    params, buffers = stack_module_state([m.eval() for m in models])
    skeleton = copy.deepcopy(models[0]).to("meta")
    forward = vmap(lambda p, b, x: functional_call(skeleton, (p, b), (x,)), in_dims=(0, 0, None))
    hits = torch.cat([forward(params, buffers, chunk).argmax(-1) == target
                      for chunk, target in zip(images.split(batch_size), labels.split(batch_size))], dim=1)
    return [100.0 * rate for rate in hits.float().mean(1).tolist()]   # as training.accuracy rounds it


def _sam_gradients(params, buffers, grads, inputs, targets, rho, gradients):
    """Gradients at w + ρ g/‖g‖ (‖g‖ per network over all its parameters), SAM's first step."""
    squared = sum(g.flatten(1).pow(2).sum(1) for g in grads.values())
    scale = rho / (squared.sqrt() + 1e-12)
    perturbed = {k: p + scale.view(-1, *[1] * (p.dim() - 1)) * grads[k] for k, p in params.items()}
    return gradients(perturbed, buffers, inputs, targets)


@torch.no_grad()
def _sgd_step(params: Stacked, grads: Stacked, momentum: Stacked, lr: float | torch.Tensor, beta: float, weight_decay: float) -> None:
    """torch.optim.SGD's update (dampening 0, no Nesterov) on stacked tensors."""
    for name, parameter in params.items():
        step = grads[name] + weight_decay * parameter
        if beta:
            momentum[name] = step.clone() if name not in momentum else momentum[name].mul_(beta).add_(step)
            step = momentum[name]
        parameter.sub_((lr.view(-1, *[1] * (parameter.dim() - 1)) if isinstance(lr, torch.Tensor) else lr) * step)


@torch.no_grad()
def _adam_step(params: Stacked, grads: Stacked, state: Stacked, lr: float, weight_decay: float,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
    """torch.optim.Adam's update (PyTorch defaults, L2 weight decay added to the gradient)."""
    state["step"] = state.get("step", torch.zeros(())) + 1
    step = float(state["step"])
    for name, parameter in params.items():
        g = grads[name] + weight_decay * parameter if weight_decay else grads[name]
        m = state.setdefault(f"m.{name}", torch.zeros_like(parameter)).mul_(betas[0]).add_(g, alpha=1 - betas[0])
        v = state.setdefault(f"v.{name}", torch.zeros_like(parameter)).mul_(betas[1]).addcmul_(g, g, value=1 - betas[1])
        denominator = (v / (1 - betas[1] ** step)).sqrt_().add_(eps)
        parameter.addcdiv_(m, denominator, value=-lr / (1 - betas[0] ** step))
