import torch

from dsvbench.sam import SAM


def test_sam_two_step_update_matches_hand_computation():
    # L(w) = ||w||² / 2, so ∇L(w) = w.  w = (3, 4): ||w|| = 5.
    # ε = ρ w / ||w|| = 0.5 · (0.6, 0.8) = (0.3, 0.4); gradient at w + ε = (3.3, 4.4);
    # plain SGD (lr 0.1) from the restored w: (3, 4) − 0.1 · (3.3, 4.4) = (2.67, 3.56).
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    optimizer = SAM([w], torch.optim.SGD, rho=0.5, lr=0.1)
    seen = []

    def closure():
        optimizer.zero_grad()
        loss = 0.5 * (w ** 2).sum()
        loss.backward()
        seen.append(w.detach().clone())
        return loss

    closure()
    optimizer.step(closure)
    assert torch.allclose(seen[1], torch.tensor([3.3, 4.4]))      # perturbed point
    assert torch.allclose(w.detach(), torch.tensor([2.67, 3.56]))


def test_sam_with_zero_rho_equals_sgd():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5))
    b = torch.nn.Parameter(a.detach().clone())
    sam = SAM([a], torch.optim.SGD, rho=0.0, lr=0.05, momentum=0.9, weight_decay=5e-4)
    sgd = torch.optim.SGD([b], lr=0.05, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        for param, opt in ((a, sam), (b, sgd)):
            opt.zero_grad()
            (param.sin().sum()).backward()
        sam.first_step()
        sam.zero_grad()
        a.sin().sum().backward()
        sam.second_step()
        sgd.step()
    assert torch.allclose(a, b, atol=1e-6)
