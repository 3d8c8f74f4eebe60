"""``forgetting``: the most-forgotten examples per class (Toneva et al. 2018; Table 1, "forgetting").

A *forgetting event* is an example going from correctly to incorrectly classified
between two consecutive presentations during training (Toneva et al., §3).  The
training dynamics recorded while pretraining θ* (bool epochs×N: correct at each
epoch's presentation) give every example's count; per class the ``ipc`` examples
with the most events are kept, ties broken at random by the seed.

Measured to choose the default (IPC 1, ``dc`` retraining 300 epochs, 5 seeds, mean ±
population std, CPU; ``python run_bench.py --dataset D --methods forgetting --seeds 5
--quiet --jobs 1 --out OUT --cache-dir C`` plus ``--set forgetting.FIELD=VALUE``):

================================  ==============  ===============================
never_learned (epochs)            digits          MNIST (θ* 3 epochs)
================================  ==============  ===============================
``zero`` (default, DeepCore)      53.2 ± 8.1      **39.5 ± 8.5**  (DC: 35.5 ± 5.6)
``exclude``                       53.2 ± 8.1      39.5 ± 8.5 (the zero sets)
``max`` (Toneva's code)           41.8 ± 4.7      24.1 ± 3.4
``max``, ``epochs=10``            50.2 ± 3.6      –
``zero``, ``epochs=10``           67.6 ± 2.9      –
random (for scale)                68.0 ± 7.2      64.1 ± 4.7      (DC: 64.9 ± 3.5)
================================  ==============  ===============================

digits: θ* at the default 30 epochs (12 training images never learned; ``epochs=10``: 136;
random: the committed ``results/digits-default``);
MNIST: ``--dataset mnist --data-root ../shared/datasets/mnist --pretrain-epochs 3``
(θ* train 99.3 %, 456 images never learned).  ``zero`` is the default because it is the
reading that reproduces the DC paper's MNIST figure (Δ +4.0, inside both spreads); ``max``
fills the set with never-learned images — the hardest, most ambiguous ones — and lands
11 points below it (the same at θ* 5 epochs: 18.2 ± 6.2, ``results/mnist-coreset``; on the
CIFAR-10 copy at the full 50 epochs, docs/sources.md#measured-at-the-papers-budgets: 9.8 ± 1.4 against 13.5 ± 1.2, θ* agreeing
with 0 % of the picked labels).  ``exclude`` picks the same sets as ``zero`` whenever every
class has an example forgotten at least once (all runs above).  Toneva et al. also sum the
counts over 5 training runs; one run (θ*'s) is scored here, see ``ForgettingRecipe``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dsvbench.methods import (AccessDenied, BuildContext, CondensedSet, MethodFailed,
                              register_method, take_per_class)
from dsvbench.registry import UserError

_REPRETRAIN = ("the pretrained checkpoint has no usable training dynamics; re-pretrain "
               "(delete its cache entry, the harness records dynamics while pretraining)")
NEVER_LEARNED = ("max", "zero", "exclude")


@dataclass(frozen=True)
class ForgettingRecipe:
    """Per class, the most-forgotten examples while pretraining θ* (Toneva et al. 2018).

    ``never_learned`` — the count of examples never classified correctly at any
    presentation (conventions differ, docs/sources.md#facts-from-the-literature):

    * ``zero`` (default): DeepCore counts only correct→incorrect transitions, so they get
      0 — the reading that reproduces the DC paper's MNIST figure (module docstring).
    * ``max``: Toneva et al.'s code gives them an infinite count; here epochs + 1, more
      than any learned example can reach, so they are ranked first.
    * ``exclude``: ranked below every learned example (picked only when a class has
      fewer than ``ipc`` learned examples; the metadata counts such picks).

    ``epochs`` — how many of θ*'s recorded epochs are scored (the first ``epochs``;
    0 = all).  Toneva et al. sum the counts over 5 training runs; here one run (θ*'s
    pretraining) is scored: each further run would cost a full pretraining (MNIST on this
    project's 2-core CPU: ≈ 19 min per epoch under load), so the number of scoring runs is
    not a field.
    The seed only breaks ties — with few pretraining epochs many examples tie (e.g. at
    0 events), so the set then varies a lot with the seed.
    """
    never_learned: str = "zero"
    epochs: int = 0

    def __post_init__(self) -> None:
        if self.never_learned not in NEVER_LEARNED:
            raise UserError(f"forgetting.never_learned={self.never_learned!r} is not valid; "
                            f"choose one of: {', '.join(NEVER_LEARNED)}")
        if self.epochs < 0 or self.epochs == 1:
            raise UserError(f"forgetting.epochs must be 0 (all) or >= 2, got {self.epochs}")


def forgetting_counts(dynamics: torch.Tensor, never_learned: str = "zero") -> torch.Tensor:
    """Forgetting events per example from a bool epochs×N correctness matrix.

    Events = #{e : correct at e and incorrect at e+1}.  Never-learned examples get
    epochs + 1 (``max``: above every learned example, whose count is at most epochs // 2),
    0 (``zero``) or −1 (``exclude``: below every learned example).
    """
    correct = dynamics.bool()
    events = (correct[:-1] & ~correct[1:]).sum(0)
    value = {"max": correct.shape[0] + 1, "zero": 0, "exclude": -1}[never_learned]
    return events.masked_fill(~correct.any(0), value)


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
    if recipe.epochs:
        if recipe.epochs > dynamics.shape[0]:
            raise MethodFailed(f"forgetting.epochs={recipe.epochs} but θ*'s pretraining recorded "
                               f"{dynamics.shape[0]} epochs; lower it or pretrain longer")
        dynamics = dynamics[:recipe.epochs]
    learned = dynamics.bool().any(0).cpu()
    counts = forgetting_counts(dynamics, recipe.never_learned).cpu()
    labels = ctx.train_labels.cpu()
    indices = take_per_class(counts.double(), labels, ctx.num_classes, ctx.ipc, ctx.generator)
    metadata = {
        "indices": indices.tolist(),
        "forgetting_events": counts[indices].tolist(),
        "never_learned_convention": recipe.never_learned,
        "epochs": dynamics.shape[0],
        "never_learned": int((~learned).sum()),
        "never_learned_picked": int((~learned[indices]).sum()),
        "never_forgotten": int((counts[learned] == 0).sum()),
        "max_events_learned": int(counts[learned].max()) if learned.any() else 0,
    }
    ctx.progress(step=1, total=1)
    device_indices = indices.to(ctx.train_images.device)
    return CondensedSet(ctx.train_images[device_indices].clone(), ctx.train_labels[device_indices].clone(),
                        metadata=metadata)
