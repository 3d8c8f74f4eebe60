"""``herding``: greedy herding per class in a feature space (Table 1, "herding").

Welling (2009) herding, used for coreset selection by Chen et al. (2012) and run at
IPC 1/10/50 by the dataset-condensation literature (Zhao et al. 2020, Table 1): per
class with feature mean μ, step i picks the not-yet-chosen candidate x minimizing

    ‖(i+1)·μ − (Σ_{chosen} φ(x_j) + φ(x))‖₂

i.e. the example that brings the mean of the chosen set closest to the class mean.
It is an *argmin*: a public coreset library has ``argmax`` here, which selects the
example that pushes the chosen mean *away* from μ (a bug; SPEC §8b).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dsvbench.methods import BuildContext, CondensedSet, MethodFailed, register_method
from dsvbench.methods.base import cached_for_model
from dsvbench.registry import UserError

FEATURE_KINDS = ("pretrained", "random-init", "pixels")


@dataclass(frozen=True)
class HerdingRecipe:
    """Per class, greedy herding toward the class mean in a feature space (Chen et al. 2012).

    ``features`` — the space herding runs in:

    * ``pretrained`` (default, the literature's choice): the penultimate-layer embedding
      ``model.features(x)`` of the pretrained network θ*.  The DC authors' herding
      baseline used the features of a ConvNet trained on the full training set, and
      herding needs a space in which the class mean is meaningful — a trained embedding
      is one where classes are compact.
    * ``random-init``: the same architecture freshly initialized (drawn from the seed);
      an ablation showing what training the embedding buys.
    * ``pixels``: the flattened normalized images; the model-free ablation.

    What the seed changes: herding is deterministic given the features (ties go to the
    lowest index), so with ``pretrained`` and ``pixels`` every seed selects the *same*
    set — the spread over seeds in the table then comes from the retraining alone.
    With ``random-init`` the seed draws the random network, so the set changes.

    ``batch_size`` — images embedded at a time (choice; no effect on the result).
    """
    features: str = "pretrained"
    batch_size: int = 512

    def __post_init__(self) -> None:
        if self.features not in FEATURE_KINDS:
            raise UserError(f"herding.features={self.features!r} is not valid; "
                            f"choose one of: {', '.join(FEATURE_KINDS)}")
        if self.batch_size < 1:
            raise UserError(f"herding.batch_size must be >= 1, got {self.batch_size}")


def herding_order(features: torch.Tensor, count: int) -> torch.Tensor:
    """Positions (into ``features``, n×d) of ``count`` greedy herding picks, in pick order.

    Each step is vectorized over all candidates; chosen ones are masked with +inf.
    Computed in float64 so near-ties do not flip with the device's summation order.
    """
    features = features.double()
    n = len(features)
    if not 0 < count <= n:
        raise ValueError(f"cannot herd {count} of {n} candidates")
    mean = features.mean(0)
    chosen_sum = torch.zeros_like(mean)
    available = torch.ones(n, dtype=torch.bool, device=features.device)
    order = []
    for step in range(count):
        target = (step + 1) * mean - chosen_sum              # what the next pick should be
        distance = (features - target).norm(dim=1)
        distance = distance.masked_fill(~available, float("inf"))
        pick = int(torch.argmin(distance))                   # first minimum on ties
        order.append(pick)
        available[pick] = False
        chosen_sum += features[pick]
    return torch.tensor(order, dtype=torch.long, device=features.device)


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``model.features`` of every image, ``batch_size`` at a time, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        parts = [model.features(images[start:start + batch_size]).flatten(1)
                 for start in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(parts)


def training_features(ctx: BuildContext, recipe: HerdingRecipe) -> torch.Tensor:
    """The N×d embedding of the training set in the recipe's feature space.

    The ``pretrained`` embedding is cached under ``ctx.cache_dir`` (which belongs to the
    pretrained model) so every seed reuses it; ``pixels`` needs no network and
    ``random-init`` differs per seed, so neither is cached.
    """
    if recipe.features == "pixels":
        return ctx.train_images.flatten(1)
    if recipe.features == "random-init":
        return embed(ctx.fresh_model(), ctx.train_images, recipe.batch_size)
    return cached_for_model(ctx, f"herding_features_{recipe.features}",
                            lambda: embed(ctx.pretrained, ctx.train_images, recipe.batch_size))


@register_method("herding", table_name="herding", group="selection", recipe=HerdingRecipe,
                 eval_recipe="dc", needs_data=True, needs_model=True, order=1)
def build_herding(ctx: BuildContext, recipe: HerdingRecipe) -> CondensedSet:
    features = training_features(ctx, recipe)
    chosen = []
    for label in range(ctx.num_classes):
        members = ctx.class_indices(label)
        if len(members) < ctx.ipc:
            raise MethodFailed(f"class {label} has {len(members)} candidates, fewer than ipc={ctx.ipc}")
        chosen.append(members[herding_order(features[members], ctx.ipc)])
        ctx.progress(step=label + 1, total=ctx.num_classes)
    indices = torch.cat(chosen)
    return CondensedSet(ctx.train_images[indices].clone(), ctx.train_labels[indices].clone(),
                        metadata={"indices": indices.tolist(), "features": recipe.features,
                                  "feature_dim": int(features.shape[1])})
