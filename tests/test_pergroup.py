"""dsvbench.pergroup: K groups' gradients in one pass equal K separate autograd calls."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dsvbench.pergroup import _overwritten_outputs, per_group_grads, weighted_cross_entropy


class Misordered(nn.Module):
    """The in-place ReLU is registered before the conv it follows: the registration-order guess
    copies nothing and the version check must catch it."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(F.avg_pool2d(self.act(self.conv(x)), 2).flatten(1))


def sequential(norm: bool) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(4, 4) if norm else nn.Identity(),
                         nn.ReLU(inplace=True), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


@pytest.mark.parametrize("make", [Misordered, lambda: sequential(True), lambda: sequential(False)])
def test_group_gradients_equal_one_autograd_call_per_group(make):
    torch.manual_seed(0)
    model = make().double()
    x, y = torch.randn(9, 1, 8, 8, dtype=torch.float64), torch.randint(0, 3, (9,))
    groups = torch.tensor([0, 2, 1, 0, 2, 2, 1, 0, 1])
    weights = torch.rand(9, dtype=torch.float64)
    grads, _ = per_group_grads(model, x, weighted_cross_entropy(weights, y), groups, 3)
    names = [n for n, _ in model.named_parameters() if n.split(".")[-2:][0] in ("conv", "fc", "0", "5")]
    for g in range(3):
        members = groups == g
        loss = (weights[members] * F.cross_entropy(model(x[members]), y[members], reduction="none")).sum()
        want = torch.autograd.grad(loss, [dict(model.named_parameters())[n] for n in names])
        for name, w in zip(names, want):
            torch.testing.assert_close(grads[name][g], w, rtol=1e-10, atol=1e-12)


def test_the_guess_copies_only_outputs_an_in_place_op_follows():
    with_norm, without = sequential(True), sequential(False)
    assert _overwritten_outputs(with_norm) == set()                 # conv -> norm: nothing to copy
    assert _overwritten_outputs(without) == {without[0]}            # conv -> (identity) -> ReLU(inplace)
    assert _overwritten_outputs(Misordered()) == set()              # wrong, caught by the version check
