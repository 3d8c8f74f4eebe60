"""``dc``: Dataset Condensation with gradient matching (Zhao, Mopuri, Bilen, ICLR 2021; Table 1, "DC").

Synthetic images with fixed labels are learned so that, for many random networks
along their training on the synthetic set, the gradient of the loss on the synthetic
images of class c matches the gradient on a real batch of class c (Algorithm 1):

    for each of ``iterations`` (K):   a fresh randomly initialized network θ
        for outer step 1..ς_outer:
            L = Σ_c D(∇θ CE(θ; S_c), ∇θ CE(θ; real batch of class c))
            one SGD step on the synthetic images S
            (not after the last outer step) train θ on S for ς_inner epochs

D is the layer-wise distance of the paper (Eq. 10; ``distance_wb`` in the reference
code VICO-UoE/DatasetCondensation): for each weight tensor, Σ over output units
(rows of the out×rest reshaped gradient) of 1 − cos(g_syn, g_real), with 1e-6 added
to the product of the norms.  1-D parameters (biases, norm scales and shifts) are
ignored; a linear layer's out×in gradient is compared row by row like a conv's.

With ``dsa=True`` it is DSA (Zhao & Bilen, ICML 2021): the real and the synthetic
batch of each class go through the same random differentiable augmentation
(:func:`dsvbench.augment.dsa_siamese`) before the gradients are taken, and the inner
network training augments the synthetic batches (per image).  The published DSA
figures retrain with DSA for 1000 epochs; the column's evaluation recipe is the
harness's choice (``--eval-recipe`` / the ``dsa`` augmentation of the eval recipe).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, stack_module_state, vmap

from dsvbench.augment import DEFAULT_STRATEGY, dsa_augment, dsa_siamese, parse_strategy
from dsvbench.methods import BuildContext, CondensedSet, MethodFailed, register_method
from dsvbench.models import MODELS, activation_bytes
from dsvbench.pergroup import LAYERS, per_group_grads, weighted_cross_entropy
from dsvbench.ranges import MAX_SIZE, POSITIVE, UNIT, Range, count
from dsvbench.registry import UserError
from dsvbench.vectorized import supports_stacking

# Reference ``get_loops``: IPC -> (outer loop, inner loop); the outer loop always equals the IPC.
LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
BATCHNORM_IMAGES_PER_CLASS = 16   # reference: real images that fix BatchNorm statistics
LOG_EVERY = 50                    # iterations between progress reports / finiteness checks (host syncs)


@dataclass(frozen=True)
class DCRecipe:
    """DC hyper-parameters; defaults from the paper (§4) and the reference ``main.py``.

    * ``iterations`` 1000 — K, fresh random networks (``--Iteration``).
    * ``outer_loop`` / ``inner_loop`` — 0 means by IPC as the reference's ``get_loops``
      (IPC 1: 1/1, 10: 10/50, 50: 10 inner; outer = IPC).  Other IPCs (choice, the
      reference stops): outer = IPC, inner of the nearest tabulated IPC.
    * ``lr_img`` 0.1, ``momentum_img`` 0.5 — SGD on the synthetic images.
    * ``lr_net`` 0.01, ``momentum_net`` 0 — SGD of the inner network updates (the latest
      reference code; an earlier commit used momentum 0.5).
    * ``batch_real`` 256 real images per class per matching step; ``batch_train`` 256
      synthetic images per inner-loop minibatch (one batch up to IPC 25 with 10 classes).
    * ``init`` — ``real`` (random training images of the class) or ``noise`` (standard
      normal in the normalized space).  The reference code defaults to noise and reports
      both "get similar performances"; later work (DSA, DM) initializes from real images.
    * ``dsa`` — Differentiable Siamese Augmentation with ``dsa_strategy``.
    """
    RANGES: ClassVar[dict[str, Range]] = {
        "iterations": count(1), "lr_img": POSITIVE, "lr_net": POSITIVE, "momentum_img": UNIT,
        "momentum_net": UNIT, "batch_real": count(1, MAX_SIZE), "batch_train": count(1, MAX_SIZE)}
    iterations: int = 1000
    outer_loop: int = 0
    inner_loop: int = 0
    lr_img: float = 0.1
    momentum_img: float = 0.5
    lr_net: float = 0.01
    momentum_net: float = 0.0
    batch_real: int = 256
    batch_train: int = 256
    init: str = "real"
    dsa: bool = False
    dsa_strategy: str = DEFAULT_STRATEGY

    def __post_init__(self) -> None:
        check_init_and_strategy("dc", self.init, self.dsa_strategy)
        for name in ("iterations", "batch_real", "batch_train"):
            if getattr(self, name) < 1:
                raise UserError(f"dc.{name} must be >= 1, got {getattr(self, name)}")
        if self.outer_loop < 0 or self.inner_loop < 0:
            raise UserError("dc.outer_loop and dc.inner_loop must be >= 0 (0 = by IPC)")

    @property
    def retrain(self) -> str:
        """The column's evaluation recipe: DSA sets are evaluated as in Zhao & Bilen 2021
        (``dsa``: DSA augmentation, 1000 epochs), DC sets as in Zhao et al. 2021 (``dc``)."""
        return "dsa" if self.dsa else "dc"

    def loops(self, ipc: int) -> tuple[int, int]:
        nearest = min(LOOPS, key=lambda tabulated: (abs(tabulated - ipc), tabulated))
        return self.outer_loop or ipc, self.inner_loop or LOOPS[nearest][1]


def check_init_and_strategy(method: str, init: str, strategy: str) -> None:
    """The two fields DC, DM and MTT share: ``init`` real | noise, and a DSA strategy (``none``: no
    augmentation); a bad value is one :class:`UserError` line naming the field."""
    if init not in ("real", "noise"):
        raise UserError(f"{method}.init={init!r} is not valid; choose real or noise")
    if strategy != "none":
        try:
            parse_strategy(strategy)
        except ValueError as error:
            raise UserError(f"{method}.dsa_strategy: {error}") from None


def layer_distance(grad_syn: torch.Tensor, grad_real: torch.Tensor) -> torch.Tensor:
    """Σ over output units of (1 − cosine) between the two gradients of one weight tensor."""
    if grad_real.ndim == 1:
        return grad_syn.new_zeros(())
    syn, real = grad_syn.flatten(1), grad_real.flatten(1)
    cosine = (syn * real).sum(-1) / (syn.norm(dim=-1) * real.norm(dim=-1) + 1e-6)
    return (1 - cosine).sum()


def matching_distance(grads_syn, grads_real) -> torch.Tensor:
    """The paper's gradient-matching distance D summed over layers."""
    return sum(layer_distance(s, r) for s, r in zip(grads_syn, grads_real))


def _class_matching_loss(net: nn.Module, real: torch.Tensor, syn: torch.Tensor, label: int,
                         recipe: DCRecipe, generator: torch.Generator) -> torch.Tensor:
    if recipe.dsa:
        real, syn = dsa_siamese([real, syn], generator, strategy=recipe.dsa_strategy)
    params = [p for p in net.parameters() if p.requires_grad]
    real_loss = F.cross_entropy(net(real), torch.full((len(real),), label, device=real.device))
    grads_real = [g.detach() for g in torch.autograd.grad(real_loss, params)]
    syn_loss = F.cross_entropy(net(syn), torch.full((len(syn),), label, device=syn.device))
    grads_syn = torch.autograd.grad(syn_loss, params, create_graph=True)
    return matching_distance(grads_syn, grads_real)


def class_weight_grads(net: nn.Module, images: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                       create_graph: bool = False) -> list[torch.Tensor]:
    """Per-class gradients of every conv / linear weight in ONE forward and backward pass.

    ``images`` is K×M×C×H×W (class k's batch, padded to M), ``mask`` K×M (1 = real entry),
    ``labels`` K.  Class k's loss is the mean CE over its unpadded entries; the K weight gradients
    come from :func:`dsvbench.pergroup.per_group_grads` — the same numbers as K separate
    ``autograd.grad`` calls (tested), without K passes of Python and kernel overhead.  One
    K×(weight shape) tensor per conv / linear layer, in forward order (biases and norm parameters
    are ignored by DC's distance, so they are not formed).
    """
    classes, per_class = mask.shape
    targets = labels.repeat_interleave(per_class)
    weights = (mask / mask.sum(1, keepdim=True).clamp_min(1)).flatten()
    grads, _ = per_group_grads(net, images.flatten(0, 1), weighted_cross_entropy(weights, targets), None,
                               classes, create_graph=create_graph, weights_only=True)   # K blocks of M
    return list(grads.values())


def batched_distance(grads_syn: list[torch.Tensor], grads_real: list[torch.Tensor]) -> torch.Tensor:
    """Σ over classes and layers of :func:`layer_distance` for class-batched weight gradients."""
    total = grads_syn[0].new_zeros(())
    for syn, real in zip(grads_syn, grads_real):
        syn, real = syn.flatten(2), real.flatten(2)
        cosine = (syn * real).sum(-1) / (syn.norm(dim=-1) * real.norm(dim=-1) + 1e-6)
        total = total + (1 - cosine).sum()
    return total


def _padded(batches: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-class batches of different lengths into K×M×... with a K×M validity mask."""
    longest = max(len(b) for b in batches)
    stacked = batches[0].new_zeros((len(batches), longest, *batches[0].shape[1:]))
    mask = torch.zeros(len(batches), longest, device=batches[0].device)
    for k, batch in enumerate(batches):
        stacked[k, :len(batch)] = batch
        mask[k, :len(batch)] = 1
    return stacked, mask


def _matching_loss(net: nn.Module, reals: list[torch.Tensor], images: torch.Tensor, ipc: int,
                   recipe: DCRecipe, generator: torch.Generator) -> torch.Tensor:
    """Σ_c D(∇θ CE(S_c), ∇θ CE(real_c)) for all classes at once (DSA draws per class, in class order)."""
    classes = len(reals)
    syn = list(images.view(classes, ipc, *images.shape[1:]).unbind(0))
    if recipe.dsa:
        for c in range(classes):
            reals[c], syn[c] = dsa_siamese([reals[c], syn[c]], generator, strategy=recipe.dsa_strategy)
    labels = torch.arange(classes, device=images.device)
    real, mask = _padded(reals)
    grads_real = _real_class_grads(net, real, mask, labels)
    grads_syn = class_weight_grads(net, torch.stack(syn), torch.ones(classes, ipc, device=images.device),
                                   labels, create_graph=True)
    return batched_distance(grads_syn, grads_real)


# One pass over the real batches holds at most about this many bytes of activations; more classes are
# split into passes of whole classes.  The reference code runs one class at a time; one pass for all
# classes is faster on small inputs (digits: 1 198 images of 16 × 8 × 8, a few MB, one pass) but
# grows with classes × batch_real (MNIST at width 128: ≈ 0.5 GB per class, 10 GB peak in one pass).
REAL_PASS_BYTES = 512 * 2 ** 20


def _real_class_grads(net: nn.Module, real: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """The classes' real-batch weight gradients (detached), in passes of as many whole classes as fit
    in :data:`REAL_PASS_BYTES` of activations.  Each class's gradient is formed from its own examples
    only, so a split changes nothing but the floating-point blocking: on 28 × 28 inputs with one thread
    the passes give the one-pass numbers bit for bit (tested); with several threads the last bits move.
    Small inputs (digits) stay in one pass, so their sets do not change."""
    passes = class_passes(net, real[0, :1], [real.shape[1]] * len(labels))
    if len(passes) == 1:
        return [g.detach() for g in class_weight_grads(net, real, mask, labels)]
    if all(len(p) == 1 for p in passes):   # a class per pass, as the reference runs it: a plain gradient
        parts = [single_class_weight_grads(net, real[k][mask[k] > 0], labels[k]) for k in range(len(labels))]
    else:   # detached per pass: a pass's gradients would otherwise hold that pass's whole graph until the end
        parts = [[g.detach() for g in class_weight_grads(net, real[p[0]:p[-1] + 1], mask[p[0]:p[-1] + 1],
                                                          labels[p[0]:p[-1] + 1])]
                 for p in passes]
    return [torch.cat([part[layer] for part in parts]) for layer in range(len(parts[0]))]


def class_passes(net: nn.Module, image: torch.Tensor, sizes: list[int]) -> list[list[int]]:
    """The classes (indices, in order) of each pass over real batches of ``sizes`` images: as many whole
    classes per pass as fit in :data:`REAL_PASS_BYTES` of ``net``'s activations (``image``: one input),
    at least one.  DC's gradients and DM's embeddings both go in these passes."""
    per_image = activation_bytes(net, image)
    passes: list[list[int]] = [[]]
    held = 0
    for k, size in enumerate(sizes):
        if passes[-1] and per_image * (held + size) > REAL_PASS_BYTES:
            passes.append([])
            held = 0
        passes[-1].append(k)
        held += size
    return passes


def single_class_weight_grads(net: nn.Module, images: torch.Tensor, label: torch.Tensor) -> list[torch.Tensor]:
    """One class's (detached) conv / linear weight gradients of its mean CE, each 1 × (weight shape), in
    forward order like :func:`class_weight_grads`, through a plain ``autograd.grad``: the same numbers
    as the per-group pass of one class (tested, one and two threads), without the copies of the layer
    outputs that the per-group gradient keeps (MNIST at width 128: 0.1 GB less per pass)."""
    order: list[nn.Module] = []
    handles = [m.register_forward_hook(lambda module, args, output: order.append(module))
               for m in net.modules() if isinstance(m, LAYERS)]
    try:
        logits = net(images)
    finally:
        for handle in handles:
            handle.remove()
    loss = F.cross_entropy(logits, label.expand(len(images)))
    return [g.detach().unsqueeze(0) for g in torch.autograd.grad(loss, [m.weight for m in order])]


def _freeze_batchnorm(net: nn.Module, sample_real) -> None:
    """Reference behaviour: with BatchNorm, set its statistics from 16 real images per class, then freeze."""
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    net.train()
    with torch.no_grad():
        net(sample_real(BATCHNORM_IMAGES_PER_CLASS))
    for module in norms:
        module.eval()


def _train_network(net: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                   labels: torch.Tensor, epochs: int, recipe: DCRecipe, generator: torch.Generator) -> None:
    """Inner loop: ``epochs`` passes of minibatch SGD over the (detached) synthetic set."""
    net.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(labels), generator=generator).split(recipe.batch_train):
            batch = batch.to(images.device)
            inputs = images[batch]
            if recipe.dsa:
                inputs = dsa_augment(inputs, generator, strategy=recipe.dsa_strategy)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(inputs), labels[batch]).backward()
            optimizer.step()


def build_dc_many(contexts: list[BuildContext], recipe: DCRecipe) -> list[CondensedSet]:
    """The seeds' networks stacked on accelerators (one ``vmap``-ed matching step for all seeds);
    one after another on the CPU, or for what the stacked step does not cover (batch norm, DSA,
    IPC > 1 with its inner loop) — see :func:`build_dc_stacked`."""
    ctx = contexts[0]
    with torch.device("meta"):   # the architecture only: no parameters drawn
        net = MODELS.get(ctx.model_name)(ctx.shape)
    stackable = (ctx.device.type != "cpu" and recipe.loops(ctx.ipc)[0] == 1 and not recipe.dsa
                 and supports_stacking(net))
    return build_dc_stacked(contexts, recipe) if stackable else [build_dc(c, recipe) for c in contexts]


@register_method("dc", table_name="DC", group="synthesis", recipe=DCRecipe, eval_recipe="dc",
                 needs_data=True, order=1, version=2, cost=30,   # 2: seeds batched, per-class gradients in one pass
                 smoke=dict(iterations=2, outer_loop=2, inner_loop=1, batch_real=8),
                 build_many=build_dc_many, batched_on_cpu=False)
def build_dc(ctx: BuildContext, recipe: DCRecipe) -> CondensedSet:
    """Gradient matching over fresh random networks (Zhao et al. 2021, Algorithm 1)."""
    sample, sample_all = class_sampler(ctx)
    labels = torch.arange(ctx.num_classes, device=ctx.device).repeat_interleave(ctx.ipc)
    images = initial_images(ctx, recipe, sample_all).requires_grad_(True)
    image_optimizer = torch.optim.SGD([images], lr=recipe.lr_img, momentum=recipe.momentum_img)
    outer_loop, inner_loop = recipe.loops(ctx.ipc)
    history = []
    for iteration in range(recipe.iterations):
        net = ctx.fresh_model()
        net.train()
        net_optimizer = torch.optim.SGD(net.parameters(), lr=recipe.lr_net, momentum=recipe.momentum_net)
        total = images.new_zeros(())
        for outer in range(outer_loop):
            _freeze_batchnorm(net, sample_all)
            reals = [sample(c, recipe.batch_real) for c in range(ctx.num_classes)]
            loss = _matching_loss(net, reals, images, ctx.ipc, recipe, ctx.generator)
            image_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            image_optimizer.step()
            total = total + loss.detach()
            if outer < outer_loop - 1:
                _train_network(net, net_optimizer, images.detach(), labels, inner_loop, recipe, ctx.generator)
        history.append(total / (ctx.num_classes * outer_loop))   # a device scalar: no sync per iteration
        if (iteration + 1) % LOG_EVERY == 0 or iteration + 1 == recipe.iterations:
            _check_finite(history[-1], iteration)
            ctx.progress(step=iteration + 1, total=recipe.iterations, loss=float(history[-1]))
    if not torch.isfinite(images).all():
        raise MethodFailed("dc: synthetic images contain NaN/Inf")
    return CondensedSet(images.detach().clone(), labels.clone(), metadata={
        "iterations": recipe.iterations, "outer_loop": outer_loop, "inner_loop": inner_loop,
        "matching_loss_first": float(history[0]), "matching_loss_last": float(history[-1])})


def build_dc_stacked(contexts: list[BuildContext], recipe: DCRecipe) -> list[CondensedSet]:
    """DC at one outer step per iteration (IPC 1), all seeds in one ``torch.func`` pass: ``vmap``
    over seeds of the gradient (w.r.t. the images) of the matching loss, whose per-class network
    gradients are a ``vmap`` over classes.  Seed s draws its images, networks and real batches
    from its own generator in the order of :func:`build_dc`, and SGD is element-wise, so seed s
    follows its single-seed trajectory (tested on the CPU).  Not for batch norm or DSA."""
    ctx, seeds = contexts[0], len(contexts)
    samplers = [class_sampler(c) for c in contexts]
    images = torch.stack([initial_images(c, recipe, all_) for c, (_, all_) in zip(contexts, samplers)])
    images.requires_grad_(True)
    optimizer = torch.optim.SGD([images], lr=recipe.lr_img, momentum=recipe.momentum_img)
    classes = torch.arange(ctx.num_classes, device=ctx.device)
    with torch.device("meta"):
        skeleton = MODELS.get(ctx.model_name)(ctx.shape)
    weights = [n for n, p in skeleton.named_parameters() if p.dim() > 1]   # DC ignores 1-D tensors

    def class_grads(params, x, mask):
        def loss(p, inputs, weight, label):
            ce = F.cross_entropy(functional_call(skeleton, p, (inputs,)), label.expand(len(inputs)), reduction="none")
            return (ce * weight).sum() / weight.sum().clamp_min(1)
        return vmap(grad(loss), in_dims=(None, 0, 0, 0))(params, x, mask, classes)

    def matching(syn, params, real, mask):
        grads_real, grads_syn = class_grads(params, real, mask), class_grads(params, syn, torch.ones_like(mask[:, :syn.shape[1]]))
        return batched_distance([grads_syn[n] for n in weights], [grads_real[n].detach() for n in weights])
    step = vmap(grad_and_value(matching))
    history = []
    for iteration in range(recipe.iterations):
        params, reals = [], []
        for c, (sample, _) in zip(contexts, samplers):
            params.append(c.fresh_model())
            reals.append(_padded([sample(k, recipe.batch_real) for k in range(ctx.num_classes)]))
        longest = max(r.shape[1] for r, _ in reals)
        real = torch.stack([F.pad(r, (0, 0, 0, 0, 0, 0, 0, longest - r.shape[1])) for r, _ in reals])
        mask = torch.stack([F.pad(m, (0, longest - m.shape[1])) for _, m in reals])
        stacked, _ = stack_module_state(params)
        syn = images.view(seeds, ctx.num_classes, ctx.ipc, *images.shape[2:])
        grad_images, loss = step(syn, {n: p.detach() for n, p in stacked.items()}, real, mask)
        images.grad = grad_images.view_as(images)
        optimizer.step()
        history.append(loss.detach() / ctx.num_classes)
        if (iteration + 1) % LOG_EVERY == 0 or iteration + 1 == recipe.iterations:
            if not torch.isfinite(history[-1]).all():
                raise MethodFailed(f"dc: matching loss became {history[-1].tolist()} by iteration {iteration + 1}")
            ctx.progress(step=iteration + 1, total=recipe.iterations, loss=float(history[-1].mean()))
    labels = classes.repeat_interleave(ctx.ipc)
    return [CondensedSet(images.detach()[s].clone(), labels.clone(), metadata={
        "iterations": recipe.iterations, "outer_loop": 1, "inner_loop": recipe.loops(ctx.ipc)[1],
        "matching_loss_first": float(history[0][s]), "matching_loss_last": float(history[-1][s])})
        for s in range(seeds)]


def class_sampler(ctx: BuildContext):
    """``sample(c, n)``: n random training images of class c (all of them when fewer), drawn from
    the seed's generator; ``sample_all(n)``: the same for every class, in class order."""
    members = [ctx.class_indices(c) for c in range(ctx.num_classes)]
    if min(len(m) for m in members) == 0:
        raise MethodFailed("dc needs at least one training image per class")

    def sample(label: int, n: int) -> torch.Tensor:
        pool = members[label]
        return ctx.train_images[pool[torch.randperm(len(pool), generator=ctx.generator)[:n].to(pool.device)]]

    def sample_all(n: int) -> torch.Tensor:
        return torch.cat([sample(c, n) for c in range(ctx.num_classes)])
    return sample, sample_all


def initial_images(ctx: BuildContext, recipe: DCRecipe, sample_all) -> torch.Tensor:
    """Real images of each class (``init=real``) or standard normal noise, detached."""
    if recipe.init == "real":
        images = sample_all(ctx.ipc).detach().clone()
        if len(images) < ctx.num_classes * ctx.ipc:
            raise MethodFailed(f"dc init=real needs {ctx.ipc} training images per class")
        return images
    shape = (ctx.num_classes * ctx.ipc, ctx.shape.channels, ctx.shape.size, ctx.shape.size)
    return torch.randn(shape, generator=ctx.generator).to(ctx.device)


def _check_finite(loss: torch.Tensor, iteration: int) -> None:
    if not torch.isfinite(loss):
        raise MethodFailed(f"dc: matching loss became {float(loss)} by iteration {iteration + 1}")
