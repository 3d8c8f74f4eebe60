"""DeepKKT (paper §4, Algorithm 1, Eq. 7-8, Appendix B): the loss shared by ``dsvs`` and ``dsvg``.

For candidates x_i with labels y_i and multipliers λ_i, θ* frozen:

* primal (Eq. 7): L_i = CE(Φ(x_i), y_i) if argmax Φ(x_i) ≠ y_i else 0; L_primal = mean L_i;
* stationarity (Eq. 8): L_stat = D(θ*, −Σ λ_i ∇θ CE_i).  G = Σ λ_i ∇θ CE_i is the gradient of the
  λ-weighted loss sum (one backward with ``create_graph=True``); a second backward gives the
  gradients for x and λ.  Per-example gradients are never formed.  Above ``chunk`` candidates the
  second backward runs chunk by chunk on the exact surrogate ⟨∂D/∂G, G_chunk⟩ (G from a first,
  graph-free pass), so memory stays bounded on a CIFAR-10 ConvNet with thousands of candidates;
* L_kkt = L_primal + β·L_stat.  The manifold term (L_kkt on A(X)) and λ's dual feasibility are
  handled by the callers (:mod:`.kkt_loop`: ``augment_groups``, ``remove_negative``).

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

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .. import pergroup
from .base import MethodFailed
from .kkt_terms import ACTIVATIONS, smooth_relus

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
        start = math.log(float(-dot / sq) if dot < 0 else float(norm1(self.targets) / norm1(unit)))

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


def _signed_sqrt(v: torch.Tensor) -> torch.Tensor:
    return torch.sign(v) * ((v.abs() + SQRT_EPS).sqrt() - math.sqrt(SQRT_EPS))


def norm1(tensors: list[torch.Tensor]) -> torch.Tensor:
    return sum(t.abs().sum() for t in tensors)


def _or_zeros(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


def _values(primal, stat, logits, labels, grad_x, grad_lam) -> KKTValues:
    logits = logits.detach()
    one = lambda v: torch.as_tensor(v, dtype=logits.dtype, device=logits.device).reshape(1)  # noqa: E731
    return KKTValues(one(primal), one(stat), entropy(logits).mean().reshape(1),
                     (logits.argmax(1) == labels).to(logits.dtype).mean().reshape(1), grad_x, grad_lam)
