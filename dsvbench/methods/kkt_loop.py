"""The λ loop ``dsvs`` and ``dsvg`` share (Algorithm 1): the engine built from a recipe, the steps
on λ with dual feasibility, λ's unit and rescaling, the manifold term's augmentation per seed group,
the optimizers and the per-step diagnostics.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..augment import manifold_apply, manifold_draw
from .base import MethodFailed
from .deepkkt import DeepKKT, KKTValues, norm1
from .kkt_recipe import KKTRecipe
from .kkt_terms import floor_gradient, initial_multipliers


def make_kkt(model: nn.Module, recipe: KKTRecipe) -> DeepKKT:
    return DeepKKT(model, recipe.params, recipe.distance, recipe.sqrt, recipe.normalize, recipe.beta,
                   recipe.chunk, objective=recipe.objective, activation=recipe.activation,
                   relu_alpha=recipe.relu_alpha, primal_weight=recipe.primal_weight)


def step_multipliers(recipe: KKTRecipe, optimizer: torch.optim.Optimizer, mu: torch.Tensor, alive: torch.Tensor,
                     keys: torch.Tensor, keep: int, n_keys: int) -> torch.Tensor:
    """One step on μ (its ``.grad`` set by the caller) and dual feasibility; returns who is alive.
    ``dual="remove"``: Algorithm 1 — λ < 0 leaves X (:func:`remove_negative`), μ clamped at 0;
    ``dual="floor"``: Haim et al.'s penalty below ``lambda_floor`` joins the gradient, nobody leaves."""
    if recipe.dual == "floor":
        mu.grad = mu.grad + floor_gradient(mu.detach(), recipe.lambda_floor)
        optimizer.step()
        return alive
    optimizer.step()
    with torch.no_grad():
        alive = remove_negative(mu.detach(), alive, keys, keep, n_keys=n_keys)
        mu.clamp_(min=0.0)
    return alive


def lambda_unit(kkt: DeepKKT, inputs: torch.Tensor, labels: torch.Tensor, how: str) -> float:
    """The scale s of λ = s·μ (μ starts at 1 and is what the optimizer moves): per-example
    gradients of well-fitted inputs are tiny, so θ* ≈ −Σλ∇θL needs a large λ; ``fit`` takes the
    uniform λ minimizing L_stat at the start, ``norm`` matches ‖G‖₁ to ‖θ*‖₁, a number is used as is."""
    if how == "fit":
        return kkt.fit_uniform_scale(inputs, labels)
    if how == "mean":   # Haim et al.'s 1/m (their gradient of Σλ y Φ is taken with grad_outputs 1/m)
        return 1.0 / max(len(labels), 1)
    if how == "norm":
        with torch.enable_grad():
            unit = kkt.total_grad(inputs, labels, torch.ones(len(labels), device=inputs.device))
        return float(norm1(kkt.targets) / norm1(unit).clamp_min(1e-30))
    try:
        return float(how)
    except ValueError:
        raise ValueError(f"lambda_scale={how!r}; valid: fit, norm or a positive number") from None


def rescale_groups(kkt: DeepKKT, inputs: torch.Tensor, labels: torch.Tensor, lam: torch.Tensor,
                   where: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Per group, the factor to multiply λ by: the best uniform c > 0 for L_stat (called every
    ``rescale_every`` steps, :func:`rescale_due`).  A common factor keeps the signs of λ (who
    survives) and the ranking (who is selected); it only lets the scale of Σλ∇θL follow θ*, which
    fixed-size steps on λ cannot do when the candidates' gradients grow or shrink by orders of
    magnitude (choice)."""
    return torch.tensor([kkt.fit_uniform_scale(inputs[where == g], labels[where == g], lam[where == g])
                         for g in range(n_groups)], device=inputs.device)


def augment_groups(images: torch.Tensor, where: torch.Tensor, generators: list[torch.Generator],
                   recipe: KKTRecipe) -> torch.Tensor:
    """A(X) of the manifold term for grouped candidates: group g's parameters drawn from
    generator g (its single-seed stream), all applied in one call."""
    counts = torch.bincount(where, minlength=len(generators)).tolist()
    draws = torch.cat([manifold_draw(k, g) for k, g in zip(counts, generators)])
    return manifold_apply(images, draws, recipe.aug_flip, recipe.aug_shift, recipe.aug_scale,
                          recipe.aug_brightness, recipe.aug_contrast)


def make_optimizer(kind: str, tensor: torch.Tensor, lr: float, momentum: float = 0.0) -> torch.optim.Optimizer:
    """Adam, or plain steps (``sgd``) with optional heavy-ball momentum (Haim et al.: 0.9)."""
    if kind == "adam":
        return torch.optim.Adam([tensor], lr=lr)
    if kind == "sgd":
        return torch.optim.SGD([tensor], lr=lr, momentum=momentum)
    raise ValueError(f"optimizer={kind!r}; valid: adam, sgd")


class History:
    """Diagnostics every few steps (the relative residual, entropy, survivors, label agreement) —
    the only points where values are read back to the host."""

    def __init__(self, kkt: DeepKKT, steps: int, points: int):
        self.kkt, self.every = kkt, max(steps // max(points, 1), 1)
        self.rows: list[dict[str, float]] = []

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def log(self, step: int, values: KKTValues, group: int, inputs: torch.Tensor, labels: torch.Tensor,
            lam: torch.Tensor, alive: int) -> None:
        row = {"step": step, "primal": float(values.primal[group]), "stat": float(values.stat[group]),
               "entropy": float(values.entropy[group]), "correct": float(values.correct[group]), "alive": alive}
        row.update(self.kkt.residuals(inputs, labels, lam))
        self.rows.append({k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()})

    def summary(self) -> dict:
        first, last = self.rows[0], self.rows[-1]
        out = {k: last[k] for k in ("residual_l1", "residual_l2", "residual_l1_all", "cosine",
                                    "entropy", "correct", "alive")}
        out.update(residual_l1_start=first["residual_l1"], entropy_start=first["entropy"],
                   stat_params=len(self.kkt.names), history=self.rows)
        return out


def rescale_due(step: int, every: int) -> bool:
    """λ is re-fitted every ``every`` steps (not at step 0)."""
    return every > 0 and step > 0 and step % every == 0


def log_groups(histories: list[History], step: int, values: KKTValues, images: torch.Tensor,
               labels: torch.Tensor, lam: torch.Tensor, where: torch.Tensor) -> None:
    """One History row per group (seed) at ``step``."""
    for g, history in enumerate(histories):
        members = where == g
        history.log(step, values, g, images[members], labels[members], lam[members], int(members.sum()))


def remove_negative(lam: torch.Tensor, alive: torch.Tensor, labels: torch.Tensor,
                    keep_per_class: int, n_keys: int | None = None) -> torch.Tensor:
    """Dual feasibility (Algorithm 1): candidates with λ < 0 leave X.  Each class (each value of
    ``labels``, e.g. seed × class keys) keeps at least ``keep_per_class`` candidates (its highest λ)
    so that IPC images can still be chosen.  Vectorized: no per-class loop, no host sync."""
    survivors = alive & (lam >= 0)
    if keep_per_class <= 0:
        return survivors
    keys = labels.long()
    n_keys = (int(keys.max()) + 1 if len(keys) else 0) if n_keys is None else n_keys   # given: no sync
    count = torch.zeros(n_keys, dtype=torch.long, device=lam.device)
    count.index_add_(0, keys, survivors.long())
    # rank of every candidate inside its class by λ (descending; ties by position)
    order = torch.argsort(lam, descending=True, stable=True)
    order = order[torch.argsort(keys[order], stable=True)]
    first = torch.searchsorted(keys[order], keys[order], right=False)
    rank = torch.empty_like(keys)
    rank[order] = torch.arange(len(keys), device=keys.device) - first
    return survivors | ((count[keys] < keep_per_class) & (rank < keep_per_class))


def check_finite(what: str, *values: torch.Tensor | float) -> None:
    for value in values:
        finite = torch.isfinite(value).all() if torch.is_tensor(value) else math.isfinite(value)
        if not finite:
            raise MethodFailed(f"{what}: non-finite values (NaN/Inf); lower the step sizes")


class LambdaLoop:
    """The λ side of Algorithm 1 that ``dsvs`` and ``dsvg`` share, for candidates of several seeds
    (group g = seed g): λ = unit[g]·μ, μ from ``recipe.lambda_init`` per seed (drawn from that seed's
    generator), the unit fitted per seed (:func:`lambda_unit`) and re-fitted every ``rescale_every``
    steps (:func:`rescale_groups`), μ's optimizer and step with dual feasibility
    (:func:`step_multipliers`), who is alive, and one :class:`History` per seed."""

    def __init__(self, kkt: DeepKKT, recipe: KKTRecipe, contexts: list, groups: torch.Tensor, keys: torch.Tensor,
                 per_seed: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device | str):
        self.kkt, self.recipe, self.groups, self.keys = kkt, recipe, groups, keys
        self.seeds, self.classes = len(contexts), contexts[0].num_classes
        self.unit = torch.tensor([lambda_unit(kkt, inputs, labels, recipe.lambda_scale) for inputs, labels in per_seed],
                                 device=device)
        mu = torch.cat([initial_multipliers(recipe.lambda_init, len(labels), c.generator)
                        for c, (_, labels) in zip(contexts, per_seed)])
        self.mu = mu.to(device).requires_grad_(True)
        self.optimizer = make_optimizer(recipe.lambda_optimizer, self.mu, recipe.alpha_lambda, recipe.lambda_momentum)
        self.alive = torch.ones(len(groups), dtype=torch.bool, device=device)
        self.histories = [History(kkt, recipe.steps, recipe.history_points) for _ in contexts]
        self.keep = contexts[0].ipc if recipe.keep_per_class else 0

    def lam(self, step: int, inputs: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
            where: torch.Tensor) -> torch.Tensor:
        """λ of the alive candidates ``index`` (their ``inputs``, ``labels``, groups ``where``) at ``step``,
        after the unit's re-fit when one is due."""
        if rescale_due(step, self.recipe.rescale_every):
            self.unit = self.unit * rescale_groups(self.kkt, inputs, labels, self.unit[where] * self.mu.detach()[index],
                                                   where, self.seeds)
        return self.unit[where] * self.mu.detach()[index]

    def set_gradient(self, index: torch.Tensor, where: torch.Tensor, grad_lam: torch.Tensor) -> None:
        """μ's gradient: ∇λ of the alive candidates times their unit, 0 for the removed."""
        self.mu.grad = torch.zeros_like(self.mu)
        self.mu.grad[index] = self.unit[where] * grad_lam

    def step(self) -> None:
        self.alive = step_multipliers(self.recipe, self.optimizer, self.mu, self.alive, self.keys, self.keep,
                                      self.seeds * self.classes)

    def final(self) -> torch.Tensor:
        """λ of every candidate at the end (the removed ones' last value)."""
        return self.unit[self.groups] * self.mu.detach()
