"""θ*: the pretrained reference network (paper, Appendix B), cached on disk.

Adam (lr 1e-3, weight decay 5e-3) with flip + crop.  While training we record, for every
training example and epoch, whether its (augmented) presentation was classified
correctly — the training dynamics that the forgetting baseline reads (Toneva et al.
count events between consecutive presentations).  The cache key is a hash of the
dataset fingerprint, architecture and full recipe.

Then, for DeepKKT, a *polish* (``PretrainRecipe.polish_steps``): the last linear layer is
re-fitted on the frozen clean features to the exact minimum of CE + wd/2·‖W, b‖², so that
θ*'s classifier is a stationary point (Eq. 6 of the DSV paper); it is cached as a second
stage on top of the Adam checkpoint.  With ``PretrainRecipe.polish_params = "all"`` every
parameter is polished instead (full-batch L-BFGS in float64 from the Adam iterate), so that Eq. 6
can hold over all layers at λ = 1/(n·wd).
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .atomic import CacheMismatch, atomic_torch_save, check_claims, load_cache_file
from .augment import augment
from .config import PretrainRecipe, config_hash, to_dict
from .data import ImageDataset
from .models import create_model, has_batch_norm
from .progress import progress_bar
from .training import accuracy, minibatches


@dataclass
class Pretrained:
    model: nn.Module
    dynamics: torch.Tensor        # bool epochs×N_train
    train_accuracy: float         # clean (no augmentation) accuracy of θ* on the training split
    test_accuracy: float
    seconds_per_epoch: float
    key: str
    path: Path

    @property
    def cache_dir(self) -> Path:
        """Folder for artefacts derived from this model (e.g. herding embeddings)."""
        return self.path.parent / self.key


def dataset_fingerprint(dataset: ImageDataset) -> str:
    """Full content hash of both splits (every pixel and label, sha256), memoized on the dataset.

    A strided sample would let two datasets differing only in unsampled pixels share θ* and
    every condensed set; hashing all bytes costs ≈0.1 s for MNIST, once per process.
    """
    return dataset.content_hash()[:16]


def pretrain_key(dataset: ImageDataset, model_name: str, recipe: PretrainRecipe) -> str:
    """Key of the Adam stage (the polish is cached on top of it, so changing it reuses the epochs)."""
    adam_stage = {k: v for k, v in to_dict(recipe).items() if k not in ("polish_steps", "polish_params")}
    return config_hash(dataset.name, dataset_fingerprint(dataset), model_name, adam_stage)


def theta_key(dataset: ImageDataset, model_name: str, recipe: PretrainRecipe) -> str:
    """The key of the θ* :func:`load_or_pretrain` returns (``Pretrained.key``), without loading it."""
    base = pretrain_key(dataset, model_name, recipe)
    return base if recipe.polish_steps <= 0 else _polish_key(base, recipe)


def _polish_key(base_key: str, recipe: PretrainRecipe) -> str:
    if recipe.polish_params == "classifier":   # the key it always had
        return config_hash(base_key, "polish", recipe.polish_steps, recipe.weight_decay)
    return config_hash(base_key, "polish", recipe.polish_steps, recipe.weight_decay, recipe.polish_params)


def load_or_pretrain(dataset: ImageDataset, model_name: str, recipe: PretrainRecipe,
                     cache_dir: str | Path, device: torch.device | str, progress: bool = True,
                     require_dynamics: bool = False) -> Pretrained:
    """Load θ* from the cache, or train it (and cache it) when missing.

    A cached checkpoint without dynamics (e.g. imported from elsewhere) is retrained when
    ``require_dynamics`` is set, with a message saying so.
    """
    base = _load_or_train(dataset, model_name, recipe, cache_dir, device, progress, require_dynamics)
    if recipe.polish_steps <= 0:
        return base
    return _load_or_polish(base, dataset, recipe, device, progress)


def _load_or_train(dataset, model_name, recipe, cache_dir, device, progress, require_dynamics) -> Pretrained:
    key = pretrain_key(dataset, model_name, recipe)
    path = Path(cache_dir) / "pretrained" / f"{dataset.name}-{model_name}-{key}.pt"
    model = create_model(model_name, dataset.shape).to(device)
    claims = theta_claims(key, dataset, model_name, recipe)
    state = (load_cache_file(path, lambda s: _checked_checkpoint(s, model, "model", claims), "cached θ*",
                             "pretraining it again", map_location=device) if path.exists() else None)
    if state is not None:
        dynamics = state.get("dynamics")
        if dynamics is not None or not require_dynamics:
            model.eval()
            return Pretrained(model, dynamics if dynamics is not None else torch.zeros(0, dtype=torch.bool),
                              state["train_accuracy"], state["test_accuracy"],
                              state["seconds_per_epoch"], key, path)
        tqdm.write(f"cached model {path} has no training dynamics; pretraining again to record them")
    return _pretrain(dataset, model_name, recipe, key, path, device, progress, claims)


def theta_claims(key: str, dataset: ImageDataset, model_name: str, recipe: PretrainRecipe) -> dict[str, Any]:
    """What a cached θ* claims to be, stored inside its file and checked on load: its key, the
    architecture, the Adam-stage recipe (epochs included), the dataset's content fingerprint and
    the length of the training dynamics it must hold (one row per epoch, one column per image)."""
    adam_stage = {k: v for k, v in to_dict(recipe).items() if k not in ("polish_steps", "polish_params")}
    return {"key": key, "model_name": model_name, "recipe": adam_stage,
            "dataset_fingerprint": dataset_fingerprint(dataset), "dynamics_shape": [recipe.epochs, len(dataset.train_y)]}


def _checked_checkpoint(state: dict, module: nn.Module, weights: str, claims: dict[str, Any]) -> dict:
    """``state`` after loading ``state[weights]`` into ``module``; raises when it claims another
    θ* (key, architecture, recipe, data), holds non-finite weights or dynamics of the wrong length,
    or when anything is missing or of the wrong kind (a damaged or foreign checkpoint is retrained,
    see ``load_cache_file``)."""
    check_claims(state.get("claims"), claims, "θ*")
    module.load_state_dict(state[weights])
    if not all(torch.isfinite(t).all() for t in module.state_dict().values() if t.is_floating_point()):
        raise CacheMismatch("holds non-finite weights (nan or inf)")
    for name in ("train_accuracy", "test_accuracy", *(("seconds_per_epoch",) if weights == "model" else ())):
        state[name] = float(state[name])
    dynamics = state.get("dynamics")
    if dynamics is not None and not (isinstance(dynamics, torch.Tensor) and dynamics.dtype == torch.bool):
        raise ValueError("its training dynamics are not a bool tensor")
    if dynamics is not None and "dynamics_shape" in claims and list(dynamics.shape) != claims["dynamics_shape"]:
        raise CacheMismatch(f"holds training dynamics of shape {list(dynamics.shape)}, not {claims['dynamics_shape']} "
                            "(epochs × training images)")
    return state


def _image_bar(desc: str, images: int, progress: bool):
    """A bar over images for the long forward passes (θ* evaluation, polish features): minutes on CIFAR-10."""
    return progress_bar(total=images, desc=desc, disable=not progress, unit="img", unit_scale=True)


def print_line(message: str, progress: bool) -> None:
    """A line between bars (a phase without steps to count, such as L-BFGS)."""
    if progress:
        tqdm.write(message)


def adam_stage(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, recipe: PretrainRecipe,
               generator: torch.Generator, on_batch: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
               on_epoch: Callable[[int, torch.Tensor], None] | None = None) -> nn.Module:
    """θ*'s Adam stage: ``recipe.epochs`` shuffled epochs of augmented minibatches (``generator`` draws
    the order and the augmentation); ``on_batch(epoch, batch, logits)`` after every step,
    ``on_epoch(epoch, last_loss)`` after every epoch.  Herding's per-seed feature networks run the same loop."""
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    model.train()
    for epoch in range(recipe.epochs):
        for batch in minibatches(len(labels), recipe.batch_size, generator):
            batch = batch.to(images.device)
            logits = model(augment(images[batch], recipe.augment, generator))
            loss = F.cross_entropy(logits, labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if on_batch is not None:
                on_batch(epoch, batch, logits)
        if on_epoch is not None:
            on_epoch(epoch, loss)
    return model


def _pretrain(dataset: ImageDataset, model_name: str, recipe: PretrainRecipe, key: str, path: Path,
              device: torch.device | str, progress: bool, claims: dict[str, Any]) -> Pretrained:
    generator = torch.Generator().manual_seed(recipe.seed)
    model = create_model(model_name, dataset.shape, generator).to(device)
    train_x, train_y = dataset.train_x.to(device), dataset.train_y.to(device)
    dynamics = torch.zeros(recipe.epochs, len(train_y), dtype=torch.bool)
    correct = torch.zeros(len(train_y), dtype=torch.bool, device=device)
    start = time.perf_counter()
    batches = -(-len(train_y) // recipe.batch_size)
    bar = progress_bar(total=recipe.epochs * batches, desc=f"pretrain {model_name} on {dataset.name}",
                       disable=not progress)

    def on_batch(epoch: int, batch: torch.Tensor, logits: torch.Tensor) -> None:
        correct[batch] = logits.argmax(1) == train_y[batch]   # the training dynamics (forgetting)
        bar.update()

    def on_epoch(epoch: int, loss: torch.Tensor) -> None:
        dynamics[epoch] = correct.cpu()
        bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}",
                        train_acc=f"{100 * correct.float().mean().item():.1f}")
        correct.zero_()
    adam_stage(model, train_x, train_y, recipe, generator, on_batch, on_epoch)
    bar.close()
    seconds_per_epoch = (time.perf_counter() - start) / max(recipe.epochs, 1)
    model.eval()
    with _image_bar(f"evaluate θ* on {dataset.name} (train + test)", len(train_y) + len(dataset.test_y),
                    progress) as bar:
        train_acc = accuracy(model, train_x, train_y, on_batch=bar.update)
        test_acc = accuracy(model, dataset.test_x.to(device), dataset.test_y.to(device), on_batch=bar.update)
    atomic_torch_save({"model": model.state_dict(), "dynamics": dynamics, "train_accuracy": train_acc,
                       "test_accuracy": test_acc, "seconds_per_epoch": seconds_per_epoch,
                       "recipe": to_dict(recipe), "model_name": model_name, "claims": claims}, path)
    return Pretrained(model, dynamics, train_acc, test_acc, seconds_per_epoch, key, path)


def _load_or_polish(base: Pretrained, dataset: ImageDataset, recipe: PretrainRecipe,
                    device: torch.device | str, progress: bool = False) -> Pretrained:
    """θ* after its stationarity polish (``recipe.polish_params``: the classifier, or every parameter),
    cached as a second stage on top of the Adam checkpoint."""
    whole = recipe.polish_params == "all"
    key = _polish_key(base.key, recipe)
    path = base.path.with_name(f"{base.path.stem}-polish{'-all' if whole else ''}-{key}.pt")
    model = copy.deepcopy(base.model)
    entry = "model_polished" if whole else "classifier"
    claims = {"key": key, "base_key": base.key, "polish_params": recipe.polish_params,
              "polish_steps": recipe.polish_steps, "weight_decay": recipe.weight_decay}
    state = (load_cache_file(path, lambda s: _checked_checkpoint(s, model if whole else model.classifier, entry, claims),
                             "cached polished θ*", "polishing it again", map_location=device)
             if path.exists() else None)
    if state is not None:
        return dataclasses.replace(base, model=model.eval(), train_accuracy=state["train_accuracy"],
                                   test_accuracy=state["test_accuracy"], key=key, path=path)
    polish = _polish_all if whole else _polish_classifier
    print_line(f"polishing θ* ({recipe.polish_params}, at most {recipe.polish_steps} L-BFGS iterations)", progress)
    polished, train_acc, extra = polish(model, dataset, recipe, device, progress)
    with _image_bar(f"evaluate polished θ* on {dataset.name} (test)", len(dataset.test_y), progress) as bar:
        test_acc = accuracy(model, dataset.test_x.to(device), dataset.test_y.to(device), on_batch=bar.update)
    atomic_torch_save({entry: polished.state_dict(), "train_accuracy": train_acc, "test_accuracy": test_acc,
                       "base_key": base.key, "claims": claims, **extra}, path)
    return dataclasses.replace(base, model=model, train_accuracy=train_acc, test_accuracy=test_acc,
                               key=key, path=path)


def _polish_classifier(model: nn.Module, dataset: ImageDataset, recipe: PretrainRecipe,
                       device: torch.device | str, progress: bool = False) -> tuple[nn.Module, float, dict]:
    """The last linear layer, in place, at the exact minimum of CE + wd/2·‖W, b‖² on frozen features;
    returns (the classifier, train accuracy, {})."""
    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, nn.Linear) or not hasattr(model, "features"):
        raise ValueError("polish_steps needs a model with .features() and a Linear .classifier; "
                         "set it to 0 for this model")
    model.eval()
    with torch.no_grad(), _image_bar(f"θ* features of {dataset.name} (polish)", len(dataset.train_y), progress) as bar:
        feats = []
        for chunk in dataset.train_x.to(device).split(1024):
            feats.append(model.features(chunk))
            bar.update(len(chunk))
        feats = torch.cat(feats)
    labels = dataset.train_y.to(device)
    params = list(classifier.parameters())
    optimizer = torch.optim.LBFGS(params, lr=1, max_iter=recipe.polish_steps, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(classifier(feats), labels) + 0.5 * recipe.weight_decay * sum(
            p.square().sum() for p in params)
        loss.backward()
        return loss
    with torch.enable_grad():
        optimizer.step(closure)
    for p in params:
        p.grad = None
    with torch.no_grad():
        train_acc = 100.0 * float((classifier(feats).argmax(1) == labels).float().mean())
    return classifier, train_acc, {}


def _polish_all(model: nn.Module, dataset: ImageDataset, recipe: PretrainRecipe,
                device: torch.device | str, progress: bool = False) -> tuple[nn.Module, float, dict]:
    """Every parameter, in place, at a stationary point of mean CE + wd/2·‖θ‖² on the clean training
    set: full-batch L-BFGS (strong Wolfe) in float64 from the Adam iterate, at most ``polish_steps``
    iterations, stopping earlier once the gradient is at float64 noise; returns (the model, train
    accuracy, the iteration count)."""
    if has_batch_norm(model):
        raise ValueError("polish_params=all needs a model without batch norm (its full-batch loss "
                         "depends on the batch statistics)")
    wide = copy.deepcopy(model).double().eval()
    train_x = dataset.train_x.to(device).double()
    labels = dataset.train_y.to(device)
    params = [p for p in wide.parameters() if p.requires_grad]
    optimizer = torch.optim.LBFGS(params, lr=1, max_iter=recipe.polish_steps, max_eval=2 * recipe.polish_steps,
                                  history_size=50, tolerance_grad=1e-12, tolerance_change=1e-15,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = sum(F.cross_entropy(wide(x), y, reduction="sum") for x, y in
                   zip(train_x.split(2048), labels.split(2048))) / len(labels)
        loss = loss + 0.5 * recipe.weight_decay * sum(p.square().sum() for p in params)
        loss.backward()
        return loss
    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        for target, source in zip(model.parameters(), wide.parameters()):
            target.copy_(source.to(target.dtype))
    model.eval()
    with _image_bar(f"evaluate polished θ* on {dataset.name} (train)", len(labels), progress) as bar:
        train_acc = accuracy(model, dataset.train_x.to(device), labels, on_batch=bar.update)
    return model, train_acc, {"lbfgs_iterations": int(optimizer.state[params[0]].get("n_iter", 0))}
