"""Training-data reconstruction through the DeepKKT engine: Haim et al. 2022's setting and the
ladder from it to DSV's (``benchmarks/reconstruct.py``, ``docs/reconstruction.md``).

A case is a small training set (mean-subtracted [0, 1] pixels, as Haim et al.), a network
trained on it to a large margin, and 2N candidates that DeepKKT turns back into images.  The
engine is ``dsvg``'s builder (:func:`dsvbench.methods.dsvg.build_dsvg_many`) on that network
with every candidate kept; :func:`haim_reference` is an independent implementation of Haim et
al.'s own loop, run beside it as the reference.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import DataConfig
from .data import DATASETS
from .methods.base import BuildContext
from .methods.kkt_terms import FLOOR_WEIGHT, range_penalty, smooth_relus
from .models import InputShape, create_model

# Haim et al.'s binary MNIST: odd (1) vs even (0); binary CIFAR-10: animals (1) vs vehicles (0).
BINARY_GROUPS = {"mnist": [i % 2 for i in range(10)], "digits": [i % 2 for i in range(10)],
                 "cifar10-folder": [0, 0, 1, 1, 1, 1, 1, 1, 0, 0]}
CASES = ("mnist-binary", "cifar10-binary", "mnist-multiclass", "digits-binary", "digits-multiclass")
# Haim et al.'s reconstruction hyper-parameters (one point of their MNIST sweep) as dsvg fields.
HAIM_FIELDS = dict(params="all", objective="margin", distance="sq_l2", sqrt="none", normalize="none", beta=1.0,
                   gamma=0.0, primal_weight=0.0, activation="smooth", relu_alpha=19.2, dual="floor",
                   lambda_floor=0.415, lambda_optimizer="sgd", alpha_lambda=1e-4, lambda_momentum=0.9,
                   lambda_init="uniform", lambda_scale="mean", rescale_every=0, optimizer="sgd", alpha_x=0.282,
                   momentum=0.9, init_std=0.00174, lowres_steps=0, keep_per_class=False, range_weight=1.0,
                   range_bounds="-1,1", aug_flip=False)


@dataclass
class Case:
    """A reconstruction problem: mean-subtracted training / held-out images and their labels."""
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    heldout_x: torch.Tensor
    heldout_y: torch.Tensor
    mean: torch.Tensor          # 1×C×H×W, added back for display and SSIM
    num_classes: int

    @property
    def shape(self) -> InputShape:
        return InputShape(self.train_x.shape[1], self.train_x.shape[-1], max(self.num_classes, 2))


def _first_per_class(labels: np.ndarray, per_class: int, num_classes: int) -> np.ndarray:
    """Indices of the first ``per_class`` examples of each class, in file order (as Haim et al.);
    ``per_class=0``: every example."""
    if per_class == 0:
        return np.arange(len(labels))
    picked = [np.flatnonzero(labels == c)[:per_class] for c in range(num_classes)]
    if any(len(p) < per_class for p in picked):
        raise ValueError(f"fewer than {per_class} examples in some class")
    return np.sort(np.concatenate(picked))


def _even_from_members(fine: np.ndarray, coarse: np.ndarray, per_class: int, classes: int) -> np.ndarray:
    """``per_class`` images of each coarse class, split as evenly as possible over its fine classes
    (the first ones of each), so that "vehicles" are not all airplanes when files come class by class."""
    picked = []
    for c in range(classes):
        members = np.unique(fine[coarse == c])
        shares = [per_class // len(members) + (k < per_class % len(members)) for k in range(len(members))]
        picked += [np.flatnonzero(fine == m)[:n] for m, n in zip(members, shares)]
    return np.sort(np.concatenate(picked))


def load_case(name: str, per_class: int, heldout_per_class: int, data_root: str) -> Case:
    """Read and build case ``name`` (CASES) from the suite's dataset readers."""
    dataset = {"mnist-binary": "mnist", "mnist-multiclass": "mnist", "digits-binary": "digits",
               "digits-multiclass": "digits", "cifar10-binary": "cifar10-folder"}[name]
    raw = DATASETS.get("folder" if dataset == "cifar10-folder" else dataset)(DataConfig(
        "folder" if dataset == "cifar10-folder" else dataset, root=data_root))
    train_labels, test_labels = np.asarray(raw.train_labels), np.asarray(raw.test_labels)
    if name.endswith("binary"):
        group = np.asarray(BINARY_GROUPS[dataset])
        train_labels, test_labels, classes = group[train_labels], group[test_labels], 2
    else:
        classes = int(train_labels.max()) + 1
    if dataset == "cifar10-folder":   # a folder lists class by class: take each side evenly from its classes
        train = _even_from_members(np.asarray(raw.train_labels), train_labels, per_class, classes)
        heldout = _even_from_members(np.asarray(raw.test_labels), test_labels, heldout_per_class, classes)
    else:
        train = _first_per_class(train_labels, per_class, classes)
        heldout = _first_per_class(test_labels, heldout_per_class, classes)
    to_float = lambda a: torch.as_tensor(a, dtype=torch.float32).reshape(len(a), *a.shape[1:3], -1)  # noqa: E731
    train_x = to_float(raw.train_images[train]).permute(0, 3, 1, 2) / 255
    heldout_x = to_float(raw.test_images[heldout]).permute(0, 3, 1, 2) / 255
    mean = train_x.mean(0, keepdim=True)
    return Case(name, train_x - mean, torch.as_tensor(train_labels[train]), heldout_x - mean,
                torch.as_tensor(test_labels[heldout]), mean, classes)


class HaimMLP(nn.Module):
    """Haim et al.'s MLP D-w-…-w-K: ReLU, a bias in the first layer only, the first layer
    initialised N(0, init²).  A binary network (one output Φ) returns the two logits [0, Φ]:
    then cross-entropy is the logistic loss and the multiclass margin max_{j≠y}Φ_j − Φ_y is
    −y·Φ (y = ±1), so the engine's ``margin`` objective is their Σλ y ∇Φ."""

    def __init__(self, shape: InputShape, width: int, depth: int = 2, outputs: int = 1, init: float = 1e-4,
                 generator: torch.Generator | None = None):
        super().__init__()
        dims = [shape.channels * shape.size ** 2] + [width] * depth
        layers: list[nn.Module] = [nn.Flatten()]
        for k, (a, b) in enumerate(zip(dims, dims[1:])):
            layers += [nn.Linear(a, b, bias=k == 0), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, outputs, bias=False)
        self.binary = outputs == 1
        first = self.body[1]
        with torch.no_grad():
            first.weight.normal_(generator=generator).mul_(init)
            first.bias.normal_(generator=generator).mul_(init)
            for layer in [m for m in self.modules() if isinstance(m, nn.Linear)][1:]:
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier(self.body(x))
        return torch.cat([torch.zeros_like(out), out], 1) if self.binary else out


@dataclass(frozen=True)
class TrainRecipe:
    """θ* of a case: full-batch GD on the cross-entropy (logistic loss for a binary network), in
    float64 (as Haim et al.'s code), then cast to float32 for reconstruction.

    Haim et al. train with plain GD, lr 0.01, for up to 10⁶ epochs, to drive the loss (and so
    the direction of θ) toward the max-margin KKT point.  We multiply each step by min(1/L,
    ``scale_cap``) (L the current loss: normalized GD for exponentially-tailed losses, capped —
    uncapped it diverged at the edge of stability): measured on 100 MNIST digits, width 200,
    20 000 steps reach L = 3e-4 plain, 1.2e-6 with cap 100, 7e-9 with cap 10⁴ (plain GD would
    need ≈ 10⁶ steps for 6e-6).  ``scale_cap=1`` is plain GD.  With weight decay (Buzaglo et
    al.) the regularized loss has a finite minimum, so steps are plain (cap ignored)."""
    steps: int = 20000
    lr: float = 0.01
    weight_decay: float = 0.0
    scale_cap: float = 1000.0
    target_loss: float = 1e-8


def train_theta(model: nn.Module, case: Case, recipe: TrainRecipe) -> dict:
    """Fit ``model`` (in place; float32 after) to the case's training set; returns diagnostics."""
    model.double()
    x, y = case.train_x.double(), case.train_y
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    cap = 1.0 if recipe.weight_decay > 0 else recipe.scale_cap
    start, steps = time.perf_counter(), 0
    for steps in range(1, recipe.steps + 1):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        (loss * torch.clamp(1 / loss.detach(), max=cap)).backward()
        optimizer.step()
        if steps % 200 == 0 and float(loss.detach()) < recipe.target_loss:
            break
    model.float()
    with torch.no_grad():
        logits = model(case.train_x)
        label = logits.gather(1, case.train_y[:, None]).squeeze(1)
        margin = label - logits.scatter(1, case.train_y[:, None], -math.inf).max(1).values
        loss = F.cross_entropy(logits.double(), case.train_y)
        heldout = (model(case.heldout_x).argmax(1) == case.heldout_y).double().mean()
    return {"steps": steps, "loss": float(loss), "train_accuracy": float((margin > 0).double().mean()),
            "heldout_accuracy": round(float(heldout), 4), "min_margin": round(float(margin.min()), 4),
            "seconds": round(time.perf_counter() - start, 1)}


class SuiteInput(nn.Module):
    """A θ* of the suite (trained on (pixels − μ_c)/σ_c) seen from a case's mean-subtracted pixels:
    z ↦ θ*((z + pixel mean − μ_c)/σ_c).  An input map without parameters, so θ*'s stationarity
    and every gradient the engine takes are those of θ* itself."""

    def __init__(self, net: nn.Module, case_mean: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.net = net
        self.register_buffer("offset", case_mean - torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("scale", 1 / torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net((z + self.offset) * self.scale)


def dsv_theta(case: Case, model_name: str, data_root: str, cache_dir: str, polish: str = "classifier") -> tuple[nn.Module, dict]:
    """The θ* DSV's methods use (``theta_model=model_name``: Adam, weight decay 5e-3, the dataset's
    augmentation, the classifier or all-layer polish), trained on the full training split by the
    suite's own pretraining (cached), wrapped to read the case's pixels (:class:`SuiteInput`)."""
    from .config import PretrainRecipe
    from .data import load_dataset
    from .pretrain import load_or_pretrain
    name = case.name.split("-")[0]
    dataset = load_dataset(DataConfig(name, root=data_root))
    recipe = PretrainRecipe.for_dataset(name, weight_decay=5e-3, polish_params=polish,
                                        **({"polish_steps": 1500} if polish == "all" else {}))
    pretrained = load_or_pretrain(dataset, model_name, recipe, cache_dir, "cpu", progress=False)
    model = SuiteInput(pretrained.model.eval(), case.mean, dataset.mean, dataset.std)
    return model, {"recipe": dataclasses.asdict(recipe), "train_accuracy": pretrained.train_accuracy,
                   "test_accuracy": pretrained.test_accuracy}


def engine_reconstruct(model: nn.Module, case: Case, candidates_per_class: int, overrides: dict, seed: int,
                       steps: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """2N candidates through ``dsvg``'s builder (every candidate kept: ipc = candidates per class), with
    Haim et al.'s fields (HAIM_FIELDS) or, with ``overrides["base"] = "dsvg"``, dsvg's defaults,
    then ``overrides`` on top."""
    from .methods.dsvg import DSVgRecipe, build_dsvg_many
    overrides = dict(overrides)
    base = HAIM_FIELDS if overrides.pop("base", "haim") == "haim" else \
        {"aug_flip": False, "lowres_steps": steps // 2}   # dsvg's half-and-half schedule; keep_per_class
    # (dsvg's default) with ipc = every candidate: nobody leaves, every candidate is scored
    fields = {**base, **overrides, "steps": steps, "candidates_per_class": candidates_per_class}
    recipe = DSVgRecipe(**{k: v for k, v in fields.items() if k in {f.name for f in dataclasses.fields(DSVgRecipe)}})
    ctx = BuildContext(method="dsvg", num_classes=case.shape.num_classes, ipc=candidates_per_class,
                       shape=case.shape, generator=torch.Generator().manual_seed(seed), device=torch.device("cpu"),
                       model_name="", _pretrained=model)
    condensed = build_dsvg_many([ctx], recipe)[0]
    return condensed.images, condensed.labels, {"recipe": dataclasses.asdict(recipe), **_summary(condensed.metadata)}


def _summary(metadata: dict) -> dict:
    return {k: metadata[k] for k in ("residual_l1", "residual_l2", "cosine", "correct", "alive",
                                     "residual_l2_start") if k in metadata}


def haim_reference(model: nn.Module, case: Case, candidates_per_class: int, seed: int, steps: int,
                   fields: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Haim et al.'s reconstruction loop, written out on its own (not through the engine):
    Σ_p ‖p − ∇_p (1/m)Σ λ_i y_i Φ(x_i)‖² + Σ relu(|x| − 1)² + 5 Σ relu(floor − λ)², the ReLU
    backward replaced by sigmoid(α z), SGD with momentum 0.9 on x and λ (binary networks only)."""
    f = {**HAIM_FIELDS, **(fields or {})}
    net = _frozen_copy(model, f["relu_alpha"])
    generator = torch.Generator().manual_seed(seed)
    m = 2 * candidates_per_class
    x = (f["init_std"] * torch.randn(m, *case.train_x.shape[1:], generator=generator)).requires_grad_(True)
    lam = torch.rand(m, generator=generator).requires_grad_(True)
    sign = torch.cat([-torch.ones(candidates_per_class), torch.ones(candidates_per_class)])
    opt_x = torch.optim.SGD([x], lr=f["alpha_x"], momentum=0.9)
    opt_l = torch.optim.SGD([lam], lr=f["alpha_lambda"], momentum=0.9)
    params = list(net.parameters())
    for _ in range(steps):
        phi = net(x)[:, 1]
        grads = torch.autograd.grad((phi * lam * sign).sum() / m, params, create_graph=True)
        loss = sum((p - g).square().sum() for p, g in zip(params, grads))
        loss = loss + range_penalty(x, torch.tensor(-1.0), torch.tensor(1.0))
        loss = loss + FLOOR_WEIGHT * (f["lambda_floor"] - lam).clamp_min(0).square().sum()
        opt_x.zero_grad()
        opt_l.zero_grad()
        loss.backward()
        opt_x.step()
        opt_l.step()
    return x.detach(), (sign > 0).long(), {"loss": float(loss.detach())}


def _frozen_copy(model: nn.Module, alpha: float) -> nn.Module:
    net = copy.deepcopy(model).eval()
    smooth_relus(net, alpha)
    for p in net.parameters():
        p.requires_grad_(True)
    return net


def retrain_accuracy(case: Case, images: torch.Tensor, labels: torch.Tensor, ipcs: list[int], dataset_name: str,
                     data_root: str, seed: int, model_name: str = "convnet") -> dict[str, float]:
    """Test accuracy of a fresh ``model_name`` retrained (the suite's ``dc`` recipe, the digits /
    MNIST test split) on the top-λ ``ipc`` candidates of each class; ``images`` come from
    :func:`engine_reconstruct` (each class's candidates in descending λ)."""
    from .config import eval_recipe
    from .data import load_dataset
    from .training import retrain
    dataset = load_dataset(DataConfig(dataset_name, root=data_root))
    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    normalized = ((images + case.mean) - mean) / std
    out = {}
    for ipc in ipcs:
        chosen = torch.cat([torch.nonzero(labels == c).flatten()[:ipc] for c in range(case.num_classes)])
        generator = torch.Generator().manual_seed(seed)
        model = create_model(model_name, dataset.shape, generator)
        result = retrain(model, normalized[chosen], labels[chosen], dataset.test_x, dataset.test_y,
                         eval_recipe("dc", dataset_name), generator)
        out[f"ipc{ipc}"] = round(result.test_accuracy, 1)   # already a percentage
    return out
