"""Frozen configuration objects built by the CLI and passed down as typed arguments.

Every field is printed and stored with every result.  Defaults are the paper's
(Deep Support Vectors, Appendix B) or the original method papers'; values the
papers do not give are marked "choice" in the field comments.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .ranges import FRACTION, MAX_EVALS_PER_SET, MAX_PRETRAIN_EPOCHS, MAX_SIZE, NON_NEGATIVE, POSITIVE, SEED, Range, count

# Datasets whose labels flip meaning under a horizontal flip (digits): no flip there.
DIGIT_DATASETS = ("digits", "mnist", "svhn")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset and where its files are."""
    name: str = "digits"
    root: str = "data"          # --data-root; for `folder` the folder holding train/ and test/
    download: bool = False      # fetch through torchvision when it imports


POLISH_PARAMS = ("classifier", "all")


@dataclass(frozen=True)
class PretrainRecipe:
    """θ* training (paper, Appendix B): Adam lr 1e-3, weight decay 5e-3, flip + crop."""
    RANGES: ClassVar[dict[str, Range]] = {
        "epochs": count(1, MAX_PRETRAIN_EPOCHS), "lr": POSITIVE, "weight_decay": NON_NEGATIVE,
        "batch_size": count(1, MAX_SIZE), "seed": SEED, "polish_steps": count(0)}
    epochs: int = 30                 # choice: the paper gives no epoch count
    lr: float = 1e-3
    weight_decay: float = 5e-3
    batch_size: int = 256            # choice: not given in the paper
    augment: str = "flip_crop"       # flip_crop | crop | none (digits: crop only, see for_dataset)
    seed: int = 0
    # Stationarity polish (choice, for DeepKKT): after the Adam epochs the last linear layer is
    # re-fitted on the frozen clean features to the exact minimum of CE + wd/2·‖W, b‖² by L-BFGS
    # (at most this many iterations; 0 = off).  Adam's last iterate is far from a stationary point
    # (measured on digits: cos(θ*, −Σ∇θL) = 0.27 on the classifier, 0.03 on all of θ*), and
    # stationarity, θ* = −Σλ∇θL with λ = 1/(n·wd), is what DeepKKT (Eq. 6) assumes.  Features,
    # dynamics (forgetting) and herding embeddings are untouched; it is cached separately.
    polish_steps: int = 300
    # What the polish fits (choice): ``classifier`` (above) or ``all`` — every parameter of θ*,
    # from the Adam iterate, by full-batch L-BFGS in float64 on the clean training set to a
    # stationary point of mean CE + wd/2·‖θ‖² (Eq. 6 over all layers, λ = 1/(n·wd); measured on
    # digits: the Adam iterate of ``convnet_dsv`` leaves an all-parameter residual of 0.99, 1500
    # iterations bring it to 0.039, cos 0.999; 0.105 after 300, 0.052 after 1000, little progress
    # past ~1300).  ``polish_steps`` then bounds the L-BFGS iterations.  Needs a model without batch norm.
    polish_params: str = "classifier"

    def __post_init__(self) -> None:
        if self.polish_params not in POLISH_PARAMS:
            raise ValueError(f"polish_params={self.polish_params!r}; valid: {', '.join(POLISH_PARAMS)}")

    @staticmethod
    def for_dataset(name: str, **overrides: Any) -> "PretrainRecipe":
        """Dataset defaults: no horizontal flip on digit datasets (a flipped 2 is not a 2);
        epoch counts (choice) long enough to reach ~100 % train accuracy as DeepKKT assumes."""
        epochs = {"digits": 30, "mnist": 20, "fashion-mnist": 30, "svhn": 30}.get(name, 50)
        base = PretrainRecipe(epochs=epochs, augment="crop" if name in DIGIT_DATASETS else "flip_crop")
        return dataclasses.replace(base, **overrides)


@dataclass(frozen=True)
class EvalRecipe:
    """How a condensed set is retrained from scratch (docs/sources.md#evaluation-recipes).

    The schedule fields follow the DC reference code's ``utils.evaluate_synset``
    (VICO-UoE/DatasetCondensation; described in ``docs/evaluation.md``): ``epochs`` is its
    ``Epoch``; with ``extra_pass`` the loop runs ``Epoch + 1`` passes over the set (``for ep in
    range(Epoch+1)``); the learning rate is multiplied by 0.1 after pass
    ``int(epochs · lr_decay_at) + lr_drop_lag`` (0-based; its ``lr_schedule = [Epoch//2+1]``,
    checked after the pass: lag 1); with ``reset_at_drop`` the optimizer is built anew at the
    drop, so SGD's momentum buffer restarts from zero.  ``dc_legacy`` is the suite's earlier
    schedule (``epochs`` passes, the drop after pass ``epochs/2``, momentum kept).
    """
    name: str
    optimizer: str                   # sgd | sam | adam
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 300                # DC: 1000 with augmentation (DC's or DSA's), 300 without
    batch_size: int = 256
    sam_rho: float = 0.0
    augment: str = "none"            # none | flip_crop | crop | dc | dc_noise | dc_crop_noise | dsa | dsa_noflip
    lr_decay_at: float = 0.5         # lr x0.1 after this fraction of the epochs (+ lr_drop_lag passes)
    test_batch_size: int = 256
    # Arithmetic of retraining and test evaluation (speed option, not a published setting):
    # fp32 (default, exact); tf32 (CUDA only: TF32 matmuls/convolutions, cuDNN autotuning);
    # bf16 (bfloat16 autocast of the forward passes, fp32 weights and optimizer; with tf32 on CUDA).
    precision: str = "fp32"
    extra_pass: bool = False         # Epoch + 1 passes (DC reference loop); False: Epoch passes
    lr_drop_lag: int = 0             # passes after int(epochs·lr_decay_at) before the drop (DC reference: 1)
    reset_at_drop: bool = False      # build the optimizer anew at the drop (DC reference: momentum from zero)
    # Fields a set may change (stored, hashed and printed only when on, so the keys of every record made
    # before they existed stay valid): lr_from_set — train at the set's learned learning rate (MTT's
    # evaluation, ``args.lr_net = syn_lr``); soft_labels — train on the set's soft labels (cross-entropy
    # against each image's label distribution, as DD-Ranking evaluates soft-label sets) when it has them.
    lr_from_set: bool = False
    soft_labels: bool = False
    OMIT_AT_DEFAULT: ClassVar[tuple[str, ...]] = ("lr_from_set", "soft_labels")

    @property
    def passes(self) -> int:
        """Training passes over the set: ``epochs``, plus one with ``extra_pass``."""
        return self.epochs + int(self.extra_pass)

    @property
    def drop_pass(self) -> int:
        """The 0-based pass at whose start the learning rate is ×0.1 (never, if ≥ ``passes``)."""
        return int(self.epochs * self.lr_decay_at) + self.lr_drop_lag + 1


EVAL_RECIPES = ("dc", "dsa", "mtt", "dc_legacy", "dsv", "adam")
RETRAIN_ENGINES = ("auto", "stacked", "plain")   # how a population of retrained models is trained
PRECISIONS = ("fp32", "tf32", "bf16")
# Models the DC reference trains with its 'crop_noise' strategy (``get_daparam``: ConvNetBN)
BATCH_NORM_MODELS = ("convnet_bn",)
# Datasets the DC reference augments as MNIST (``get_daparam``): MNIST and the MNIST-like 8×8 digits
DC_AUGMENTED_DATASETS = ("digits", "mnist")
# The DC reference's evaluation schedule (``utils.evaluate_synset``)
_DC_SCHEDULE = {"extra_pass": True, "lr_drop_lag": 1, "reset_at_drop": True}


def dc_augmentation(dataset: str, model: str | None = None) -> str:
    """The DC reference's ``get_daparam``: 'crop_scale_rotate' on MNIST (here: MNIST-like digit
    data, ``digits`` and ``mnist``), 'crop_noise' for a batch-norm ConvNet, otherwise none."""
    if model in BATCH_NORM_MODELS:
        return "dc_crop_noise"
    return "dc" if dataset in DC_AUGMENTED_DATASETS else "none"


def eval_recipe(name: str, dataset: str, model: str | None = None, **overrides: Any) -> EvalRecipe:
    """The named evaluation recipe with its dataset- (and model-) dependent defaults.

    ``dc``: as the DC reference code evaluates a set (``main.py`` + ``utils.evaluate_synset``):
    SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 256; augmentation from ``get_daparam``
    (:func:`dc_augmentation`); 1000 epochs when that augmentation is on ("training with data
    augmentation needs more epochs"), 300 when off; ``Epoch + 1`` passes, lr ×0.1 after pass
    ``Epoch//2 + 1`` with the optimizer rebuilt.
    ``dsa``: the same loop with DSA's augmentation instead of DC's, 1000 epochs (Zhao & Bilen 2021's
    ``main.py``: ``args.dsa`` → 1000); strategy color_crop_cutout_flip_scale_rotate, without flip on
    digit datasets (``dsa_noflip``: the reference README's setting for MNIST and SVHN).
    ``mtt``: ``dsa`` at the set's learned learning rate (MTT's ``distill.py`` evaluates with
    ``args.lr_net = syn_lr``; a set without one is trained at 0.01, the rate MTT's experts used, and
    its records say which rate was used).
    ``dc_legacy``: the suite's ``dc`` before it followed the reference's schedule: 300 epochs,
    ``Epoch`` passes, drop after pass ``Epoch/2``, momentum kept, and DC augmentation with the
    noise option ('crop_scale_rotate_noise') on MNIST-like data — kept to reproduce older tables.
    ``dsv``: SAM ρ 1e-4 around SGD lr 0.1 (paper §5.1 / Appendix B) with flip + crop
    (crop only on digit datasets); 300 epochs (choice, the paper gives none).
    ``adam``: Adam lr 1e-4, PyTorch's other defaults (no weight decay) — the NeurIPS version's
    retraining of its distilled sets (Implementation Details); augmentation as ``dsv``; 300
    epochs (choice, not given).
    """
    if name == "dc":
        augment = dc_augmentation(dataset, model)
        recipe = EvalRecipe("dc", "sgd", lr=0.01, augment=augment, epochs=300 if augment == "none" else 1000,
                            **_DC_SCHEDULE)
    elif name == "dsa":
        recipe = EvalRecipe("dsa", "sgd", lr=0.01, augment="dsa_noflip" if dataset in DIGIT_DATASETS else "dsa",
                            epochs=1000, **_DC_SCHEDULE)
    elif name == "mtt":
        recipe = EvalRecipe("mtt", "sgd", lr=0.01, augment="dsa_noflip" if dataset in DIGIT_DATASETS else "dsa",
                            epochs=1000, lr_from_set=True, **_DC_SCHEDULE)
    elif name == "dc_legacy":
        recipe = EvalRecipe("dc_legacy", "sgd", lr=0.01,
                            augment="dc_noise" if dataset in DC_AUGMENTED_DATASETS else "none")
    elif name == "dsv":
        recipe = EvalRecipe("dsv", "sam", lr=0.1, sam_rho=1e-4,
                            augment="crop" if dataset in DIGIT_DATASETS else "flip_crop")
    elif name == "adam":
        recipe = EvalRecipe("adam", "adam", lr=1e-4, momentum=0.0, weight_decay=0.0,
                            augment="crop" if dataset in DIGIT_DATASETS else "flip_crop")
    else:
        from .registry import UserError
        raise UserError(f"unknown eval recipe {name!r}; known: {', '.join(EVAL_RECIPES)}")
    return dataclasses.replace(recipe, **overrides)


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run: the grid of (method × seed × eval) jobs and where they go."""
    RANGES: ClassVar[dict[str, Range]] = {
        "ipc": count(1, MAX_SIZE), "evals_per_set": count(1, MAX_EVALS_PER_SET), "eval_epochs": count(1),
        "jobs": count(1, 4096), "threads": count(1, 4096), "ddrs_weight": FRACTION}
    data: DataConfig = field(default_factory=DataConfig)
    model: str = "convnet"
    eval_model: str | None = None           # cross-architecture evaluation; None = same as model
    eval_models: tuple[str, ...] = ()       # --eval-model with several: every column retrained on each (a row each)
    pretrain: PretrainRecipe = field(default_factory=PretrainRecipe)
    methods: tuple[str, ...] = ("random",)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    ipc: int = 1
    ipc_grid: tuple[int, ...] = ()          # --ipc with several values: every column at each (ipc is the first)
    evals_per_set: int = 1
    eval_recipe: str | None = None          # force one recipe on every column
    eval_epochs: int | None = None          # override the recipe's epoch count (reduced budget)
    eval_precision: str = "fp32"            # --eval-precision: EvalRecipe.precision of every column
    eval_soft_labels: bool = False          # --eval-soft-labels: EvalRecipe.soft_labels of every column
    method_overrides: tuple[tuple[str, str, str], ...] = ()   # (method, field, value) from --set
    device: str = "cpu"
    jobs: int = 1
    threads: int | None = None              # --threads: torch threads of the run (workers share them); None = cores
    backend: str = "loky"
    scheduler: str | None = None            # --scheduler: a dask scheduler's address (backend dask)
    out: str = "results/default"
    cache_dir: str = ".dsvbench_cache"
    reference_dataset: str | None = None    # treat the data like this dataset (defaults, paper figures)
    preset: str = "seed"                    # DSV recipe preset (--preset): seed | neurips
    scores: bool = False                    # --scores: full-data accuracy per seed and recipe, for HLR / DDRS
    ddrs_weight: float = 0.5                # --ddrs-weight: w of DD-Ranking's score (dsvbench.scores)
    force: bool = False                     # --force: lift the work bounds of dsvbench.ranges (never the ranges)
    retrain_engine: str = "auto"            # --retrain-engine: auto | stacked | plain (training.retrain_engine)
    # A field whose default changed what a run computes: the value that reproduces a run.json written before
    # the field existed (--replay uses it for a recording that lacks the field).
    BEFORE: ClassVar[dict[str, Any]] = {"retrain_engine": "stacked"}

    @property
    def defaults_dataset(self) -> str:
        """The dataset name that selects dataset-dependent defaults and reference figures."""
        return self.reference_dataset or self.data.name

    @property
    def retrain_model(self) -> str:
        return self.eval_model or self.model


def to_dict(obj: Any) -> Any:
    """Dataclasses (nested) to plain JSON-able dicts."""
    if dataclasses.is_dataclass(obj):
        omit = getattr(obj, "OMIT_AT_DEFAULT", ())   # newer fields at their default: left out, old keys stay
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.name in omit and getattr(obj, f.name) == f.default)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def canonical_json(value: Any) -> str:
    """One text per value: keys sorted, anything else as ``str`` (comparisons and hashes of configs)."""
    return json.dumps(value, sort_keys=True, default=str)


def config_hash(*parts: Any, length: int = 12) -> str:
    """Content hash of configuration objects, used as cache keys for artefacts."""
    text = canonical_json([to_dict(p) for p in parts])
    return hashlib.sha256(text.encode()).hexdigest()[:length]
