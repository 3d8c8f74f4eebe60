"""``forgetting``: the most-forgotten examples per class (Toneva et al. 2018; Table 1, "forgetting").

A *forgetting event* is an example going from correctly to incorrectly classified
between two consecutive presentations during training (Toneva et al., §3).  The
training dynamics recorded while pretraining θ* (bool epochs×N: correct at each
epoch's presentation) give every example's count; per class the ``ipc`` examples
with the most events are kept, ties broken at random by the seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dsvbench.methods import (AccessDenied, BuildContext, CondensedSet, MethodFailed,
                              register_method, take_per_class)

_REPRETRAIN = ("the pretrained checkpoint has no usable training dynamics; re-pretrain "
               "(delete its cache entry, the harness records dynamics while pretraining)")


@dataclass(frozen=True)
class ForgettingRecipe:
    """Per class, the most-forgotten examples while pretraining θ* (Toneva et al. 2018); no hyper-parameters.

    Never-learned examples (never correct at any presentation) count as forgotten the
    most, as in Toneva et al. (who give them an infinite count): here epochs + 1, more
    than any learned example can reach, so they are ranked first.  The seed only breaks
    ties — with few pretraining epochs many examples tie (e.g. at 0 events), so the
    set then varies a lot with the seed.
    """


def forgetting_counts(dynamics: torch.Tensor) -> torch.Tensor:
    """Forgetting events per example from a bool epochs×N correctness matrix.

    Events = #{e : correct at e and incorrect at e+1}; never-learned examples get
    epochs + 1 (ranked above every learned example, whose count is at most epochs // 2).
    """
    correct = dynamics.bool()
    events = (correct[:-1] & ~correct[1:]).sum(0)
    never_learned = ~correct.any(0)
    return events.masked_fill(never_learned, correct.shape[0] + 1)


def _dynamics(ctx: BuildContext) -> torch.Tensor:
    """The recorded dynamics, checked against the training set; MethodFailed if unusable."""
    try:
        dynamics = ctx.dynamics
    except AccessDenied:
        raise MethodFailed(_REPRETRAIN) from None
    num_examples = len(ctx.train_labels)
    if dynamics.ndim != 2 or dynamics.numel() == 0:
        raise MethodFailed(f"{_REPRETRAIN} (got shape {tuple(dynamics.shape)})")
    if dynamics.shape[1] != num_examples:
        raise MethodFailed(f"training dynamics cover {dynamics.shape[1]} examples but the training "
                           f"set has {num_examples}; re-pretrain")
    if dynamics.shape[0] < 2:
        raise MethodFailed(f"training dynamics have {dynamics.shape[0]} epoch; forgetting needs at "
                           f"least 2 presentations per example; re-pretrain with more epochs")
    return dynamics


@register_method("forgetting", table_name="forgetting", group="selection", recipe=ForgettingRecipe,
                 eval_recipe="dc", needs_data=True, needs_dynamics=True, order=2)
def build_forgetting(ctx: BuildContext, recipe: ForgettingRecipe) -> CondensedSet:
    dynamics = _dynamics(ctx)
    counts = forgetting_counts(dynamics).cpu()
    labels = ctx.train_labels.cpu()
    indices = take_per_class(counts.double(), labels, ctx.num_classes, ctx.ipc, ctx.generator)
    epochs = dynamics.shape[0]
    metadata = {
        "indices": indices.tolist(),
        "forgetting_events": counts[indices].tolist(),          # epochs + 1 = never learned
        "epochs": epochs,
        "never_learned": int((counts == epochs + 1).sum()),
        "never_forgotten": int((counts == 0).sum()),
        "max_events_learned": int(counts[counts <= epochs].max()) if (counts <= epochs).any() else 0,
    }
    ctx.progress(step=1, total=1)
    device_indices = indices.to(ctx.train_images.device)
    return CondensedSet(ctx.train_images[device_indices].clone(), ctx.train_labels[device_indices].clone(),
                        metadata=metadata)
