"""``kcenter``: greedy k-center per class in θ*'s feature space (Sener & Savarese, ICLR 2018).

The coreset baseline "K-Center" of the dataset-condensation tables (Zhao et al. 2021, Table 1):
per class, centers are added one at a time, each the candidate farthest (Euclidean, in the
penultimate embedding of θ*, a ConvNet trained on the whole training set) from its nearest
center so far — the greedy 2-approximation of the minimax facility location problem that Sener &
Savarese use for active learning.  The first center is not fixed by the method:

* ``first="random"`` (default): drawn uniformly from the class with the seed, as in Sener &
  Savarese's greedy algorithm, so seeds differ (at IPC 1 the set is one random image per class
  in the feature space's terms: k-center has nothing to optimize with one center).
* ``first="mean"``: the candidate nearest the class mean (deterministic; a named variant).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from dsvbench.methods import BuildContext, CondensedSet, MethodFailed, register_method
from dsvbench.ranges import MAX_SIZE, Range, count
from dsvbench.registry import UserError

FIRST = ("random", "mean")


@dataclass(frozen=True)
class KCenterRecipe:
    """Greedy k-center per class in θ*'s features.

    * ``first`` — how each class's first center is chosen: ``random`` (drawn with the seed, Sener &
      Savarese's greedy) or ``mean`` (nearest the class mean).
    * ``batch_size`` — images embedded at a time (no effect on the result).
    """
    RANGES: ClassVar[dict[str, Range]] = {"batch_size": count(1, MAX_SIZE)}
    first: str = "random"
    batch_size: int = 512

    def __post_init__(self) -> None:
        if self.first not in FIRST:
            raise UserError(f"kcenter.first={self.first!r} is not valid; choose one of: {', '.join(FIRST)}")


def kcenter_order(features: torch.Tensor, count: int, first: int) -> torch.Tensor:
    """Positions (into ``features``, n×d) of ``count`` greedy k-center picks starting at ``first``:
    each next pick maximizes the distance to its nearest chosen center (first index on ties).
    Float64, so near-ties do not flip with the summation order."""
    features = features.double()
    n = len(features)
    if not 0 < count <= n:
        raise ValueError(f"cannot pick {count} centers of {n} candidates")
    order = [first]
    nearest = (features - features[first]).norm(dim=1)
    for _ in range(count - 1):
        pick = int(torch.argmax(nearest))
        order.append(pick)
        nearest = torch.minimum(nearest, (features - features[pick]).norm(dim=1))
    return torch.tensor(order, dtype=torch.long, device=features.device)


@register_method("kcenter", table_name="k-center", group="selection", recipe=KCenterRecipe,
                 eval_recipe="dc", needs_data=True, needs_model=True, order=2,
                 in_all=False)   # newer than Table 1: run by name (--methods all kcenter)
def build_kcenter(ctx: BuildContext, recipe: KCenterRecipe) -> CondensedSet:
    """IPC greedy k-center picks per class in θ*'s embedding."""
    features = ctx.pretrained_features(recipe.batch_size)
    chosen = []
    for label in range(ctx.num_classes):
        members = ctx.class_indices(label)
        if len(members) < ctx.ipc:
            raise MethodFailed(f"class {label} has {len(members)} candidates, fewer than ipc={ctx.ipc}")
        own = features[members].double()
        if recipe.first == "random":
            first = int(torch.randint(len(members), (1,), generator=ctx.generator))
        else:
            first = int(torch.argmin((own - own.mean(0)).norm(dim=1)))
        chosen.append(members[kcenter_order(own, ctx.ipc, first)])
    indices = torch.cat(chosen)
    return CondensedSet(ctx.train_images[indices].clone(), ctx.train_labels[indices].clone(),
                        metadata={"indices": indices.tolist(), "first": recipe.first,
                                  "feature_dim": int(features.shape[1])})
