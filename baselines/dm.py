"""``dm``: Dataset Condensation with Distribution Matching (Zhao & Bilen, WACV 2023).

Synthetic images are learned so that, in the embedding of many randomly initialized networks,
each class's synthetic mean matches its real mean (maximum mean discrepancy with a linear
kernel in that embedding):

    for each of ``iterations`` (+ 1) updates:   a fresh randomly initialized network ψ, frozen
        L = Σ_c ‖ mean ψ(A_c(real batch of class c)) − mean ψ(A_c(S_c)) ‖²
        one SGD step on the synthetic images S

ψ is the network's penultimate embedding (``model.features``), A_c one Differentiable Siamese
Augmentation draw per class shared by its real and synthetic batch (``dsvbench.augment``).  Unlike
DC there is no inner loop and no network training: the networks stay at their initialization.

Defaults are the reference code's (VICO-UoE/DatasetCondensation ``main_DM.py``): 20 000
iterations — its loop runs ``Iteration + 1`` updates, and so does this one —, lr_img 1.0 with SGD
momentum 0.5, 256 real images per class per update, initialization from real images, the DSA
strategy ``color_crop_cutout_flip_scale_rotate`` on every dataset (``main_DM.py`` has no digit
exception).  The column is retrained with the ``dsa`` recipe (DSA augmentation, 1000 epochs), as
DM evaluates its sets.  All classes go through each network in one forward pass (per-sample norms,
or batch norm over all classes as the reference does for ``ConvNetBN``); at paper scale the real
batches go in passes of whole classes (``_real_passes``), as the reference runs them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from dsvbench.augment import DEFAULT_STRATEGY, dsa_siamese
from dsvbench.baselines.dc import check_init_and_strategy, class_passes, class_sampler, initial_images
from torch.func import functional_call, stack_module_state, vmap

from dsvbench.methods import BuildContext, CondensedSet, MethodFailed, register_method
from dsvbench.models import create_model, has_batch_norm
from dsvbench.ranges import MAX_SIZE, POSITIVE, UNIT, Range, count

LOG_EVERY = 100   # iterations between progress reports / finiteness checks (host syncs)


@dataclass(frozen=True)
class DMRecipe:
    """DM hyper-parameters; defaults from the reference ``main_DM.py``.

    * ``iterations`` 20000 — ``--Iteration``; the reference updates the images Iteration + 1 times.
    * ``lr_img`` 1.0, ``momentum_img`` 0.5 — SGD on the synthetic images.
    * ``batch_real`` 256 — real images per class per update (all of the class when fewer).
    * ``init`` — ``real`` (random training images of the class) or ``noise`` (standard normal).
    * ``dsa_strategy`` — the Siamese augmentation's ops; ``none`` turns augmentation off.
    """
    RANGES: ClassVar[dict[str, Range]] = {
        "iterations": count(0), "lr_img": POSITIVE, "momentum_img": UNIT, "batch_real": count(1, MAX_SIZE)}
    iterations: int = 20000
    lr_img: float = 1.0
    momentum_img: float = 0.5
    batch_real: int = 256
    init: str = "real"
    dsa_strategy: str = DEFAULT_STRATEGY

    def __post_init__(self) -> None:
        check_init_and_strategy("dm", self.init, self.dsa_strategy)

    @property
    def retrain(self) -> str:
        """DM's sets are evaluated as DSA's: DSA augmentation, 1000 epochs."""
        return "dsa"


def mean_embedding_loss(net: torch.nn.Module, reals: list[torch.Tensor], syn: torch.Tensor) -> torch.Tensor:
    """Σ_c ‖mean ψ(real_c) − mean ψ(syn_c)‖² with ψ = ``net.features``; ``syn`` is K×IPC×C×H×W."""
    classes, ipc = syn.shape[:2]
    with torch.no_grad():
        real_embedding = torch.cat([net.features(torch.cat(part)) for part in _real_passes(net, reals)])
    real_means = torch.stack([part.mean(0) for part in real_embedding.split([len(r) for r in reals])])
    syn_means = net.features(syn.flatten(0, 1)).view(classes, ipc, -1).mean(1)
    return ((real_means - syn_means) ** 2).sum()


def _real_passes(net: torch.nn.Module, reals: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """The classes' real batches in DC's passes of whole classes (:func:`~dsvbench.baselines.dc.class_passes`):
    one pass on small inputs (digits), a class per pass at paper scale (MNIST at width 128: ten classes
    of 256 images in one no-grad pass peaked at 4.5 GB).  The per-image embeddings do not depend on the
    pass (the same bits, tested); batch norm in train mode normalizes over its batch, so it keeps one pass."""
    if has_batch_norm(net) or not any(True for _ in net.parameters()):   # (no parameters: a stand-in in tests)
        return [reals]
    return [[reals[k] for k in ks] for ks in class_passes(net, reals[0][:1], [len(r) for r in reals])]


def build_dm_many(contexts: list[BuildContext], recipe: DMRecipe) -> list[CondensedSet]:
    """All seeds in one pass per update: each seed's fresh network, real batches and DSA draws come from
    its own generator in :func:`build_dm`'s order; the embeddings are one ``vmap`` over the seeds' stacked
    networks, and SGD is element-wise, so seed s follows its single-seed run (tested).  On the CPU the
    seeds are built one by one (``batched_on_cpu=False``)."""
    ctx, seeds = contexts[0], len(contexts)
    features = _Features(create_model(ctx.model_name, ctx.shape).to("meta"))
    if has_batch_norm(features):   # running statistics are updated in place: not under vmap
        return [build_dm(c, recipe) for c in contexts]
    samplers = [class_sampler(c) for c in contexts]
    images = torch.stack([initial_images(c, recipe, all_) for c, (_, all_) in zip(contexts, samplers)])
    images.requires_grad_(True)
    optimizer = torch.optim.SGD([images], lr=recipe.lr_img, momentum=recipe.momentum_img)
    updates, history = recipe.iterations + 1, []
    for iteration in range(updates):
        params, reals, syns = [], [], []
        for s, (c, (sample, _)) in enumerate(zip(contexts, samplers)):
            params.append(c.fresh_model())
            real = [sample(k, recipe.batch_real) for k in range(ctx.num_classes)]
            syn = list(images[s].view(ctx.num_classes, ctx.ipc, *images.shape[2:]).unbind(0))
            if recipe.dsa_strategy != "none":
                for k in range(ctx.num_classes):
                    real[k], syn[k] = dsa_siamese([real[k], syn[k]], c.generator, strategy=recipe.dsa_strategy)
            reals.append(torch.cat(real))
            syns.append(torch.cat(syn))
        sizes = [len(part) for part in real]   # the same per class for every seed (one dataset)
        stacked, buffers = stack_module_state(params)
        state = {f"model.{name}": p.detach() for name, p in {**stacked, **buffers}.items()}
        embed = vmap(lambda p, x: functional_call(features, p, (x,)))
        with torch.no_grad():
            real_embedding = embed(state, torch.stack(reals))
        syn_embedding = embed(state, torch.stack(syns))
        real_means = torch.stack([part.mean(1) for part in real_embedding.split(sizes, dim=1)], 1)
        syn_means = syn_embedding.view(seeds, ctx.num_classes, ctx.ipc, -1).mean(2)
        losses = ((real_means - syn_means) ** 2).sum((1, 2))
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
        history.append(losses.detach() / ctx.num_classes)
        if (iteration + 1) % LOG_EVERY == 0 or iteration + 1 == updates:
            if not torch.isfinite(history[-1]).all():
                raise MethodFailed(f"dm: matching loss became {history[-1].tolist()} by update {iteration + 1}")
            ctx.progress(step=iteration + 1, total=updates, loss=float(history[-1].mean()))
    labels = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(ctx.ipc)
    return [CondensedSet(images.detach()[s].clone(), labels.clone(), metadata={
        "updates": updates, "loss_first": float(history[0][s]), "loss_last": float(history[-1][s])})
        for s in range(seeds)]


class _Features(torch.nn.Module):
    """A network's ``features`` as its forward (``functional_call`` calls forward)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


@register_method("dm", table_name="DM", group="synthesis", recipe=DMRecipe, eval_recipe="dc",
                 needs_data=True, order=3, cost=120, smoke=dict(iterations=2, batch_real=8),
                 build_many=build_dm_many, batched_on_cpu=False,
                 in_all=False)   # newer than Table 1: run by name (--methods all dm)
def build_dm(ctx: BuildContext, recipe: DMRecipe) -> CondensedSet:
    """Mean-embedding matching over fresh random networks (Zhao & Bilen 2023, Algorithm 1)."""
    sample, sample_all = class_sampler(ctx)
    images = initial_images(ctx, recipe, sample_all).requires_grad_(True)
    optimizer = torch.optim.SGD([images], lr=recipe.lr_img, momentum=recipe.momentum_img)
    updates, history = recipe.iterations + 1, []
    for iteration in range(updates):
        net = ctx.fresh_model()
        net.train()
        net.requires_grad_(False)
        reals = [sample(c, recipe.batch_real) for c in range(ctx.num_classes)]
        syn = list(images.view(ctx.num_classes, ctx.ipc, *images.shape[1:]).unbind(0))
        if recipe.dsa_strategy != "none":
            for c in range(ctx.num_classes):
                reals[c], syn[c] = dsa_siamese([reals[c], syn[c]], ctx.generator, strategy=recipe.dsa_strategy)
        loss = mean_embedding_loss(net, reals, torch.stack(syn))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(loss.detach() / ctx.num_classes)   # a device scalar: no sync per iteration
        if (iteration + 1) % LOG_EVERY == 0 or iteration + 1 == updates:
            if not torch.isfinite(history[-1]):
                raise MethodFailed(f"dm: matching loss became {float(history[-1])} by update {iteration + 1}")
            ctx.progress(step=iteration + 1, total=updates, loss=float(history[-1]))
    labels = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(ctx.ipc)
    return CondensedSet(images.detach().clone(), labels, metadata={
        "updates": updates, "loss_first": float(history[0]), "loss_last": float(history[-1])})
