"""The recipe fields ``dsvs`` and ``dsvg`` share (:class:`KKTRecipe`) and the DSV presets.

The engine these fields configure is :mod:`.deepkkt`; the λ loop both methods run is :mod:`.kkt_loop`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..config import DIGIT_DATASETS, POLISH_PARAMS
from ..ranges import FRACTION, MAX_SIZE, NON_NEGATIVE, POSITIVE, UNIT, Range, count
from .deepkkt import DISTANCES, NORMALIZATIONS, OBJECTIVES, PARAM_SETS, SQRT_MODES
from .kkt_terms import ACTIVATIONS, DUALS, LAMBDA_INITS


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
PRESETS: dict[str, dict[str, dict[str, str]]] = {   # preset -> method -> field -> value
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


def kkt_presets(method: str) -> dict[str, dict[str, str]]:
    """The presets ``method`` (dsvs or dsvg) registers: preset name -> its recipe fields."""
    return {name: dict(fields[method]) for name, fields in PRESETS.items() if method in fields}


def kkt_recipe_defaults(dataset: str) -> dict:
    """Dataset defaults of dsvs and dsvg: no horizontal flip in A(X) on digit datasets (a flipped 2 is not a 2)."""
    return {"aug_flip": False} if dataset in DIGIT_DATASETS else {}
