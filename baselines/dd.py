"""``dd``: Dataset Distillation (Wang, Zhu, Torralba, Efros 2018; Table 1, "DD").

Synthetic images and one learned step size per unrolled step are trained so that a
*freshly, randomly initialized* network (the paper's "random unknown initialization",
a new draw every iteration), after T plain gradient-descent steps on the synthetic
images, has a low loss on real data (Algorithm 1 of the paper, reference code
SsnL/dataset-distillation ``train_distilled_image.py``):

    w_0 ~ init;  w_{t+1} = w_t − softplus(ρ_t) ∇_w CE(w_t; x_{t mod S}, y)     t < T = S·E
    L = CE(w_T; real batch);  Adam step on the images x and on the raw step sizes ρ

The images form S = ``distill_steps`` groups of ``images_per_class_per_step`` per class
(one group per step, the groups cycled ``distill_epochs`` times): IPC 1 is S = 1 with
the reference's 3 epochs (T = 3, all on the same 10 images); IPC 10 is the reference
default S = 10, T = 30.  The unroll is differentiated end to end with autograd
(``create_graph=True`` through ``torch.func.functional_call``) rather than the
reference's hand-written reverse pass; the gradients are the same.

Evaluation: DD's own evaluation replays the learned step sizes from the training
initialization distribution; Table 1 (through the DC paper) retrains a network from
scratch on the images, so this column is retrained with the ``dc`` recipe like the
others.  The learned step sizes are kept in the set's metadata (``step_sizes``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, stack_module_state, vmap

from dsvbench.methods import BuildContext, CondensedSet, MethodFailed, register_method
from dsvbench.models import MODELS
from dsvbench.ranges import DECAY, MAX_SIZE, POSITIVE, UNIT, Range, count
from dsvbench.registry import UserError
from dsvbench.vectorized import supports_stacking

LOG_EVERY = 50   # outer iterations between progress reports / finiteness checks (host syncs)


@dataclass(frozen=True)
class DDRecipe:
    """DD hyper-parameters; defaults from the reference code's ``base_options.py``.

    * ``epochs`` 400 — the budget: passes over the real training set in batches of
      ``batch_size`` 1024 (one outer iteration per batch, the last batch short), so
      iterations = epochs × ceil(N / 1024) (MNIST: 400 × 59 = 23 600; digits: 800).
    * ``lr`` 0.01 — Adam (betas 0.5, 0.999) on the images and raw step sizes, multiplied
      by ``decay_factor`` 0.5 every ``decay_epochs`` 40 epochs.
    * ``distill_lr`` 0.02 — initial step size of every unrolled step, learned through
      softplus (raw = log(expm1(0.02))); 0.001 on CIFAR-10 (reference README).
    * ``distill_epochs`` 3 — times the S step groups are cycled (T = S × 3 steps).
    * ``images_per_class_per_step`` 1 — so S = IPC / 1 (IPC 1: S = 1, as docs/sources.md#facts-from-the-literature).
    * Networks come from the run's model registry with its default initialization
      (the reference used LeNet/AlexCifarNet with Xavier init; Table 1 uses ConvNet).
    """
    RANGES: ClassVar[dict[str, Range]] = {
        "epochs": count(1), "batch_size": count(1, MAX_SIZE), "lr": POSITIVE, "beta1": UNIT, "beta2": UNIT,
        "decay_epochs": count(1), "decay_factor": DECAY, "distill_lr": POSITIVE, "distill_epochs": count(1),
        "images_per_class_per_step": count(1)}
    epochs: int = 400
    batch_size: int = 1024
    lr: float = 0.01
    beta1: float = 0.5
    beta2: float = 0.999
    decay_epochs: int = 40
    decay_factor: float = 0.5
    distill_lr: float = 0.02
    distill_epochs: int = 3
    images_per_class_per_step: int = 1

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "decay_epochs", "distill_epochs", "images_per_class_per_step"):
            if getattr(self, name) < 1:
                raise UserError(f"dd.{name} must be >= 1, got {getattr(self, name)}")
        if not self.distill_lr > 0:
            raise UserError(f"dd.distill_lr must be > 0, got {self.distill_lr}")


def dd_defaults(dataset: str) -> dict:
    """Reference README: ``--distill_lr 0.001`` for CIFAR-10."""
    return {"distill_lr": 0.001} if dataset == "cifar10" else {}


def unrolled_loss(net: nn.Module, start: dict[str, torch.Tensor], groups: torch.Tensor,
                  group_labels: torch.Tensor, step_sizes: torch.Tensor, real_images: torch.Tensor,
                  real_labels: torch.Tensor) -> torch.Tensor:
    """CE on the real batch after len(step_sizes) GD steps from ``start``, step t on group t mod S.

    Differentiable in ``groups`` and ``step_sizes`` (the graph of every step is kept).
    """
    weights = dict(start)
    names = list(weights)
    net.train()
    for t, step_size in enumerate(step_sizes):
        logits = functional_call(net, weights, (groups[t % len(groups)],))
        grads = torch.autograd.grad(F.cross_entropy(logits, group_labels), [weights[n] for n in names],
                                    create_graph=True)
        weights = {n: weights[n] - step_size * g for n, g in zip(names, grads)}
    net.eval()
    return F.cross_entropy(functional_call(net, weights, (real_images,)), real_labels)


def _start_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone().requires_grad_(True) for name, p in net.named_parameters()}


def _functional_unrolled_loss(groups, raw_step_sizes, start, real_images, real_labels, skeleton, group_labels):
    """:func:`unrolled_loss` written with ``torch.func`` (nested ``grad``), so that ``vmap`` can run
    the seeds' networks stacked; networks without batch norm only (train and eval mode agree)."""
    weights = start
    for t in range(len(raw_step_sizes)):
        inputs = groups[t % len(groups)]

        def inner(w, inputs=inputs):
            return F.cross_entropy(functional_call(skeleton, w, (inputs,)), group_labels)
        grads = grad(inner)(weights)
        step_size = F.softplus(raw_step_sizes[t])
        weights = {n: weights[n] - step_size * grads[n] for n in weights}
    return F.cross_entropy(functional_call(skeleton, weights, (real_images,)), real_labels)


def _check_ipc(ctx: BuildContext, recipe: DDRecipe) -> None:
    if ctx.ipc % recipe.images_per_class_per_step:
        raise UserError(f"dd: IPC {ctx.ipc} is not a multiple of images_per_class_per_step "
                        f"{recipe.images_per_class_per_step}")


def stacks_on(ctx: BuildContext) -> bool:
    """Seeds are stacked on accelerators (where one launch for all seeds pays) for networks
    without batch norm; on the CPU the seeds run one after another (stacking does not pay there:
    the same arithmetic, and ``vmap``'s grouped kernels are slower than the plain ones)."""
    with torch.device("meta"):   # the architecture only: no parameters drawn
        net = MODELS.get(ctx.model_name)(ctx.shape)
    return ctx.device.type != "cpu" and supports_stacking(net)


def build_dd_many(contexts: list[BuildContext], recipe: DDRecipe) -> list[CondensedSet]:
    """The seeds' networks stacked (``vmap`` over seeds of the ``torch.func`` unroll) on
    accelerators; one after another on the CPU (see :func:`stacks_on`)."""
    if not stacks_on(contexts[0]):
        return [build_dd(ctx, recipe) for ctx in contexts]
    return build_dd_stacked(contexts, recipe)


@register_method("dd", table_name="DD", group="synthesis", recipe=DDRecipe, eval_recipe="dc",
                 needs_data=True, order=0, recipe_defaults=dd_defaults, version=2, cost=17,   # 2: seeds batched
                 smoke=dict(epochs=2, batch_size=16, distill_epochs=1),
                 build_many=build_dd_many, batched_on_cpu=False)
def build_dd(ctx: BuildContext, recipe: DDRecipe) -> CondensedSet:
    """Learn images and step sizes through unrolled GD from random inits (Wang et al. 2018)."""
    _check_ipc(ctx, recipe)
    steps = ctx.ipc // recipe.images_per_class_per_step
    per_step = recipe.images_per_class_per_step
    shape = (steps, ctx.num_classes * per_step, ctx.shape.channels, ctx.shape.size, ctx.shape.size)
    groups = torch.randn(shape, generator=ctx.generator).to(ctx.device).requires_grad_(True)
    group_labels = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(per_step)
    raw_init = math.log(math.expm1(recipe.distill_lr))
    raw_step_sizes = torch.full((steps * recipe.distill_epochs,), raw_init, device=ctx.device,
                                requires_grad=True)
    optimizer = torch.optim.Adam([groups, raw_step_sizes], lr=recipe.lr, betas=(recipe.beta1, recipe.beta2))
    train_x, train_y = ctx.train_images, ctx.train_labels
    per_epoch = math.ceil(len(train_y) / recipe.batch_size)
    total, iteration, loss_value = recipe.epochs * per_epoch, 0, float("nan")
    for epoch in range(recipe.epochs):
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr * recipe.decay_factor ** (epoch // recipe.decay_epochs)
        for batch in torch.randperm(len(train_y), generator=ctx.generator).split(recipe.batch_size):
            batch = batch.to(train_x.device)
            net = ctx.fresh_model()
            loss = unrolled_loss(net, _start_weights(net), groups, group_labels, F.softplus(raw_step_sizes),
                                 train_x[batch], train_y[batch])
            # gradients for the learned tensors only (none for the throw-away initial weights)
            groups.grad, raw_step_sizes.grad = torch.autograd.grad(loss, [groups, raw_step_sizes])
            optimizer.step()
            iteration, loss_value = iteration + 1, loss.detach()   # device scalar: no sync per iteration
            if iteration % LOG_EVERY == 0 or iteration == total:
                if not torch.isfinite(loss_value):
                    raise MethodFailed(f"dd: real-data loss became {float(loss_value)} by iteration {iteration}")
                ctx.progress(step=iteration, total=total, loss=float(loss_value))
    images = groups.detach().reshape(-1, *shape[2:])
    if not torch.isfinite(images).all() or not torch.isfinite(raw_step_sizes).all():
        raise MethodFailed("dd: synthetic images or step sizes contain NaN/Inf")
    return CondensedSet(images.clone(), group_labels.repeat(steps), metadata={
        "step_sizes": F.softplus(raw_step_sizes.detach()).cpu().tolist(), "distill_steps": steps,
        "distill_epochs": recipe.distill_epochs, "iterations": total, "final_loss": float(loss_value)})


def build_dd_stacked(contexts: list[BuildContext], recipe: DDRecipe) -> list[CondensedSet]:
    """All seeds in one ``vmap``-ed unroll per outer iteration.  Seed s draws its images, its batch
    orders and its fresh networks from its own generator in the order of :func:`build_dd`, and
    Adam is element-wise, so seed s follows its single-seed trajectory (tested)."""
    ctx = contexts[0]
    _check_ipc(ctx, recipe)
    steps, per_step = ctx.ipc // recipe.images_per_class_per_step, recipe.images_per_class_per_step
    shape = (steps, ctx.num_classes * per_step, ctx.shape.channels, ctx.shape.size, ctx.shape.size)
    groups = torch.stack([torch.randn(shape, generator=c.generator) for c in contexts]).to(ctx.device)
    groups.requires_grad_(True)
    group_labels = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(per_step)
    raw_init = math.log(math.expm1(recipe.distill_lr))
    raw_step_sizes = torch.full((len(contexts), steps * recipe.distill_epochs), raw_init, device=ctx.device,
                                requires_grad=True)
    optimizer = torch.optim.Adam([groups, raw_step_sizes], lr=recipe.lr, betas=(recipe.beta1, recipe.beta2))
    train_x, train_y = ctx.train_images, ctx.train_labels
    with torch.device("meta"):   # the architecture only: no draw from any seed's generator
        skeleton = MODELS.get(ctx.model_name)(ctx.shape).train()

    def loss(g, raw, start, x, y):
        return _functional_unrolled_loss(g, raw, start, x, y, skeleton, group_labels)
    step = vmap(grad_and_value(loss, argnums=(0, 1)))
    per_epoch = math.ceil(len(train_y) / recipe.batch_size)
    total, iteration = recipe.epochs * per_epoch, 0
    losses = torch.full((len(contexts),), float("nan"), device=ctx.device)
    for epoch in range(recipe.epochs):
        for group in optimizer.param_groups:
            group["lr"] = recipe.lr * recipe.decay_factor ** (epoch // recipe.decay_epochs)
        orders = [torch.randperm(len(train_y), generator=c.generator).split(recipe.batch_size) for c in contexts]
        for batches in zip(*orders):
            batches = [b.to(train_x.device) for b in batches]
            start, _ = stack_module_state([c.fresh_model() for c in contexts])
            start = {n: p.detach() for n, p in start.items()}
            (grad_images, grad_steps), losses = step(groups, raw_step_sizes, start,
                                                     torch.stack([train_x[b] for b in batches]),
                                                     torch.stack([train_y[b] for b in batches]))
            groups.grad, raw_step_sizes.grad, losses = grad_images, grad_steps, losses.detach()
            optimizer.step()
            iteration += 1
            if iteration % LOG_EVERY == 0 or iteration == total:
                if not torch.isfinite(losses).all():
                    raise MethodFailed(f"dd: real-data loss became {losses.tolist()} by iteration {iteration}")
                ctx.progress(step=iteration, total=total, loss=float(losses.mean()))
    sets = []
    for index in range(len(contexts)):
        images = groups.detach()[index].reshape(-1, *shape[2:])
        if not torch.isfinite(images).all() or not torch.isfinite(raw_step_sizes[index]).all():
            raise MethodFailed("dd: synthetic images or step sizes contain NaN/Inf")
        sets.append(CondensedSet(images.clone(), group_labels.repeat(steps), metadata={
            "step_sizes": F.softplus(raw_step_sizes.detach()[index]).cpu().tolist(), "distill_steps": steps,
            "distill_epochs": recipe.distill_epochs, "iterations": total, "final_loss": float(losses[index])}))
    return sets
