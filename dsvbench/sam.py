"""Sharpness-Aware Minimization (Foret et al. 2020) around any base optimizer.

Step 1 (``first_step``): ε = ρ g / ‖g‖₂ (norm over all parameters), w ← w + ε.
Step 2 (``second_step``): with the gradient taken at w + ε, restore w ← w − ε and let
the base optimizer step.  Weight decay / momentum belong to the base optimizer and
act on the restored weights.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch


class SAM(torch.optim.Optimizer):
    """``SAM(params, torch.optim.SGD, rho=1e-4, lr=0.1, momentum=0.9, weight_decay=5e-4)``."""

    def __init__(self, params: Iterable, base_optimizer: type[torch.optim.Optimizer],
                 rho: float = 0.05, **kwargs):
        if rho < 0:
            raise ValueError(f"rho must be non-negative, got {rho}")
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups  # one set of groups (lr schedulers)

    @torch.no_grad()
    def first_step(self) -> None:
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        grad_norm = torch.norm(torch.stack([g.norm(2) for g in grads]), 2)
        for group in self.param_groups:
            scale = group["rho"] / (grad_norm + 1e-12)
            for p in group["params"]:
                if p.grad is None:
                    continue
                e_w = p.grad * scale
                p.add_(e_w)
                self.state[p]["e_w"] = e_w

    @torch.no_grad()
    def second_step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if "e_w" in self.state[p]:
                    p.sub_(self.state[p].pop("e_w"))
        self.base_optimizer.step()

    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        """Full SAM step; ``closure`` must zero grads, compute the loss and call backward."""
        if closure is None:
            raise ValueError("SAM.step needs a closure (or call first_step/second_step yourself)")
        self.first_step()
        with torch.enable_grad():
            closure()
        self.second_step()
