"""The command line's flags: the parser, and the :class:`BenchConfig` built from them (checked by
:mod:`.checks`); :func:`config_from_flags` is the same from keyword arguments (``dsvbench.run``)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from .checks import check_config, ddrs_weight, worker_count
from .config import EVAL_RECIPES, PRECISIONS, RETRAIN_ENGINES, BenchConfig, DataConfig, PretrainRecipe
from .methods import METHODS
from .plan import preset_overrides, preset_names
from .ranges import RangeError, check_seeds
from .registry import UserError
from .results import DC_PAPER_PROTOCOL


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (the usage block runs to many), exit code 2 as usual."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# --protocol: models retrained per set (the DC paper: ``--num_eval 20`` of its reference main.py)
PROTOCOLS = {"suite": 1, "dc-paper": DC_PAPER_PROTOCOL[1]}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="dsvbench", description=(
        "Dataset distillation / coreset selection at tiny budgets: reproduces Table 1 of "
        "'Deep Support Vectors' and compares your methods with it."))
    add = parser.add_argument
    add("--dataset", default="cifar10", help="dataset name (see --list-datasets); default cifar10")
    add("--data-root", default="data", help="folder holding the dataset files (default ./data)")
    add("--download", action="store_true", help="fetch the dataset through torchvision if missing")
    add("--reference-dataset", help="use this dataset's defaults and paper figures (e.g. cifar10 for "
        "the CIFAR-10 JPEG image folder)")
    add("--methods", nargs="+", default=["all"], help="method ids or 'all' (see --list-methods)")
    add("--seeds", type=int, default=5, help="number of seeds 0..N-1 (default 5)")
    add("--seed-list", type=int, nargs="+", help="explicit seeds (overrides --seeds)")
    add("--ipc", type=int, nargs="+", default=[1], help="images per class (default 1); several, e.g. 1 10 50: "
        "the IPC grid in one run, a table row per (dataset, IPC)")
    add("--model", default="convnet", help="architecture of θ* and of the condensation (default convnet)")
    add("--eval-model", nargs="+", help="architecture(s) retrained on the sets (cross-architecture); several, e.g. "
        "convnet mlp lenet alexnet vgg11 resnet18: a table row each (the DC paper's Table 2); default --model")
    add("--evals-per-set", type=int, help="fresh networks retrained per condensed set (default 1; "
        "--protocol dc-paper: 20)")
    add("--protocol", choices=list(PROTOCOLS), default="suite",
        help="models per set: suite = --evals-per-set (default 1); dc-paper = the DC paper's 20 freshly "
             "initialised models per set (its --num_eval 20; with --seeds 5, its 5 × 20)")
    add("--eval-recipe", choices=EVAL_RECIPES, help="force one retraining recipe on every column")
    add("--preset", default="seed", help="DSV recipe preset: seed = the arXiv paper's reading (default); "
        f"registered: {', '.join(preset_names())} (neurips = the NeurIPS 2024 version; recon = Haim et al. "
        "2022's reconstruction regime, docs/reconstruction.md); --set overrides it")
    add("--eval-epochs", type=int, help="retraining epochs (reduced budget; default: the recipe's)")
    add("--eval-soft-labels", action="store_true", help="retrain every column on its sets' soft labels where they "
        "have them (EvalRecipe.soft_labels; a changed recipe, marked in every output)")
    add("--eval-precision", choices=list(PRECISIONS), default="fp32",
        help="arithmetic of retraining and test evaluation: fp32 (default, exact), tf32 (CUDA: TF32 + cuDNN "
             "autotuning), bf16 (bfloat16 autocast); stored in every record's eval recipe")
    add("--retrain-engine", choices=list(RETRAIN_ENGINES), default="auto",
        help="how the retrained models of a column are trained: stacked (one torch.func population), plain (model "
             "by model); auto (default): plain on the CPU where a model's activations reach 1 MiB per image "
             "(MNIST, CIFAR-10 at width 128), else stacked. Part of the floating-point environment, in run.json")
    add("--pretrain-epochs", type=int, help="epochs of θ* pretraining (default: per dataset)")
    add("--force", action="store_true", help="accept counts past the work bounds this suite checks "
        "(seeds, epochs, steps, sizes far above any published budget); never values outside a range")
    add("--set", dest="overrides", action="append", default=[], metavar="METHOD.FIELD=VALUE",
        help="override a method recipe field, e.g. --set dc.iterations=200 (repeatable)")
    add("--herding-features", choices=["pretrained", "random-init", "pixels"],
        help="feature space for herding (shortcut for --set herding.features=...)")
    add("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    add("--jobs", type=int, help="CPU: parallel workers through joblib, each column's seeds split "
        "among them (default 1; with --scheduler the cluster's worker threads); GPU: must be 1 (one process "
        "per GPU, seeds batched inside each method)")
    add("--threads", type=int, help="torch threads of the run on the CPU; --jobs workers share them (each gets "
        "threads // jobs, at least 1); default: the usable cores. On a machine busy with other work use 1")
    add("--backend", default="loky", help="joblib backend: loky, threading, ray, ...; dask: a dask.distributed "
        "cluster (--scheduler, else a LocalCluster of --jobs processes)")
    add("--scheduler", metavar="ADDRESS", help="with --backend dask: the address of a running dask scheduler "
        "(tcp://HOST:8786); its workers must see --out, --cache-dir and --data-root at the same paths")
    add("--out", help="output folder (default results/<dataset>-ipc<k>)")
    add("--cache-dir", default=".dsvbench_cache", help="cache of datasets, θ*, condensed sets")
    add("--from", dest="from_dirs", nargs="+", metavar="DIR",
        help="re-render stored run(s) instead of running; several are merged into --out (a new folder)")
    add("--in-place", action="store_true", help="with --from: allow writing the outputs into an input folder "
        "(the first one when --out is not given)")
    add("--replay", metavar="RUN_JSON", help="re-run exactly the configuration a run recorded in its run.json "
        "(recipes, seeds, budgets, data) into a new --out; only --out, --device, --jobs, --backend, --scheduler, "
        "--cache-dir and --quiet may be given with it")
    add("--scores", action="store_true", help="also train the retrained architecture on the whole training set "
        "(each column's recipe, per seed; cached) for DD-Ranking's HLR and DDRS rows; IOR needs no extra training")
    add("--ddrs-weight", type=float, metavar="W", help="weight w of IOR against HLR in DDRS (default 0.5, "
        "DD-Ranking's); with --from: re-scores the stored runs")
    add("--list-methods", nargs="?", const="*", metavar="METHOD", help="list registered methods and exit; "
        "with a METHOD: every recipe field with its type, default and comment, its presets and hooks")
    add("--list-models", action="store_true", help="list registered models and exit")
    add("--list-datasets", action="store_true", help="list dataset readers and exit")
    add("--quiet", action="store_true", help="no progress bars")
    return parser


def parse_overrides(items: Sequence[str]) -> tuple[tuple[str, str, str], ...]:
    parsed = []
    for item in items:
        target, sep, value = item.partition("=")
        method, dot, field = target.partition(".")
        if not (sep and dot and method and field):
            raise UserError(f"--set {item!r}: expected METHOD.FIELD=VALUE, e.g. dc.iterations=200")
        METHODS.get(method)
        parsed.append((method, field, value))
    return tuple(parsed)


def expand_methods(names: Sequence[str]) -> list[str]:
    """``all`` stands for every method registered with ``in_all`` (Table 1's columns and plug-ins), in
    table order; other names are kept as given (``--methods all dm kcenter``), each once."""
    every = sorted((m for m in METHODS.names() if METHODS.get(m).in_all),
                   key=lambda m: (METHODS.get(m).group != "selection", METHODS.get(m).order))
    return list(dict.fromkeys(m for name in names for m in (every if name == "all" else [name])))


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Validate names and numbers and build the frozen config (no data is read here)."""
    methods = expand_methods(args.methods)
    for method in methods:
        METHODS.get(method)
    if not args.seed_list:
        try:   # before building the tuple
            check_seeds(args.seeds, force=args.force)
        except RangeError as error:
            raise UserError(f"--{error}") from None
    seeds = tuple(args.seed_list) if args.seed_list else tuple(range(args.seeds))
    evals_per_set = PROTOCOLS[args.protocol] if args.evals_per_set is None else args.evals_per_set
    if args.protocol != "suite" and evals_per_set != PROTOCOLS[args.protocol]:
        raise UserError(f"--protocol {args.protocol} retrains {PROTOCOLS[args.protocol]} models per set; "
                        f"--evals-per-set {evals_per_set} contradicts it (drop one of them)")
    given = args.eval_model if isinstance(args.eval_model, (list, tuple)) else [args.eval_model] if args.eval_model else []
    eval_models = list(dict.fromkeys(given))
    ipcs = list(dict.fromkeys(args.ipc if isinstance(args.ipc, (list, tuple)) else [args.ipc]))
    for name, value in (("--seeds", len(seeds)), ("--ipc", min(ipcs)), ("--evals-per-set", evals_per_set),
                        ("--jobs", args.jobs), ("--threads", args.threads), ("--eval-epochs", args.eval_epochs),
                        ("--pretrain-epochs", args.pretrain_epochs)):
        if value is not None and value < 1:  # 0 is an error, not "the default"
            raise UserError(f"{name} must be at least 1, got {value}")
    if args.preset != "seed" and args.preset not in preset_names():
        raise UserError(f"--preset {args.preset!r} is unknown; known: seed, {', '.join(preset_names())}")
    overrides = preset_overrides(args.preset, methods) + parse_overrides(args.overrides)
    if args.herding_features:
        overrides += (("herding", "features", args.herding_features),)
    like = args.reference_dataset or args.dataset
    pretrain_overrides = {"epochs": args.pretrain_epochs} if args.pretrain_epochs is not None else {}
    config = BenchConfig(
        data=DataConfig(args.dataset, args.data_root, args.download), model=args.model,
        eval_model=eval_models[0] if eval_models else None, eval_models=tuple(eval_models) if len(eval_models) > 1 else (),
        pretrain=PretrainRecipe.for_dataset(like, **pretrain_overrides),
        methods=tuple(dict.fromkeys(methods)), seeds=seeds, ipc=ipcs[0], ipc_grid=tuple(ipcs) if len(ipcs) > 1 else (),
        evals_per_set=evals_per_set,
        eval_recipe=args.eval_recipe, eval_epochs=args.eval_epochs, eval_precision=args.eval_precision,
        eval_soft_labels=args.eval_soft_labels,
        method_overrides=overrides,
        device=args.device, threads=args.threads, jobs=worker_count(args.jobs or 1, len(methods) * len(seeds), local=not args.scheduler),
        backend=args.backend, scheduler=args.scheduler,
        out=args.out or f"results/{args.dataset}-ipc{'-'.join(map(str, ipcs))}", cache_dir=args.cache_dir,
        reference_dataset=args.reference_dataset, preset=args.preset, scores=args.scores,
        ddrs_weight=ddrs_weight(args.ddrs_weight, args.scores, bool(args.from_dirs)), force=args.force,
        retrain_engine=args.retrain_engine)
    return check_config(config, args.jobs)


def flags_from_toml(path: str) -> tuple[list[str], str]:
    """The command-line flags a grid config file stands for, and its text (stored in ``run.json``).

    Keys are the flags' names with underscores (``dataset = "mnist"``, ``ipc = [1, 10, 50]``,
    ``seeds = 5``, ``protocol = "dc-paper"``, ``scores = true``); a ``[set]`` table gives recipe
    fields (``"dc.iterations" = 200``).  Flags given after the file on the command line come later,
    so they win (``--out``) or add (``--set``)."""
    try:
        import tomllib
    except ImportError:   # Python 3.10
        raise UserError("grid config files need Python 3.11 or later (tomllib); pass the flags instead") from None
    try:
        text = Path(path).read_text()
        table = tomllib.loads(text)
    except OSError as error:
        raise UserError(f"{path}: cannot read the config file ({error.strerror or error})") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML ({error})") from None
    known = {action.dest: action for action in build_parser()._actions}
    argv: list[str] = []
    for key, value in table.items():
        if key == "set":
            if not isinstance(value, dict):
                raise UserError(f"{path}: [set] must be a table of METHOD.FIELD = value")
            argv += [item for field, v in value.items() for item in ("--set", f"{field}={_toml_text(v)}")]
            continue
        dest = key
        if dest not in known or dest in ("help", "from_dirs", "replay", "in_place"):
            raise UserError(f"{path}: unknown key {key!r}; keys are the flags' names with underscores "
                            "(dataset, methods, ipc, seeds, ...) and a [set] table")
        flag = known[dest].option_strings[-1]
        if isinstance(value, bool):
            argv += [flag] if value else []
        elif isinstance(value, list):
            argv += [flag, *map(_toml_text, value)]
        else:
            argv += [flag, _toml_text(value)]
    return argv, text


def _toml_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def config_from_flags(**flags: Any) -> BenchConfig:
    """The configuration of the command line's flags given as keyword arguments (dashes as
    underscores: ``dataset="digits", methods=["random"], seeds=2, eval_epochs=50``); checked like
    the command line's, before any work."""
    defaults = vars(build_parser().parse_args([]))
    unknown = sorted(set(flags) - set(defaults) - {"argv"})
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(unknown)}; options are the command line's flags "
                        f"with underscores: {', '.join(sorted(k for k in defaults if not k.startswith('list_')))}")
    if isinstance(flags.get("methods"), str):
        flags["methods"] = [flags["methods"]]
    return config_from_args(argparse.Namespace(**{**defaults, **flags}))
