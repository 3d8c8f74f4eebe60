"""Retrain several networks on one condensed set at once (SPEC §9: vectorized over models).

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

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from .augment import augment
from .config import EvalRecipe

Stacked = dict[str, torch.Tensor]


def supports_stacking(model: nn.Module) -> bool:
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def train_stacked(models: list[nn.Module], images: torch.Tensor, labels: torch.Tensor, recipe: EvalRecipe,
                  generators: list[torch.Generator]) -> None:
    """Train ``models`` (same architecture) in place, each with its own generator."""
    if len(models) != len(generators):
        raise ValueError("one generator per model is needed")
    params, buffers = stack_module_state(models)
    params = {k: v.detach().clone() for k, v in params.items()}
    skeleton = copy.deepcopy(models[0]).to("meta")

    def loss(p: Stacked, b: Stacked, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(skeleton, (p, b), (x,)), y)

    gradients = vmap(grad(loss), in_dims=(0, 0, 0, None))
    momentum: Stacked = {}
    lr = recipe.lr
    decay_epoch = int(recipe.epochs * recipe.lr_decay_at) + 1
    for epoch in range(recipe.epochs):
        if epoch == decay_epoch:
            lr *= 0.1
        orders = [torch.randperm(len(labels), generator=g).split(recipe.batch_size) for g in generators]
        for step in range(len(orders[0])):
            batches = [order[step].to(images.device) for order in orders]
            inputs = torch.stack([augment(images[b], recipe.augment, g) for b, g in zip(batches, generators)])
            targets = labels[batches[0]] if _same(batches) else None
            if targets is None:  # different label order per model: vmap over targets too
                grads = vmap(grad(loss), in_dims=(0, 0, 0, 0))(params, buffers, inputs,
                                                              torch.stack([labels[b] for b in batches]))
            else:
                grads = gradients(params, buffers, inputs, targets)
            if recipe.optimizer == "sam":
                grads = _sam_gradients(params, buffers, grads, inputs, targets, labels, batches, recipe.sam_rho, loss)
            _sgd_step(params, grads, momentum, lr, recipe.momentum, recipe.weight_decay)
    with torch.no_grad():
        for index, model in enumerate(models):
            for name, parameter in model.named_parameters():
                parameter.copy_(params[name][index])


def _same(batches: list[torch.Tensor]) -> bool:
    return all(torch.equal(batches[0], b) for b in batches[1:])


def _sam_gradients(params, buffers, grads, inputs, targets, labels, batches, rho, loss):
    """Gradients at w + ρ g/‖g‖ (‖g‖ per network over all its parameters), SAM's first step."""
    squared = sum(g.flatten(1).pow(2).sum(1) for g in grads.values())
    scale = rho / (squared.sqrt() + 1e-12)
    perturbed = {k: p + scale.view(-1, *[1] * (p.dim() - 1)) * grads[k] for k, p in params.items()}
    if targets is None:
        return vmap(grad(loss), in_dims=(0, 0, 0, 0))(perturbed, buffers, inputs,
                                                      torch.stack([labels[b] for b in batches]))
    return vmap(grad(loss), in_dims=(0, 0, 0, None))(perturbed, buffers, inputs, targets)


@torch.no_grad()
def _sgd_step(params: Stacked, grads: Stacked, momentum: Stacked, lr: float, beta: float, weight_decay: float) -> None:
    """torch.optim.SGD's update (dampening 0, no Nesterov) on stacked tensors."""
    for name, parameter in params.items():
        step = grads[name] + weight_decay * parameter
        if beta:
            momentum[name] = step.clone() if name not in momentum else momentum[name].mul_(beta).add_(step)
            step = momentum[name]
        parameter.sub_(lr * step)
