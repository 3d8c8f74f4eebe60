"""Per-group parameter gradients in one forward and one backward pass.

DC needs the gradient of every class's loss, DeepKKT the λ-weighted gradient sum of every
seed's candidates: K gradients of one network over one batch split into K groups.  Running
K ``autograd.grad`` calls costs K passes of Python and kernel overhead; here the batch goes
through the network once.  Because every layer treats examples independently (no batch
statistics), the gradient of Σ_i o_i with respect to a layer's output at example i is example
i's own gradient δ_i, and group k's parameter gradient is the group-restricted sum of δ ⊗ input:

* ``Linear``: Σ_{i∈k} δ_i x_iᵀ (a batched matrix product) and Σ_{i∈k} δ_i;
* ``Conv2d``: group k as convolution group k of one grouped weight-gradient call, and the sum
  of δ over the group's examples and positions for the bias.

Everything stays differentiable (``create_graph=True``) so a loss of the gradients can be
back-propagated to the inputs — the double backward of DC and of DeepKKT's stationarity.
Models whose parameters live in other modules (normalization layers) are not supported here
(:func:`supported`); callers fall back to one ``autograd.grad`` per group.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

LAYERS = (nn.Conv2d, nn.Linear)


def supported(model: nn.Module, names: list[str] | None = None) -> bool:
    """Whether every parameter in ``names`` (default: all) belongs to an ungrouped conv / linear layer."""
    owners = {f"{prefix}.{p}".lstrip("."): module for prefix, module in model.named_modules()
              for p, _ in module.named_parameters(recurse=False)}
    wanted = names if names is not None else list(owners)
    return all(isinstance(owners.get(n), LAYERS) and getattr(owners[n], "groups", 1) == 1
               and isinstance(getattr(owners[n], "padding", (0,)), tuple) for n in wanted)


def per_group_grads(model: nn.Module, inputs: torch.Tensor, objective: Callable[[torch.Tensor], torch.Tensor],
                    groups: torch.Tensor | None, n_groups: int, names: list[str] | None = None,
                    create_graph: bool = False, weights_only: bool = False
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({name: n_groups × shape gradient of Σ_{i∈k} o_i}, logits) for ``o = objective(logits)``.

    ``groups`` holds each example's group (0 … n_groups − 1); ``None`` says the batch is already
    n_groups contiguous blocks of equal size (group k = examples k·M … k·M + M − 1), which is
    regrouped by a view instead of a padded copy (DC's K×M class batches).  ``names`` selects the parameters
    (default: every conv / linear parameter); ``weights_only`` skips biases (DC ignores them).
    """
    logits, captured = _forward_capturing(model, inputs, _overwritten_outputs(model))
    if any(output._version != version for *_, output, version in captured):   # the guess missed one
        logits, captured = _forward_capturing(model, inputs, {m for m in model.modules() if isinstance(m, LAYERS)})
    wanted = None if names is None else set(names)
    keep = [c for c in captured if wanted is None or any(f"{c[0]}.{p}".lstrip(".") in wanted for p in ("weight", "bias"))]
    deltas = torch.autograd.grad(objective(logits).sum(), [c[3] for c in keep], create_graph=create_graph)
    layout = _Blocks(n_groups) if groups is None else _Layout(groups, n_groups)
    grads: dict[str, torch.Tensor] = {}
    for (prefix, module, layer_input, _, _), delta in zip(keep, deltas):
        name = lambda p: f"{prefix}.{p}".lstrip(".")  # noqa: E731
        if wanted is None or name("weight") in wanted:
            grads[name("weight")] = _weight_grad(module, layout.split(layer_input), layout.split(delta))
        if module.bias is not None and not weights_only and (wanted is None or name("bias") in wanted):
            grads[name("bias")] = layout.sum(delta.flatten(2).sum(-1) if delta.dim() > 2 else delta)
    return grads, logits


def _forward_capturing(model: nn.Module, inputs: torch.Tensor, copy: set[nn.Module]):
    """The logits, and (prefix, layer, input, output, output version) of every conv / linear layer.
    The outputs of the layers in ``copy`` are passed on as copies: an in-place op after them (a
    ReLU straight after a conv) must not change the tensor δ is taken of."""
    captured: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor, int]] = []

    def remember(prefix):
        def hook(module, args, output):
            captured.append((prefix, module, args[0], output, output._version))
            return output.clone() if module in copy else None
        return hook
    handles = [m.register_forward_hook(remember(p)) for p, m in model.named_modules() if isinstance(m, LAYERS)]
    try:
        logits = model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return logits, captured


def _overwritten_outputs(model: nn.Module) -> set[nn.Module]:
    """The conv / linear layers whose output the next module in registration order (past identities)
    changes in place — a guess at execution order, checked by the caller through version counters
    (a copy of every output costs DC 5 % on the CPU)."""
    modules = [m for m in model.modules() if not isinstance(m, (nn.Identity, nn.Sequential))]
    return {m for m, following in zip(modules, modules[1:])
            if isinstance(m, LAYERS) and getattr(following, "inplace", False)}


class _Layout:
    """Examples regrouped as n_groups × M (M = the largest group, zero padding) for batched products."""

    def __init__(self, groups: torch.Tensor, n_groups: int):
        counts = torch.bincount(groups, minlength=n_groups)
        self.n_groups, self.groups = n_groups, groups
        self.width = max(int(counts.max()), 1) if len(groups) else 1
        starts = torch.cumsum(counts, 0) - counts
        order = torch.argsort(groups, stable=True)
        slot = torch.empty_like(groups)
        slot[order] = torch.arange(len(groups), device=groups.device) - starts[groups[order]]
        self.slot = slot

    def split(self, values: torch.Tensor) -> torch.Tensor:
        out = values.new_zeros((self.n_groups, self.width, *values.shape[1:]))
        return out.index_put((self.groups, self.slot), values)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        return values.new_zeros((self.n_groups, *values.shape[1:])).index_add(0, self.groups, values)


class _Blocks:
    """The layout of a batch that is n_groups contiguous equal blocks: regrouping is a view."""

    def __init__(self, n_groups: int):
        self.n_groups = n_groups

    def split(self, values: torch.Tensor) -> torch.Tensor:
        return values.view(self.n_groups, -1, *values.shape[1:])

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        return self.split(values).sum(1)


def _weight_grad(module: nn.Module, inputs: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """K × weight-shape gradient from K × M layer inputs and output gradients."""
    groups, width = inputs.shape[:2]
    if isinstance(module, nn.Linear):
        return torch.einsum("kmo,kmi->koi", delta.reshape(groups, width, -1), inputs.reshape(groups, width, -1))
    grouped_input = inputs.transpose(0, 1).flatten(1, 2)      # M × (K·C_in) × H × W
    grouped_delta = delta.transpose(0, 1).flatten(1, 2)       # M × (K·C_out) × H' × W'
    grad = torch.nn.grad.conv2d_weight(grouped_input, (groups * module.out_channels, *module.weight.shape[1:]),
                                       grouped_delta, module.stride, module.padding, module.dilation, groups=groups)
    return grad.view(groups, *module.weight.shape)


def weighted_cross_entropy(weights: torch.Tensor, labels: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The objective o_i = w_i · CE(logits_i, y_i)."""
    return lambda logits: weights * F.cross_entropy(logits, labels, reduction="none")
