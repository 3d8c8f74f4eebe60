"""``mtt``: Dataset Distillation by Matching Training Trajectories (Cazenavette et al., CVPR 2022).

Experts — networks trained on the real training set — record their parameters after every epoch.
The synthetic images and a learnable learning rate α are then distilled so that a student started
at an expert's epoch t and trained N steps on the synthetic set lands where the expert was M epochs
later (``distill.py`` of the reference code, GeorgeCazenavette/mtt-distillation):

    for each of ``iterations`` (+ 1) updates:
        an expert, a start epoch t < ``max_start_epoch``;  θ_0 = θ*_t
        θ_{n+1} = θ_n − α ∇θ CE(θ_n; A(a minibatch of S))     for n < ``syn_steps``   (unrolled)
        L = ‖θ_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖²                         (M = ``expert_epochs``)
        one SGD step on S (``lr_img``) and one on α (``lr_lr``), both momentum 0.5

A is DSA drawn per image (``DiffAugment`` without a seed).  The set carries α (``CondensedSet.lr``)
and is retrained with the ``mtt`` recipe: DSA, 1000 epochs, at α — as ``distill.py`` evaluates
(``args.lr_net = syn_lr``).

**Experts** (``buffer.py``): ``num_experts`` networks of the run's architecture, each from its own
seed, SGD at ``lr_teacher`` (momentum 0, no weight decay), batches of 256, DSA per image, no decay.
They do not depend on the job's seed: they are trained once per (dataset content, architecture,
expert recipe), one file per expert under the cache (``mtt-experts-<key>/expert-<i>.pt``, its claims
and a sha256 of its parameters checked on load), so an interrupted run resumes at the next missing
expert.  Only the epochs distillation reads are trained and kept: 0 … ``max_start_epoch`` +
``expert_epochs`` (the reference trains 50 and stores all; without a learning-rate decay the later
epochs change none of the earlier ones).

**Defaults** are ``distill.py``'s and ``buffer.py``'s argument defaults (5000 iterations, 20 student
steps, M = 3, start < 25, lr_img 1000, lr_lr 1e-5, α₀ = lr_teacher 0.01, images from noise, the
synthetic batch = the whole set, 100 experts).  The paper tunes these per dataset and IPC in its
appendix table, which was not read here (a documented guess: the code's defaults), and it whitens
CIFAR with ZCA, which this suite does not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap
from torch.func import grad as torch_grad

from dsvbench.atomic import CacheMismatch, atomic_torch_save, check_claims, load_cache_file
from dsvbench.augment import DEFAULT_STRATEGY, dsa_augment
from dsvbench.baselines.dc import check_init_and_strategy, class_sampler, initial_images
from dsvbench.config import config_hash
from dsvbench.methods import BuildContext, CondensedSet, MethodFailed, register_method
from dsvbench.models import create_model, has_batch_norm
from dsvbench.ranges import MAX_SIZE, POSITIVE, Range, count

LOG_EVERY = 50   # updates between progress reports / finiteness checks (host syncs)


@dataclass(frozen=True)
class MTTRecipe:
    """MTT hyper-parameters; defaults from the reference ``distill.py`` / ``buffer.py`` arguments.

    * ``iterations`` 5000 — distillation updates (the loop runs ``Iteration + 1``, as here).
    * ``syn_steps`` 20 — N, student steps on the synthetic set per update.
    * ``expert_epochs`` 3 — M, expert epochs the student must cover.
    * ``max_start_epoch`` 25 — the start epoch t is drawn from 0 … max_start_epoch − 1.
    * ``lr_img`` 1000, ``lr_lr`` 1e-5 — SGD (momentum 0.5) on the images and on α.
    * ``lr_teacher`` 0.01 — the experts' SGD rate and α's initial value.
    * ``batch_syn`` 0 — synthetic images per student step; 0 = the whole set (the reference's default).
    * ``init`` — ``noise`` (standard normal, the reference's default) or ``real`` images of the class.
    * ``num_experts`` 100, ``expert_batch`` 256 — the experts (``buffer.py``).
    * ``dsa_strategy`` — augmentation of the student steps and of the experts' training.
    """
    RANGES: ClassVar[dict[str, Range]] = {
        "iterations": count(0), "syn_steps": count(1, 10_000), "expert_epochs": count(1, 1000),
        "max_start_epoch": count(1, 1000), "lr_img": POSITIVE, "lr_lr": POSITIVE, "lr_teacher": POSITIVE,
        "batch_syn": count(0, MAX_SIZE), "num_experts": count(1, 10_000), "expert_batch": count(1, MAX_SIZE)}
    iterations: int = 5000
    syn_steps: int = 20
    expert_epochs: int = 3
    max_start_epoch: int = 25
    lr_img: float = 1000.0
    lr_lr: float = 1e-5
    lr_teacher: float = 0.01
    batch_syn: int = 0
    init: str = "noise"
    num_experts: int = 100
    expert_batch: int = 256
    dsa_strategy: str = DEFAULT_STRATEGY

    def __post_init__(self) -> None:
        check_init_and_strategy("mtt", self.init, self.dsa_strategy)

    @property
    def retrain(self) -> str:
        """MTT's sets are retrained at their learned rate with DSA (the ``mtt`` recipe)."""
        return "mtt"

    @property
    def expert_epochs_kept(self) -> int:
        """Epochs of each expert that distillation reads: 0 … max_start_epoch − 1 + expert_epochs."""
        return self.max_start_epoch - 1 + self.expert_epochs


def flat_parameters(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def unflatten(flat: torch.Tensor, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Views of ``flat`` shaped as the named parameters (differentiable)."""
    out, start = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape)
        out[name] = flat[start:start + size].view(shape)
        start += size
    return out


def expert_key(ctx: BuildContext, recipe: MTTRecipe) -> str:
    """What an expert depends on: the data, the architecture and the expert recipe."""
    return config_hash(ctx.data_fingerprint, ctx.model_name, list(ctx.shape.__dict__.values()), recipe.num_experts,
                       recipe.lr_teacher, recipe.expert_batch, recipe.dsa_strategy, recipe.expert_epochs_kept)


def train_expert(ctx: BuildContext, recipe: MTTRecipe, index: int, key: str) -> torch.Tensor:
    """Expert ``index``: its flat parameters after epochs 0 … ``expert_epochs_kept`` (rows).  Progress is
    reported after each epoch (an MNIST epoch takes minutes on a CPU)."""
    generator = torch.Generator().manual_seed(int(config_hash(key, index, length=15), 16))
    model = create_model(ctx.model_name, ctx.shape, generator).to(ctx.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr_teacher, momentum=0, weight_decay=0)
    images, labels = ctx.train_images, ctx.train_labels
    snapshots = [flat_parameters(model).cpu()]
    model.train()
    for _ in range(recipe.expert_epochs_kept):
        for batch in torch.randperm(len(labels), generator=generator).split(recipe.expert_batch):
            batch = batch.to(images.device)
            inputs = dsa_augment(images[batch], generator, strategy=recipe.dsa_strategy)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(inputs), labels[batch]).backward()
            optimizer.step()
        snapshots.append(flat_parameters(model).cpu())
        ctx.progress(step=index * recipe.expert_epochs_kept + len(snapshots) - 1,
                     total=recipe.num_experts * recipe.expert_epochs_kept, phase="expert epochs")
    return torch.stack(snapshots)


def experts(ctx: BuildContext, recipe: MTTRecipe) -> list[torch.Tensor]:
    """Every expert trajectory, from the cache when a valid file is there, else trained and saved at once
    (so an interrupted run resumes at the next missing expert)."""
    key = expert_key(ctx, recipe)
    folder = None if ctx.cache_dir is None else Path(ctx.cache_dir) / f"mtt-experts-{key}"   # None: not kept (tests)
    found = []
    for index in range(recipe.num_experts):
        path, claims = (None if folder is None else folder / f"expert-{index}.pt"), {"key": key, "index": index}
        trajectory = load_cache_file(path, lambda state: _checked(state, claims), "MTT expert",
                                     "training it again") if path is not None and path.exists() else None
        if trajectory is None:
            trajectory = train_expert(ctx, recipe, index, key)
            if path is not None:
                atomic_torch_save({"claims": claims, "trajectory": trajectory, "sha256": _digest(trajectory)}, path)
        found.append(trajectory)
        epochs = recipe.expert_epochs_kept   # counted in expert epochs, as train_expert reports them
        ctx.progress(step=(index + 1) * epochs, total=recipe.num_experts * epochs, phase="expert epochs")
    return found


def _checked(state: dict, claims: dict) -> torch.Tensor:
    check_claims(state.get("claims"), claims, "expert")
    trajectory = state["trajectory"]
    if state.get("sha256") != _digest(trajectory):
        raise CacheMismatch("does not match the sha256 stored with it (changed or damaged on disk)")
    return trajectory


def _digest(tensor: torch.Tensor) -> str:
    import hashlib
    return hashlib.sha256(tensor.contiguous().numpy().tobytes() + str(tuple(tensor.shape)).encode()).hexdigest()


def build_mtt_many(contexts: list[BuildContext], recipe: MTTRecipe) -> list[CondensedSet]:
    """All seeds in one pass per update: seed s draws its expert, start epoch, minibatches and DSA
    parameters from its own generator in :func:`build_mtt`'s order; the student steps are one ``vmap``
    over the seeds of ``torch.func.grad`` (differentiable by the outer backward), and both SGD updates
    are element-wise, so seed s follows its single-seed run (tested).  The experts are shared.  On the
    CPU the seeds are built one by one (``batched_on_cpu=False``)."""
    ctx, seeds = contexts[0], len(contexts)
    skeleton = create_model(ctx.model_name, ctx.shape).to("meta")
    if has_batch_norm(skeleton):   # running statistics are updated in place: not under vmap
        return [build_mtt(c, recipe) for c in contexts]
    buffer = experts(ctx, recipe)
    images = torch.stack([_initial(c, recipe) for c in contexts]).requires_grad_(True)
    labels = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(ctx.ipc)
    syn_lr = torch.full((seeds,), recipe.lr_teacher, device=ctx.device, requires_grad=True)
    image_optimizer = torch.optim.SGD([images], lr=recipe.lr_img, momentum=0.5)
    lr_optimizer = torch.optim.SGD([syn_lr], lr=recipe.lr_lr, momentum=0.5)
    shapes = {name: p.shape for name, p in skeleton.named_parameters()}
    batch = recipe.batch_syn or len(labels)

    def student_loss(params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(skeleton, unflatten(params, shapes), (x,)), y)
    step = vmap(torch_grad(student_loss))
    updates, history = recipe.iterations + 1, []
    for iteration in range(updates):
        begins, targets = [], []
        for c in contexts:
            trajectory = buffer[int(torch.randint(len(buffer), (1,), generator=c.generator))]
            start = int(torch.randint(recipe.max_start_epoch, (1,), generator=c.generator))
            begins.append(trajectory[start])
            targets.append(trajectory[start + recipe.expert_epochs])
        begin, target = torch.stack(begins).to(ctx.device), torch.stack(targets).to(ctx.device)
        params, chunks = begin.clone().requires_grad_(True), [[] for _ in contexts]
        for _ in range(recipe.syn_steps):
            inputs, ys = [], []
            for s, c in enumerate(contexts):
                if not chunks[s]:
                    chunks[s] = list(torch.randperm(len(labels), generator=c.generator).split(batch))
                chosen = chunks[s].pop().to(ctx.device)
                inputs.append(dsa_augment(images[s][chosen], c.generator, strategy=recipe.dsa_strategy))
                ys.append(labels[chosen])
            params = params - syn_lr.view(-1, 1) * step(params, torch.stack(inputs), torch.stack(ys))
        losses = ((params - target) ** 2).sum(1) / ((begin - target) ** 2).sum(1)
        image_optimizer.zero_grad(set_to_none=True)
        lr_optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        image_optimizer.step()
        lr_optimizer.step()
        history.append(losses.detach())
        if (iteration + 1) % LOG_EVERY == 0 or iteration + 1 == updates:
            if not (torch.isfinite(history[-1]).all() and torch.isfinite(syn_lr).all()):
                raise MethodFailed(f"mtt: trajectory losses {history[-1].tolist()}, α {syn_lr.detach().tolist()} "
                                   f"by update {iteration + 1}")
            ctx.progress(step=iteration + 1, total=updates, loss=float(history[-1].mean()))
    rates = syn_lr.detach().tolist()
    if min(rates) <= 0:
        raise MethodFailed(f"mtt: a learned learning rate ended at {min(rates)} (not positive)")
    return [CondensedSet(images.detach()[s].clone(), labels.clone(), lr=rates[s], metadata={
        "updates": updates, "loss_first": float(history[0][s]), "loss_last": float(history[-1][s]),
        "learned_lr": rates[s], "experts": len(buffer)}) for s in range(seeds)]


def _initial(ctx: BuildContext, recipe: MTTRecipe) -> torch.Tensor:
    """The seed's starting images, as DC draws them (real images of each class, or standard normal noise)."""
    return initial_images(ctx, recipe, class_sampler(ctx)[1])


@register_method("mtt", table_name="MTT", group="synthesis", recipe=MTTRecipe, eval_recipe="dc",
                 needs_data=True, order=4, cost=900, in_all=False,   # newer than Table 1: --methods all mtt
                 build_many=build_mtt_many, batched_on_cpu=False,
                 smoke=dict(iterations=2, syn_steps=2, expert_epochs=1, max_start_epoch=2, num_experts=2,
                            lr_img=10.0))
def build_mtt(ctx: BuildContext, recipe: MTTRecipe) -> CondensedSet:
    """Trajectory matching against cached experts (Cazenavette et al. 2022, Algorithm 1)."""
    buffer = experts(ctx, recipe)
    images = _initial(ctx, recipe).requires_grad_(True)
    labels = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(ctx.ipc)
    syn_lr = torch.tensor(recipe.lr_teacher, device=ctx.device, requires_grad=True)
    image_optimizer = torch.optim.SGD([images], lr=recipe.lr_img, momentum=0.5)
    lr_optimizer = torch.optim.SGD([syn_lr], lr=recipe.lr_lr, momentum=0.5)
    skeleton = create_model(ctx.model_name, ctx.shape).to("meta")
    shapes = {name: p.shape for name, p in skeleton.named_parameters()}
    batch = recipe.batch_syn or len(labels)
    updates, history = recipe.iterations + 1, []
    for iteration in range(updates):
        trajectory = buffer[int(torch.randint(len(buffer), (1,), generator=ctx.generator))]
        start = int(torch.randint(recipe.max_start_epoch, (1,), generator=ctx.generator))
        begin, target = trajectory[start].to(ctx.device), trajectory[start + recipe.expert_epochs].to(ctx.device)
        params, chunks = begin.clone().requires_grad_(True), []
        for _ in range(recipe.syn_steps):
            if not chunks:
                chunks = list(torch.randperm(len(labels), generator=ctx.generator).split(batch))
            chosen = chunks.pop().to(ctx.device)
            inputs = dsa_augment(images[chosen], ctx.generator, strategy=recipe.dsa_strategy)
            logits = functional_call(skeleton, unflatten(params, shapes), (inputs,))
            grad, = torch.autograd.grad(F.cross_entropy(logits, labels[chosen]), params, create_graph=True)
            params = params - syn_lr * grad
        loss = ((params - target) ** 2).sum() / ((begin - target) ** 2).sum()
        image_optimizer.zero_grad(set_to_none=True)
        lr_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        image_optimizer.step()
        lr_optimizer.step()
        history.append(loss.detach())
        if (iteration + 1) % LOG_EVERY == 0 or iteration + 1 == updates:
            if not (torch.isfinite(history[-1]) and torch.isfinite(syn_lr)):
                raise MethodFailed(f"mtt: trajectory loss {float(history[-1])}, α {float(syn_lr.detach())} "
                                   f"by update {iteration + 1}")
            ctx.progress(step=iteration + 1, total=updates, loss=float(history[-1]), lr=float(syn_lr.detach()))
    if float(syn_lr.detach()) <= 0:
        raise MethodFailed(f"mtt: the learned learning rate ended at {float(syn_lr.detach())} (not positive)")
    return CondensedSet(images.detach().clone(), labels, lr=float(syn_lr.detach()), metadata={
        "updates": updates, "loss_first": float(history[0]), "loss_last": float(history[-1]),
        "learned_lr": float(syn_lr.detach()), "experts": len(buffer)})
