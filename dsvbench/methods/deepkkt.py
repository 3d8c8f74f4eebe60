"""DeepKKT (paper §4, Algorithm 1, Eq. 7-8, Appendix B): the loss shared by ``dsvs`` and ``dsvg``.

For candidates x_i with labels y_i and multipliers λ_i, θ* frozen:

* primal (Eq. 7): L_i = CE(Φ(x_i), y_i) if argmax Φ(x_i) ≠ y_i else 0; L_primal = mean L_i;
* stationarity (Eq. 8): L_stat = D(θ*, −Σ λ_i ∇θ CE_i).  G = Σ λ_i ∇θ CE_i is the gradient of the
  λ-weighted loss sum (one backward with ``create_graph=True``); a second backward gives the
  gradients for x and λ.  Per-example gradients are never formed.  Above ``chunk`` candidates the
  second backward runs chunk by chunk on the exact surrogate ⟨∂D/∂G, G_chunk⟩ (G from a first,
  graph-free pass), so memory stays bounded on a CIFAR-10 ConvNet with thousands of candidates;
* L_kkt = L_primal + β·L_stat.  The manifold term (L_kkt on A(X)) and λ's dual feasibility are
  handled by the callers with :func:`augment` and :func:`remove_negative`.

Which θ* entries form the target (``params``):
  ``all``        every trainable tensor (Eq. 8 as written);
  ``sensitive``  all except tensors the loss is invariant to the scale of: weight and bias of a conv /
                 linear layer followed directly by an instance / group / layer norm (found
                 structurally).  For such a tensor ⟨θ_l, ∇θ_l L⟩ ≡ 0 for every input (Euler), so
                 ‖θ_l + G_l‖₂ ≥ ‖θ_l‖₂ whatever x and λ are: Eq. 6 cannot hold there, and these
                 entries only add an irreducible residual and noisy gradients;
  ``classifier`` the last linear layer only (the paper's SVHN transfer case, §5.2).

Distance (``distance``, ``sqrt``, ``normalize``):
  ``l1`` (Appendix B, default) or ``sq_l2`` (Algorithm 1).  Appendix B "apply the square root to
  the gradient term when measuring distance" is read as ``sqrt="signed"``: both sides pass through
  the elementwise signed square root φ(v) = sign(v)(√(|v|+ε) − √ε) before the distance, which
  compresses large entries (the stated aim: less weight on outliers) and keeps the solution set
  θ* = −G unchanged.  ``sqrt="none"`` skips it.  ``normalize``: ``none`` = raw sum over entries;
  ``global`` = divided by D(θ*, 0), so L_stat is the relative residual (1 at λ = 0); ``tensor`` =
  the mean over target tensors of each tensor's relative residual (small tensors such as the
  classifier bias count as much as a 147k-entry conv).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .. import pergroup
from ..augment import manifold_apply, manifold_draw
from ..config import POLISH_PARAMS
from ..ranges import FRACTION, MAX_SIZE, NON_NEGATIVE, POSITIVE, UNIT, Range, count
from .base import MethodFailed
from .kkt_terms import ACTIVATIONS, DUALS, LAMBDA_INITS, floor_gradient, smooth_relus

PARAM_SETS = ("all", "sensitive", "classifier")
DISTANCES = ("l1", "sq_l2")
SQRT_MODES = ("none", "signed")
NORMALIZATIONS = ("none", "global", "tensor", "mean")
OBJECTIVES = ("loss", "margin")
SQRT_EPS = 1e-8


@dataclass
class KKTValues:
    """Values of one L_kkt evaluation (device tensors, one entry per group: no host sync) and the
    gradients of weight·L_kkt."""
    primal: torch.Tensor         # G
    stat: torch.Tensor           # G
    entropy: torch.Tensor        # G: mean prediction entropy of the candidates (Fig. 3)
    correct: torch.Tensor        # G: fraction classified as their label by θ*
    grad_inputs: torch.Tensor | None
    grad_lam: torch.Tensor


class DeepKKT:
    """L_kkt of a frozen pretrained model; the model itself is copied and never modified."""

    def __init__(self, model: nn.Module, params: str = "all", distance: str = "l1", sqrt: str = "signed",
                 normalize: str = "global", beta: float = 1.0, chunk: int = 512, analytic: bool = True,
                 objective: str = "loss", activation: str = "relu", relu_alpha: float = 0.0,
                 primal_weight: float = 1.0):
        for value, valid, name in ((params, PARAM_SETS, "params"), (distance, DISTANCES, "distance"),
                                   (sqrt, SQRT_MODES, "sqrt"), (normalize, NORMALIZATIONS, "normalize"),
                                   (objective, OBJECTIVES, "objective"), (activation, ACTIVATIONS, "activation")):
            if value not in valid:
                raise ValueError(f"DeepKKT {name}={value!r}; valid: {', '.join(valid)}")
        self.model = copy.deepcopy(model).eval()
        if activation == "smooth" and smooth_relus(self.model, relu_alpha) == 0:
            raise MethodFailed("DeepKKT activation='smooth': the model has no nn.ReLU module to replace")
        self.primal_weight = primal_weight
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.theta = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        self.distance, self.sqrt, self.normalize, self.objective = distance, sqrt, normalize, objective
        self.beta, self.chunk = beta, max(int(chunk), 1)
        self.names = select_params(self.model, self.theta, params)
        if not self.names:
            raise MethodFailed(f"DeepKKT params={params!r} selects no tensor of the model")
        self.targets = [self.theta[n] for n in self.names]
        reference = [self._entrywise(t, torch.zeros_like(t)).sum() for t in self.targets]
        positive = [r for r in reference if r > 0]
        fill = torch.stack(positive).mean() if positive else torch.ones(())
        self.reference = [r if r > 0 else fill for r in reference]  # all-zero θ* tensors (tensor mode)
        self.reference_sum = torch.stack(reference).sum()
        self.entries = sum(t.numel() for t in self.targets)
        classifier = getattr(self.model, "classifier", None)
        # closed-form classifier gradients (``_kkt_classifier``) where the target is exactly the last
        # linear layer of a model with .features(); ``analytic=False`` forces the autograd path
        self.analytic = bool(analytic and params == "classifier" and isinstance(classifier, nn.Linear)
                             and hasattr(self.model, "features")
                             and self.names == ["classifier.weight", "classifier.bias"])
        # every target tensor in a conv / linear layer: all seeds' G in one pass (dsvbench.pergroup)
        self.grouped = not self.analytic and pergroup.supported(self.model, self.names)

    def per_example(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """o_i whose λ-weighted gradient sum G = Σ λ_i ∇θ o_i enters Eq. 8: ``loss`` = CE (the seed's
        ∇θ L) or ``margin`` = −(Φ_y − max_{j≠y} Φ_j) (the NeurIPS version's y_i ∇θ Φ(x_i), as Haim et
        al.'s multiclass margin; the sign keeps θ* ≈ −G in both cases)."""
        if self.objective == "loss":
            return F.cross_entropy(logits, labels, reduction="none")
        label_logit = logits.gather(1, labels[:, None]).squeeze(1)
        others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
        return others.max(1).values - label_logit

    def _logit_grad(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """∂o_i/∂logits_i (closed form, differentiable): p − e_y for the loss, e_{j*} − e_y for the margin."""
        target = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        if self.objective == "loss":
            return logits.softmax(1) - target
        runner_up = logits.masked_fill(target.bool(), float("-inf")).argmax(1)
        return F.one_hot(runner_up, logits.shape[1]).to(logits.dtype) - target

    # ----- forward pieces ------------------------------------------------------------------
    def logits(self, inputs: torch.Tensor, leaves: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        return functional_call(self.model, leaves or self.theta, (inputs,))

    def _leaves(self, names: list[str]) -> dict[str, torch.Tensor]:
        leaves = dict(self.theta)
        for name in names:
            leaves[name] = self.theta[name].clone().requires_grad_(True)
        return leaves

    def weighted_grad(self, inputs: torch.Tensor, labels: torch.Tensor, lam: torch.Tensor,
                      names: list[str] | None = None, create_graph: bool = False
                      ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """G = ∇θ Σ λ_i CE_i over tensors ``names`` (default: the target), and the logits."""
        names = self.names if names is None else names
        leaves = self._leaves(names)
        logits = self.logits(inputs, leaves)
        losses = self.per_example(logits, labels)
        grads = torch.autograd.grad((lam * losses).sum(), [leaves[n] for n in names],
                                    create_graph=create_graph)
        return list(grads), logits

    def _entrywise(self, theta: torch.Tensor, minus_g: torch.Tensor) -> torch.Tensor:
        """Per-entry distance between θ* and −G (after the optional signed square root)."""
        if self.sqrt == "signed":
            theta, minus_g = _signed_sqrt(theta), _signed_sqrt(minus_g)
        diff = theta - minus_g
        return diff.abs() if self.distance == "l1" else diff.square()

    def stat_distance(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """L_stat = D(θ*, −G) with the configured normalization (Eq. 8).  ``grads`` may carry a
        leading group dimension (one G per group): then one distance per group."""
        parts = [self._entrywise(t, -g).flatten(g.dim() - t.dim()).sum(-1) for t, g in zip(self.targets, grads)]
        if self.normalize == "none":
            return torch.stack(parts).sum(0)
        if self.normalize == "global":
            return torch.stack(parts).sum(0) / self.reference_sum
        if self.normalize == "mean":   # the NeurIPS version: "averaged the distance per parameter"
            return torch.stack(parts).sum(0) / self.entries
        return torch.stack([p / r for p, r in zip(parts, self.reference)]).mean(0)

    # ----- L_kkt and its gradients -----------------------------------------------------------
    def kkt(self, inputs: torch.Tensor, labels: torch.Tensor, lam: torch.Tensor, weight: float = 1.0,
            input_grad: bool = True, groups: torch.Tensor | None = None, n_groups: int = 1,
            encoded: tuple[torch.Tensor, torch.Tensor] | None = None) -> KKTValues:
        """L_kkt = L_primal + β·L_stat and the gradients of ``weight``·L_kkt for inputs and λ.

        ``groups`` (one index < ``n_groups`` per candidate) makes independent problems — one per
        seed — share the passes: each group has its own G = Σ_{i∈g} λ_i ∇θ CE_i and its own
        L_primal (mean over the group), and the loss is their sum, so every group's gradients
        are those of its own single run.  ``encoded`` = (features, logits) of ``inputs``
        precomputed (fixed pixels, no input gradient; classifier target only).
        """
        groups = torch.zeros(len(labels), dtype=torch.long, device=labels.device) if groups is None else groups
        if self.analytic:
            return self._kkt_classifier(inputs, labels, lam, weight, input_grad, groups, n_groups, encoded)
        if self.grouped and len(inputs) <= self.chunk * max(n_groups, 1):
            return self._kkt_grouped(inputs, labels, lam, weight, input_grad, groups, n_groups)
        parts = []
        for g in range(n_groups):   # the autograd path: group by group
            members = torch.nonzero(groups == g).flatten()
            run = self._kkt_direct if len(members) <= self.chunk else self._kkt_chunked
            parts.append((members, run(inputs[members], labels[members], lam[members], weight, input_grad)))
        grad_x = torch.zeros_like(inputs) if input_grad else None
        grad_lam = torch.zeros_like(lam)
        for members, values in parts:
            grad_lam[members] = values.grad_lam
            if input_grad:
                grad_x[members] = values.grad_inputs
        stack = lambda field: torch.cat([getattr(v, field) for _, v in parts])  # noqa: E731
        return KKTValues(stack("primal"), stack("stat"), stack("entropy"), stack("correct"), grad_x, grad_lam)

    def encode(self, inputs: torch.Tensor, batch: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, logits) of fixed inputs, without a graph (for ``kkt(encoded=...)``)."""
        with torch.no_grad():
            feats = torch.cat([self.model.features(chunk) for chunk in inputs.split(batch)])
            return feats, F.linear(feats, self.theta[self.names[0]], self.theta[self.names[1]])

    def _kkt_grouped(self, inputs, labels, lam, weight, input_grad, groups, n_groups) -> KKTValues:
        """Every group's G over all its target tensors in one forward / backward
        (:func:`dsvbench.pergroup.per_group_grads`, differentiable), then one backward of L_kkt."""
        x = inputs.detach().requires_grad_(True)   # the graph must reach the layer outputs
        lam = lam.detach().requires_grad_(True)
        with torch.enable_grad():
            grads, logits = pergroup.per_group_grads(
                self.model, x, lambda out: lam * self.per_example(out, labels), groups, n_groups, self.names,
                create_graph=True)
            stat = self.stat_distance([grads[n] for n in self.names])
            member = F.one_hot(groups, n_groups).to(logits.dtype)
            primal = _group_mean(primal_terms(logits, labels), member)
            total = weight * (self.primal_weight * primal.sum() + self.beta * stat.sum())
            out = torch.autograd.grad(total, [x, lam] if input_grad else [lam], allow_unused=True)
        return _group_values(primal, stat, logits, labels, member, _or_zeros(out[0], x) if input_grad else None,
                             _or_zeros(out[-1], lam))

    def _kkt_classifier(self, inputs, labels, lam, weight, input_grad, groups, n_groups, encoded) -> KKTValues:
        """The classifier target in closed form: ∇_W CE_i = (p_i − e_{y_i}) f_iᵀ, ∇_b CE_i = p_i − e_{y_i},
        so G_g = Σ_{i∈g} λ_i (p_i − e_{y_i}) [f_iᵀ, 1] — the numbers of the double backward (tested),
        with one forward and one backward through the body instead of two of each."""
        x = inputs.detach().requires_grad_(input_grad)
        lam = lam.detach().requires_grad_(True)
        if encoded is not None:
            feats, logits = encoded
        else:
            with torch.set_grad_enabled(input_grad):
                feats = self.model.features(x)
                logits = F.linear(feats, self.theta[self.names[0]], self.theta[self.names[1]])
        member = F.one_hot(groups, n_groups).to(feats.dtype)                       # n×G
        with torch.enable_grad():
            delta = lam[:, None] * self._logit_grad(logits, labels)
            grad_w = torch.stack([(delta * member[:, g, None]).T @ feats for g in range(n_groups)])
            grad_b = member.T @ delta
            stat = self.stat_distance([grad_w, grad_b])
            primal = _group_mean(primal_terms(logits, labels), member)
            total = weight * (self.primal_weight * primal.sum() + self.beta * stat.sum())
            out = torch.autograd.grad(total, [x, lam] if input_grad else [lam], allow_unused=True)
        return _group_values(primal, stat, logits, labels, member, _or_zeros(out[0], x) if input_grad else None,
                             _or_zeros(out[-1], lam))

    def _kkt_direct(self, inputs, labels, lam, weight, input_grad) -> KKTValues:
        x = inputs.detach().requires_grad_(input_grad)
        lam = lam.detach().requires_grad_(True)
        grads, logits = self.weighted_grad(x, labels, lam, create_graph=True)
        primal = primal_loss(logits, labels)
        stat = self.stat_distance(grads)
        total = weight * (self.primal_weight * primal + self.beta * stat)
        wrt = [x, lam] if input_grad else [lam]
        out = torch.autograd.grad(total, wrt, allow_unused=True)
        grad_x = _or_zeros(out[0], x) if input_grad else None
        return _values(primal.detach(), stat.detach(), logits, labels, grad_x, _or_zeros(out[-1], lam))

    def _kkt_chunked(self, inputs, labels, lam, weight, input_grad) -> KKTValues:
        pieces = list(zip(inputs.split(self.chunk), labels.split(self.chunk), lam.split(self.chunk)))
        total = [torch.zeros_like(t) for t in self.targets]
        for x, y, l in pieces:  # pass 1: G without a graph
            grads, _ = self.weighted_grad(x.detach(), y, l.detach())
            total = [a + g for a, g in zip(total, grads)]
        leaf = [g.detach().requires_grad_(True) for g in total]
        stat = self.stat_distance(leaf)
        direction = torch.autograd.grad(stat, leaf)   # ∂D/∂G, fixed for pass 2
        grads_x, grads_l, all_logits = [], [], []
        n, primal_sum = len(inputs), 0.0
        for x, y, l in pieces:  # pass 2: exact surrogate β⟨∂D/∂G, G_chunk⟩ + Σ_chunk L_i / n
            x = x.detach().requires_grad_(input_grad)
            l = l.detach().requires_grad_(True)
            grads, logits = self.weighted_grad(x, y, l, create_graph=True)
            primal_part = primal_loss(logits, y) * len(y) / n
            surrogate = self.primal_weight * primal_part + self.beta * sum((d * g).sum() for d, g in zip(direction, grads))
            wrt = [x, l] if input_grad else [l]
            out = torch.autograd.grad(weight * surrogate, wrt, allow_unused=True)
            if input_grad:
                grads_x.append(_or_zeros(out[0], x))
            grads_l.append(_or_zeros(out[-1], l))
            all_logits.append(logits.detach())
            primal_sum = primal_sum + primal_part.detach()
        logits = torch.cat(all_logits)
        grad_x = torch.cat(grads_x) if input_grad else None
        return _values(primal_sum, stat.detach(), logits, labels, grad_x, torch.cat(grads_l))

    # ----- λ scale and diagnostics ------------------------------------------------------------
    def total_grad(self, inputs: torch.Tensor, labels: torch.Tensor, lam: torch.Tensor,
                   names: list[str] | None = None) -> list[torch.Tensor]:
        """G = Σ λ_i ∇θ CE_i accumulated chunk by chunk, no graph."""
        names = self.names if names is None else names
        total = None
        for x, y, l in zip(inputs.split(self.chunk), labels.split(self.chunk), lam.split(self.chunk)):
            grads, _ = self.weighted_grad(x.detach(), y, l.detach(), names)
            total = grads if total is None else [a + g for a, g in zip(total, grads)]
        return total

    @torch.no_grad()
    def fit_uniform_scale(self, inputs: torch.Tensor, labels: torch.Tensor,
                          lam: torch.Tensor | None = None) -> float:
        """The factor c > 0 minimizing L_stat of c·λ (λ = 1 when not given): a log grid around the
        least-squares (or the norm-matching) start, refined by golden section on log c."""
        lam = torch.ones(len(labels), device=inputs.device) if lam is None else lam
        with torch.enable_grad():
            unit = self.total_grad(inputs, labels, lam)
        dot = sum((t * g).sum() for t, g in zip(self.targets, unit))
        sq = sum(g.square().sum() for g in unit)
        if not (sq > 0):
            raise MethodFailed("DeepKKT: the candidates' loss gradients are all zero")
        start = math.log(float(-dot / sq) if dot < 0 else float(_norm1(self.targets) / _norm1(unit)))

        def stat(log_c: float) -> float:
            return float(self.stat_distance([math.exp(log_c) * g for g in unit]))
        grid = [start + k * 0.5 for k in range(-16, 17)]
        best = min(range(len(grid)), key=lambda k: stat(grid[k]))
        low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
        ratio = (math.sqrt(5) - 1) / 2
        for _ in range(30):
            a, b = high - ratio * (high - low), low + ratio * (high - low)
            low, high = (low, b) if stat(a) <= stat(b) else (a, high)
        return math.exp((low + high) / 2)

    @torch.no_grad()
    def residuals(self, inputs: torch.Tensor, labels: torch.Tensor, lam: torch.Tensor) -> dict[str, float]:
        """Relative stationarity residuals ‖θ* + G‖/‖θ*‖: L1 and L2 on the target, L1 on all
        trainable tensors (comparable across ``params`` choices), and cos(θ*, −G) on the target."""
        all_names = list(self.theta)
        with torch.enable_grad():
            grads = dict(zip(all_names, self.total_grad(inputs, labels, lam, all_names)))
        theta_t = torch.cat([self.theta[n].flatten() for n in self.names])
        g_t = torch.cat([grads[n].flatten() for n in self.names])
        theta_a = torch.cat([self.theta[n].flatten() for n in all_names])
        g_a = torch.cat([grads[n].flatten() for n in all_names])
        return {"residual_l1": float((theta_t + g_t).abs().sum() / theta_t.abs().sum()),
                "residual_l2": float((theta_t + g_t).norm() / theta_t.norm()),
                "residual_l1_all": float((theta_a + g_a).abs().sum() / theta_a.abs().sum()),
                "cosine": float(-(theta_t @ g_t) / (theta_t.norm() * g_t.norm()).clamp_min(1e-30))}


# ----- the recipe fields and bookkeeping both methods share ---------------------------------
@dataclass(frozen=True)
class KKTRecipe:
    """DeepKKT hyper-parameters shared by ``dsvs`` and ``dsvg`` (paper §5.1, Appendix B).

    Paper values: α_λ = 0.1, γ = 5, D = L1 with a square root (Appendix B).  Choices (the paper
    does not give them): ``params``, ``normalize``, ``beta``, ``optimizer``, ``lambda_scale``
    and the augmentation strengths — see the module docstring and the fields' comments.

    β: with ``normalize="global"`` L_stat is the relative residual D(θ*, −G)/D(θ*, 0), 1 at λ = 0,
    and L_primal is the mean cross-entropy of the misclassified candidates (≈ ln C ≈ 2.3 per
    wrong candidate at a noise start, 0 once θ* classifies them), so β = 1 puts the two on the
    same scale — the balance the paper asks for (its raw L_stat ran ~10× its L_primal).
    """
    RANGES: ClassVar[dict[str, Range]] = {
        "alpha_lambda": POSITIVE, "relu_alpha": POSITIVE, "lambda_momentum": UNIT, "beta": NON_NEGATIVE,
        "gamma": NON_NEGATIVE, "primal_weight": NON_NEGATIVE, "lambda_floor": NON_NEGATIVE,
        "theta_weight_decay": NON_NEGATIVE, "aug_shift": FRACTION, "aug_scale": FRACTION,
        "aug_brightness": NON_NEGATIVE, "aug_contrast": FRACTION, "chunk": count(1, MAX_SIZE),
        "history_points": count(0, MAX_SIZE), "steps": count(0), "theta_epochs": count(0),
        "theta_polish_steps": count(0)}
    params: str = "classifier"       # all | sensitive | classifier (module docstring; choice, measured)
    distance: str = "l1"             # l1 (Appendix B) | sq_l2 (Algorithm 1)
    sqrt: str = "signed"             # Appendix B's square root: signed | none
    normalize: str = "global"        # L_stat as the relative residual: none | global | tensor
    beta: float = 1.0                # L_kkt = L_primal + β·L_stat (choice; see above)
    gamma: float = 5.0               # manifold term weight γ (paper §5.1)
    alpha_lambda: float = 0.1        # α_λ (paper §5.1), step size on λ in units of its initial scale
    optimizer: str = "adam"          # steps on x: adam | sgd (Algorithm 1's plain steps); choice
    lambda_optimizer: str = "sgd"    # steps on λ: sgd (Algorithm 1) | adam (measured: Adam's unit
                                     # steps drive 99 % of the λ below 0 within a few dozen steps)
    lambda_scale: str = "fit"        # λ unit: fit (best uniform λ at the start) | norm | mean (1/m) | a number
    rescale_every: int = 25          # every k steps λ ← c·λ with the best c > 0 (0 = never; choice)
    objective: str = "loss"          # G = Σλ∇θ CE (the seed, Eq. 8) | margin (NeurIPS: Σλ y ∇θ Φ)
    # Haim et al. 2022's reconstruction regime (module kkt_terms; defaults keep DSV's reading):
    primal_weight: float = 1.0       # weight of L_primal (Eq. 7) in L_kkt; Haim et al.'s loss has none (0)
    activation: str = "relu"         # θ*'s ReLU backward during synthesis: relu | smooth (sigmoid(α z))
    relu_alpha: float = 19.2         # α of the smooth backward (a value of Haim et al.'s MNIST sweep)
    dual: str = "remove"             # λ < 0: remove the candidate (Algorithm 1) | floor (Haim et al.'s penalty)
    lambda_floor: float = 0.415      # the μ floor of dual=floor (a value of Haim et al.'s MNIST sweep)
    lambda_momentum: float = 0.0     # momentum of the sgd steps on λ (Haim et al.: 0.9)
    lambda_init: str = "ones"        # μ at the start: ones | uniform (Haim et al.: U(0, 1))
    # θ* of the DSV columns (their own, cached like any θ*; herding / forgetting keep the run's):
    theta_model: str = "run"         # "run" = the run's --model θ* | a registry name, e.g. convnet_dsv
    theta_epochs: int = 0            # Adam epochs of that θ* (0 = the dataset's default)
    theta_weight_decay: float = 5e-3 # paper, Appendix B
    theta_polish: str = "classifier" # stationarity polish of that θ*: classifier | all (every layer,
                                     # full-batch L-BFGS; PretrainRecipe.polish_params)
    theta_polish_steps: int = 0      # its L-BFGS iterations at most (0 = the recipe's polish_steps)
    retrain: str = "dsv"             # the column's retraining recipe: dsv (SAM, the seed) | adam (NeurIPS)

    def __post_init__(self) -> None:
        """Every field checked when the recipe is made (``--set`` included), before any work."""
        from ..models import MODELS
        from ..registry import UserError
        for name, valid in (("params", PARAM_SETS), ("distance", DISTANCES), ("sqrt", SQRT_MODES),
                            ("normalize", NORMALIZATIONS), ("objective", OBJECTIVES),
                            ("optimizer", ("adam", "sgd")), ("lambda_optimizer", ("adam", "sgd")),
                            ("retrain", ("dsv", "adam", "dc")), ("activation", ACTIVATIONS), ("dual", DUALS),
                            ("lambda_init", LAMBDA_INITS)):
            if getattr(self, name) not in valid:
                raise UserError(f"{name}={getattr(self, name)!r} is not valid; choose one of: {', '.join(valid)}")
        if self.theta_model != "run" and self.theta_model not in MODELS:
            raise UserError(f"theta_model={self.theta_model!r}: not a registered model (or 'run'); "
                            f"known: {', '.join(MODELS.names())}")
        if self.theta_polish not in POLISH_PARAMS:
            raise UserError(f"theta_polish={self.theta_polish!r} is not valid; choose one of: {', '.join(POLISH_PARAMS)}")
        if self.theta_model == "run" and (self.theta_polish != "classifier" or self.theta_polish_steps):
            raise UserError("theta_polish / theta_polish_steps set the method's own θ*: name it with "
                            "theta_model (e.g. convnet_dsv); the run's θ* keeps the run's recipe")
        if self.lambda_scale not in ("fit", "norm", "mean"):
            try:
                if not float(self.lambda_scale) > 0:
                    raise ValueError
            except ValueError:
                raise UserError(f"lambda_scale={self.lambda_scale!r}: fit, norm, mean or a positive number") from None
        for name in ("beta", "gamma", "primal_weight", "lambda_floor", "aug_shift", "aug_scale", "aug_brightness", "aug_contrast", "theta_weight_decay"):
            if not getattr(self, name) >= 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.lambda_momentum < 1:
            raise UserError(f"lambda_momentum must be in [0, 1), got {self.lambda_momentum}")
        if self.lambda_momentum and self.lambda_optimizer != "sgd":
            raise UserError("lambda_momentum applies to lambda_optimizer=sgd only")
        for name in ("alpha_lambda", "chunk", "history_points", "relu_alpha"):
            if not getattr(self, name) > 0:
                raise UserError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("rescale_every", "theta_epochs", "theta_polish_steps"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0, got {getattr(self, name)}")

    def pretrained_spec(self) -> tuple[str, dict] | None:
        """(architecture, PretrainRecipe overrides) of the θ* this method needs; None = the run's."""
        if self.theta_model == "run":
            return None
        overrides = {"weight_decay": self.theta_weight_decay}
        if self.theta_epochs > 0:
            overrides["epochs"] = self.theta_epochs
        if self.theta_polish != "classifier":
            overrides["polish_params"] = self.theta_polish
        if self.theta_polish_steps > 0:
            overrides["polish_steps"] = self.theta_polish_steps
        return self.theta_model, overrides
    aug_flip: bool = True            # off on digit datasets (recipe_defaults)
    aug_shift: float = 0.125         # translation, fraction of the size (choice)
    aug_scale: float = 0.1           # zoom 1 ± scale (choice)
    aug_brightness: float = 0.1      # normalized units (choice)
    aug_contrast: float = 0.1        # 1 ± contrast (choice)
    chunk: int = 512                 # candidates per double-backward chunk (memory only)
    history_points: int = 20         # per-step diagnostics kept in the metadata


# ``--preset``: the DSV recipe fields of each reading of the paper (as --set strings).
_NEURIPS = {"params": "all", "normalize": "mean", "objective": "margin", "gamma": "5", "retrain": "adam",
            "theta_model": "convnet_dsv"}
# Haim et al. 2022's reconstruction regime (docs/reconstruction.md, the ladder), retrained like random
# and DC (``dc``) so that the IOR is defined.  dsvs keeps the plain ReLU (its pixels are fixed).
_RECON = {"params": "all", "objective": "margin", "distance": "sq_l2", "sqrt": "none", "normalize": "none",
          "gamma": "0", "primal_weight": "0", "dual": "floor", "lambda_floor": "0.415", "lambda_optimizer": "sgd",
          "lambda_momentum": "0.9", "rescale_every": "0", "theta_model": "convnet_dsv", "retrain": "dc"}
PRESETS: dict[str, dict[str, dict[str, str]]] = {
    "seed": {},
    # NeurIPS 2024 version, Implementation Details: "averaged the distance per parameter", η = 5,
    # α = 2e-3, prior weights 0, retraining with Adam lr 1e-4; Alg. 1 with λ_i y_i ∇θ Φ(x_i);
    # θ* a conv + max-pool ConvNet trained to nearly 100 % (our convnet_dsv).
    "neurips": {"dsvs": dict(_NEURIPS), "dsvg": {**_NEURIPS, "alpha_x": "0.002"}},
    "recon": {"dsvs": {**_RECON, "lambda_scale": "fit", "alpha_lambda": "0.1"},
              "dsvg": {**_RECON, "activation": "smooth", "relu_alpha": "19.2", "lambda_init": "uniform",
                       "lambda_scale": "mean", "alpha_lambda": "1e-4", "optimizer": "sgd", "alpha_x": "0.282",
                       "momentum": "0.9", "init_std": "0.00174", "lowres_steps": "0", "range_weight": "1",
                       "keep_per_class": "false"}},
}


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
        return float(_norm1(kkt.targets) / _norm1(unit).clamp_min(1e-30))
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


# ----- helpers used by both methods ------------------------------------------------------------
def primal_terms(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 7 per candidate: CE where θ* misclassifies, 0 where it is right."""
    losses = F.cross_entropy(logits, labels, reduction="none")
    return losses * (logits.argmax(1) != labels).to(losses.dtype)


def primal_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 7: L_primal, the mean of :func:`primal_terms` over the candidates."""
    return primal_terms(logits, labels).mean()


def _group_mean(values: torch.Tensor, member: torch.Tensor) -> torch.Tensor:
    """Per-group means of per-candidate ``values`` (``member``: n×G one-hot of the groups)."""
    return (member.T @ values) / member.sum(0).clamp_min(1)


def _group_values(primal, stat, logits, labels, member, grad_x, grad_lam) -> KKTValues:
    """KKTValues of a grouped evaluation: per-group primal, stat, entropy and label agreement."""
    logits = logits.detach()
    return KKTValues(primal.detach(), stat.detach(), _group_mean(entropy(logits), member),
                     _group_mean((logits.argmax(1) == labels).to(logits.dtype), member), grad_x, grad_lam)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = F.log_softmax(logits.detach(), 1)
    return -(logp.exp() * logp).sum(1)


def select_params(model: nn.Module, theta: dict[str, torch.Tensor], which: str) -> list[str]:
    """Names of the target tensors for ``which`` in PARAM_SETS (see the module docstring)."""
    if which == "all":
        return list(theta)
    if which == "classifier":
        linear = getattr(model, "classifier", None)
        if not isinstance(linear, nn.Linear):
            linear = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        prefix = next(n for n, m in model.named_modules() if m is linear)
        return [n for n in theta if n.rsplit(".", 1)[0] == prefix]
    invariant = set()
    norms = (nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
    for prefix, module in model.named_modules():
        children = list(module.named_children())
        for (name, layer), (_, after) in zip(children, children[1:]):
            if isinstance(layer, (nn.Conv2d, nn.Linear)) and isinstance(after, norms):
                invariant.update(f"{prefix}.{name}.{p}".lstrip(".") for p, _ in layer.named_parameters())
    return [n for n in theta if n not in invariant]




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


def _signed_sqrt(v: torch.Tensor) -> torch.Tensor:
    return torch.sign(v) * ((v.abs() + SQRT_EPS).sqrt() - math.sqrt(SQRT_EPS))


def _norm1(tensors: list[torch.Tensor]) -> torch.Tensor:
    return sum(t.abs().sum() for t in tensors)


def _or_zeros(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


def _values(primal, stat, logits, labels, grad_x, grad_lam) -> KKTValues:
    logits = logits.detach()
    one = lambda v: torch.as_tensor(v, dtype=logits.dtype, device=logits.device).reshape(1)  # noqa: E731
    return KKTValues(one(primal), one(stat), entropy(logits).mean().reshape(1),
                     (logits.argmax(1) == labels).to(logits.dtype).mean().reshape(1), grad_x, grad_lam)
