"""``random``: IPC real training images per class, uniformly at random (Table 1, "random")."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dsvbench.methods import BuildContext, CondensedSet, register_method, take_per_class


@dataclass(frozen=True)
class RandomRecipe:
    """No hyper-parameters: the seed alone decides which images are drawn."""


@register_method("random", table_name="random", group="selection", recipe=RandomRecipe,
                 eval_recipe="dc", needs_data=True, order=0)
def build_random(ctx: BuildContext, recipe: RandomRecipe) -> CondensedSet:
    """IPC real training images per class, drawn uniformly at random with the seed."""
    labels = ctx.train_labels.cpu()
    scores = torch.rand(len(labels), generator=ctx.generator)
    chosen = take_per_class(scores, labels, ctx.num_classes, ctx.ipc)
    chosen = chosen.to(ctx.train_images.device)
    return CondensedSet(ctx.train_images[chosen].clone(), ctx.train_labels[chosen].clone(),
                        metadata={"indices": chosen.tolist()})
