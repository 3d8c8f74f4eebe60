"""``dsa``: Dataset Condensation with Differentiable Siamese Augmentation (Zhao & Bilen, ICML 2021).

DC's gradient matching (``dsvbench.baselines.dc``) with the real and the synthetic batch of each
class put through the same random differentiable augmentation before the gradients are taken, and
the inner network trained on augmented synthetic batches — DC's code with ``dsa=True``, as its own
column.  ``--set dc.dsa=true`` still gives the same sets under the ``dc`` column's name.

Defaults are the DSA reference code's (VICO-UoE/DatasetCondensation ``main.py --method DSA``):
DC's budgets and loops (1000 iterations, outer/inner loops by IPC, lr_img 0.1, lr_net 0.01, 256
real images per class), initialization from real images, and the strategy
``color_crop_cutout_flip_scale_rotate`` — without ``flip`` on digit datasets (the reference README's
setting for MNIST and SVHN: "flip augmentation is not good for digits").  The column is retrained
with the ``dsa`` recipe: DSA augmentation, 1000 epochs, as the DSA paper evaluates its sets.
"""
from __future__ import annotations

from dataclasses import dataclass

from dsvbench.augment import DSA_KINDS
from dsvbench.baselines.dc import DCRecipe, build_dc, build_dc_many
from dsvbench.config import DIGIT_DATASETS
from dsvbench.methods import BuildContext, CondensedSet, register_method


@dataclass(frozen=True)
class DSARecipe(DCRecipe):
    """DC's fields (see ``dc``) with DSA on: ``dsa`` True; ``dsa_strategy`` the reference's default,
    without ``flip`` on digit datasets (``recipe_defaults``)."""
    dsa: bool = True


def dsa_defaults(dataset: str) -> dict[str, str]:
    """No horizontal flip on digit datasets (digits, MNIST, SVHN), as the DSA reference README says."""
    return {"dsa_strategy": DSA_KINDS["dsa_noflip"]} if dataset in DIGIT_DATASETS else {}


def build_dsa_many(contexts: list[BuildContext], recipe: DSARecipe) -> list[CondensedSet]:
    return build_dc_many(contexts, recipe)


@register_method("dsa", table_name="DSA", group="synthesis", recipe=DSARecipe, eval_recipe="dc",
                 needs_data=True, order=2, cost=45, recipe_defaults=dsa_defaults,
                 smoke=dict(iterations=2, outer_loop=2, inner_loop=1, batch_real=8),
                 build_many=build_dsa_many, batched_on_cpu=False,
                 in_all=False)   # newer than Table 1: run by name (--methods all dsa)
def build_dsa(ctx: BuildContext, recipe: DSARecipe) -> CondensedSet:
    """Gradient matching with Siamese augmentation (Zhao & Bilen 2021, Algorithm 1)."""
    return build_dc(ctx, recipe)
