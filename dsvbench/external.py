"""``dsvbench evaluate SET ... --dataset D``: score condensed sets made elsewhere under the suite's
protocols, with the same seeding, records, tables, figures and report as a run.

A SET is a ``.pt`` file (a dict with ``images`` and ``labels``, or an ``(images, labels)`` pair; read
with ``weights_only=True``: no pickle is executed), an ``.npz`` file (``images`` / ``labels``, or
``x`` / ``y``; read with ``allow_pickle=False``), a folder of ``<class>/*.png`` (class folders named
by the dataset's class names or by class index), or a folder written by a dsvbench run (its
``sets/<method>-seed<s>.pt``, with ``--method``).  Several SETs are the sets of seeds 0, 1, …; one
SET is every seed's set.  Images must have the dataset's shape; their pixel values are read as
normalized with the dataset's mean and std, as 0–1 or as 0–255 values (``--scale``, detected by
default and said in the output).  Every check is a one-line error and exit code 2 before any work.

The sets become one column (``--name``) of a run: a method registered in this process only, whose
build returns the set of its seed, checked and normalized once into ``<cache-dir>/evaluated/``; its
recipe holds those files and the sources' sha256 (part of the set key).  ``random`` is retrained beside it under the same recipe, so the IOR row is defined.
Evaluating the sets a run wrote, with that run's seeds and recipe, gives exactly its accuracies (tested).
"""
from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path
from contextlib import contextmanager
from typing import ClassVar, Iterator

import numpy as np
import torch

from .atomic import atomic_torch_save
from .config import EVAL_RECIPES, RETRAIN_ENGINES
from .data import ImageDataset
from .data.folder import IMAGE_SUFFIXES, class_images, file_sha256, open_image
from .methods import METHODS, BuildContext, CondensedSet, register_method
from .registry import UserError

SCALES = ("auto", "normalized", "unit", "byte")


@dataclass(frozen=True)
class ExternalRecipe:
    """The files of an evaluated column (one per seed, or one for every seed), their sha256 and how
    their pixel values are read.  Not a method's hyper-parameters: ``dsvbench evaluate`` fills it."""
    EXTERNAL: ClassVar[bool] = True
    files: tuple[str, ...] = ()
    sha256: tuple[str, ...] = ()
    scale: str = "auto"


@dataclass
class LoadedSet:
    images: torch.Tensor      # normalized like the dataset
    labels: torch.Tensor
    scale: str                # how the values were read
    path: str
    soft_labels: torch.Tensor | None = None   # N×classes, when the file has them
    lr: float | None = None                   # a learned learning rate, when the file has one


def file_digest(path: Path) -> str:
    """sha256 over a file's, or a folder's files', names and contents (:func:`.data.folder.file_sha256`)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()[:16]


EXTRAS = ("soft_labels", "lr")   # optional arrays of a .pt / .npz set: N×classes soft labels, a learned rate


def read_arrays(path: Path, dataset: ImageDataset) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(images N×C×H×W or N×H×W×C, labels N, the optional :data:`EXTRAS` it holds) from a .pt, an .npz
    or an image folder, without pickle."""
    if path.is_dir():
        return (*_read_folder(path, dataset), {})
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                keys = set(archive.files)
                pair = next(((a, b) for a, b in (("images", "labels"), ("x", "y")) if {a, b} <= keys), None)
                if pair is None:
                    raise UserError(f"{path}: an .npz with 'images' and 'labels' (or 'x' and 'y') arrays is "
                                    f"needed; it holds {', '.join(sorted(keys)) or 'nothing'}")
                return archive[pair[0]], archive[pair[1]], {k: np.asarray(archive[k]) for k in EXTRAS
                                                             if k in archive.files}
        except ValueError as error:   # object arrays would need pickle
            raise UserError(f"{path}: not a plain .npz ({error}); save numeric arrays only") from None
    if path.suffix == ".pt":
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - unpickling refused or a damaged file: one line
            raise UserError(f"{path}: cannot be read as tensors without executing pickle "
                            f"({type(error).__name__}); save a dict of tensors with torch.save") from None
        extras = {}
        if isinstance(state, dict) and "images" in state and "labels" in state:
            images, labels = state["images"], state["labels"]
            extras = {k: np.asarray(state[k].numpy() if torch.is_tensor(state[k]) else state[k])
                      for k in EXTRAS if k in state}
        elif isinstance(state, (tuple, list)) and len(state) == 2:
            images, labels = state
        else:
            raise UserError(f"{path}: a dict with 'images' and 'labels' tensors (or an (images, labels) pair) "
                            "is needed")
        if not (torch.is_tensor(images) and torch.is_tensor(labels)):
            raise UserError(f"{path}: 'images' and 'labels' must be tensors")
        return images.numpy(), labels.numpy(), extras
    raise UserError(f"{path}: a set is a .pt or .npz file or a folder of <class>/*.png (got {path.suffix or 'no suffix'})")


def _read_folder(path: Path, dataset: ImageDataset) -> tuple[np.ndarray, np.ndarray]:
    """<class>/ folders' images (the dataset reader's listing and decoding), converted to its channels."""
    names = {name: index for index, name in enumerate(dataset.class_names)}
    mode = "L" if dataset.shape.channels == 1 else "RGB"
    images, labels = [], []
    for folder in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        label = names.get(folder.name, int(folder.name) if folder.name.isdigit() else None)
        if label is None:
            raise UserError(f"{folder}: not a class of {dataset.name} (class folders are named "
                            f"{', '.join(dataset.class_names[:3])}, … or 0 … {dataset.num_classes - 1})")
        for entry in class_images(folder):
            with open_image(Path(entry.path)) as image:
                images.append(np.asarray(image.convert(mode), dtype=np.uint8))
                labels.append(label)
    if not images:
        raise UserError(f"{path}: no images in <class>/ folders ({', '.join(IMAGE_SUFFIXES)})")
    return np.stack(images), np.asarray(labels)


def load_set(path: Path, dataset: ImageDataset, scale: str = "auto") -> LoadedSet:
    """A set checked against ``dataset`` and normalized like it (see the module docstring)."""
    images, labels, extras = read_arrays(path, dataset)
    shape = dataset.shape
    expected = (shape.channels, shape.size, shape.size)
    if images.ndim == 3 and shape.channels == 1:
        images = images[:, None]
    if images.ndim == 4 and images.shape[1:] != expected and images.shape[1:] == (shape.size, shape.size, shape.channels):
        images = images.transpose(0, 3, 1, 2)   # N×H×W×C, as image files are
    if images.ndim != 4 or images.shape[1:] != expected:
        raise UserError(f"{path}: images of shape {tuple(images.shape)}; {dataset.name} needs N×"
                        f"{'×'.join(map(str, expected))} (or N×{shape.size}×{shape.size}×{shape.channels})")
    if labels.ndim != 1 or len(labels) != len(images):
        raise UserError(f"{path}: {len(images)} images but labels of shape {tuple(labels.shape)}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not (np.issubdtype(labels.dtype, np.floating) and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))):
            raise UserError(f"{path}: labels must be integers (got {labels.dtype})")
    labels = labels.astype(np.int64)
    if len(labels) == 0 or labels.min() < 0 or labels.max() >= dataset.num_classes:
        raise UserError(f"{path}: labels must lie in 0 … {dataset.num_classes - 1} ({dataset.name}); "
                        f"got {labels.min() if len(labels) else 'none'} … {labels.max() if len(labels) else ''}")
    counts = np.bincount(labels, minlength=dataset.num_classes)
    if counts.min() != counts.max():
        raise UserError(f"{path}: images per class differ ({counts.min()} … {counts.max()}); a set has the same "
                        "number for every class (it fixes the IPC)")
    values = images.astype(np.float32) if images.dtype != np.float32 else images
    if not np.all(np.isfinite(values)):
        raise UserError(f"{path}: images hold NaN or inf")
    how = scale if scale != "auto" else _detect_scale(images)
    tensor = torch.from_numpy(np.ascontiguousarray(values)).float()
    if how == "byte":
        tensor = tensor / 255.0
    if how in ("byte", "unit"):
        mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
        std = torch.tensor(dataset.std).view(1, -1, 1, 1)
        tensor = (tensor - mean) / std
    order = torch.from_numpy(np.argsort(labels, kind="stable"))   # class-major, as the suite's sets
    soft, lr = extras.get("soft_labels"), extras.get("lr")
    if soft is not None and (soft.shape != (len(labels), dataset.num_classes) or not np.all(np.isfinite(soft))):
        raise UserError(f"{path}: soft_labels of shape {tuple(soft.shape)}; {len(labels)}×{dataset.num_classes} "
                        "finite values are needed")
    if lr is not None and (lr.size != 1 or not np.isfinite(lr).all() or float(lr.reshape(-1)[0]) <= 0):
        raise UserError(f"{path}: lr must be one positive number (a learned learning rate)")
    return LoadedSet(tensor[order].contiguous(), torch.from_numpy(labels)[order], how, str(path),
                     None if soft is None else torch.from_numpy(soft.astype(np.float32))[order].contiguous(),
                     None if lr is None else float(lr.reshape(-1)[0]))


def _detect_scale(images: np.ndarray) -> str:
    """byte: uint8, or integer values in 0 … 255 beyond 1; unit: every value in [0, 1]; else normalized."""
    if images.dtype == np.uint8:
        return "byte"
    low, high = float(images.min()), float(images.max())
    if low >= 0 and high <= 255 and high > 1.5 and np.all(images == np.round(images)):
        return "byte"
    if low >= 0 and high <= 1:
        return "unit"
    return "normalized"


SCALE_WORDS = {"byte": "0–255 pixel values, normalized with the dataset's mean and std",
               "unit": "0–1 pixel values, normalized with the dataset's mean and std",
               "normalized": "already normalized with the dataset's mean and std (used as is)"}


def build_external(ctx: BuildContext, recipe: ExternalRecipe) -> CondensedSet:
    """The evaluated set of this seed (seed i: set i; one set: every seed), as ``dsvbench evaluate``
    converted it (checked and normalized, in the cache), verified against its source's sha256."""
    seed = ctx.generator.initial_seed()
    index = seed if len(recipe.files) > 1 else 0
    if index >= len(recipe.files):
        raise UserError(f"seed {seed} has no set: {len(recipe.files)} sets were given")
    state = torch.load(recipe.files[index], map_location="cpu", weights_only=True)
    if state.get("sha256") != recipe.sha256[index]:
        raise UserError(f"{recipe.files[index]} is not the converted set of sha256 {recipe.sha256[index]}")
    soft, lr = state.get("soft_labels"), state.get("lr")
    return CondensedSet(state["images"].to(ctx.device), state["labels"].to(ctx.device),
                        metadata={"source": state["source"], "sha256": state["sha256"], "read_as": state["read_as"]},
                        soft_labels=None if soft is None else soft.to(ctx.device), lr=None if lr is None else float(lr))


def register_column(name: str, group: str) -> None:
    """Register the evaluated column in this process (evaluation runs in one process: ``--jobs 1``)."""
    if name in METHODS and not is_external(name):
        raise UserError(f"--name {name!r} is a registered method; choose another column name")
    METHODS.discard(name)   # an earlier evaluation's column of that name in this process
    register_method(name, table_name=name, group=group, recipe=ExternalRecipe, eval_recipe="dc",
                    order=0)(build_external)


def build_evaluate_parser() -> argparse.ArgumentParser:
    from .options import OneLineParser
    parser = OneLineParser(prog="dsvbench evaluate", description="Score condensed sets made elsewhere under "
                           "the suite's protocols (records, tables, figures and report as a run).")
    add = parser.add_argument
    add("sets", nargs="+", metavar="SET", help=".pt / .npz file, folder of <class>/*.png, or a dsvbench run "
        "folder (with --method); several: the sets of seeds 0, 1, …")
    add("--dataset", required=True, help="the dataset the sets condense (its test split scores them)")
    add("--data-root", default="data")
    add("--name", default="external", help="the column's name in the tables (default external)")
    add("--group", choices=["selection", "synthesis"], default="synthesis")
    add("--method", help="with a dsvbench run folder: whose sets (sets/<method>-seed<s>.pt) to evaluate")
    add("--scale", choices=SCALES, default="auto", help="how pixel values are read (default: detected, and said)")
    add("--eval-recipe", choices=EVAL_RECIPES, default="dc", help="retraining recipe of the column and of "
        "random (default dc)")
    add("--eval-model", help="architecture retrained on the sets (default the dataset's convnet)")
    add("--eval-epochs", type=int, help="retraining epochs (reduced budget; said in every output)")
    add("--soft-labels", action="store_true", help="retrain on the sets' soft_labels (cross-entropy against each "
        "image's label distribution, as DD-Ranking does); the files must hold a soft_labels array")
    add("--seeds", type=int, help="with one SET: retrain it for seeds 0 … N-1 (default 1)")
    add("--evals-per-set", type=int, default=1, help="fresh networks per set (the DC paper: 20)")
    add("--no-random", action="store_true", help="do not retrain random beside it (no IOR row)")
    add("--scores", action="store_true", help="also HLR and DDRS (trains on the whole training set)")
    add("--out", help="output folder (default results/evaluate-<name>)")
    add("--cache-dir", default=".dsvbench_cache")
    add("--threads", type=int)
    add("--retrain-engine", choices=RETRAIN_ENGINES, default="auto", help="stacked, plain or auto (default): as the "
        "run's flag (plain on the CPU from 1 MiB of activations per image)")
    add("--quiet", action="store_true")
    return parser


def evaluate_argv(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(the run's flags, the lines said about the sets) for ``dsvbench evaluate``'s arguments;
    every set is read and checked here, before any work."""
    from .config import DataConfig
    from .data import load_dataset
    files = _set_files(args)
    dataset = load_dataset(DataConfig(args.dataset, args.data_root), args.cache_dir)
    loaded = [load_set(Path(f), dataset, args.scale) for f in files]
    ipcs = {len(s.labels) // dataset.num_classes for s in loaded}
    if len(ipcs) != 1:
        raise UserError(f"the sets hold different images per class ({', '.join(map(str, sorted(ipcs)))}); "
                        "one column has one IPC")
    ipc = ipcs.pop()
    seeds = list(range(len(files))) if len(files) > 1 else list(range(args.seeds or 1))
    if len(files) > 1 and args.seeds is not None and args.seeds != len(files):
        raise UserError(f"--seeds {args.seeds} with {len(files)} sets: several sets are the sets of seeds "
                        f"0 … {len(files) - 1}")
    register_column(args.name, args.group)
    digests = [file_digest(Path(f)) for f in files]
    converted = []
    for loaded_set, digest in zip(loaded, digests):   # checked and normalized once, kept in the cache
        target = Path(args.cache_dir) / "evaluated" / f"{digest}-{loaded_set.scale}.pt"
        atomic_torch_save({"images": loaded_set.images, "labels": loaded_set.labels, "source": loaded_set.path,
                           "sha256": digest, "read_as": loaded_set.scale,
                           **({"soft_labels": loaded_set.soft_labels} if loaded_set.soft_labels is not None else {}),
                           **({"lr": loaded_set.lr} if loaded_set.lr is not None else {})}, target)
        converted.append(str(target.resolve()))
    argv = ["--dataset", args.dataset, "--data-root", args.data_root,
            "--methods", args.name, *([] if args.no_random else ["random"]),
            "--seed-list", *map(str, seeds), "--ipc", str(ipc), "--evals-per-set", str(args.evals_per_set),
            "--eval-recipe", args.eval_recipe, "--jobs", "1", "--cache-dir", args.cache_dir,
            "--out", args.out or f"results/evaluate-{args.name}",
            "--set", f"{args.name}.files={','.join(converted)}",
            "--set", f"{args.name}.sha256={','.join(digests)}", "--set", f"{args.name}.scale={loaded[0].scale}"]
    for flag, value in (("--eval-model", args.eval_model), ("--eval-epochs", args.eval_epochs),
                        ("--threads", args.threads), ("--retrain-engine", args.retrain_engine)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--scores"] if args.scores else []
    argv += ["--quiet"] if args.quiet else []
    argv += ["--eval-soft-labels"] if args.soft_labels else []
    if args.soft_labels and any(s.soft_labels is None for s in loaded):
        raise UserError("--soft-labels: " + ", ".join(s.path for s in loaded if s.soft_labels is None)
                        + " holds no soft_labels array")
    said = [f"{s.path}: {len(s.labels)} images ({ipc} per class), read as {SCALE_WORDS[s.scale]}"
            + (", with soft labels" if s.soft_labels is not None else "")
            + (f", with a learned learning rate {s.lr:g} (used by --eval-recipe mtt)" if s.lr is not None else "")
            for s in loaded]
    return argv, said


@contextmanager
def evaluation(args: argparse.Namespace) -> Iterator[tuple[list[str], list[str]]]:
    """:func:`evaluate_argv`'s (run flags, lines said), with the evaluated column registered for the
    block only (also when the sets fail their checks): nothing of it stays in the registry."""
    try:
        yield evaluate_argv(args)
    finally:
        if is_external(args.name):
            METHODS.discard(args.name)


def _set_files(args: argparse.Namespace) -> list[str]:
    files: list[str] = []
    for given in args.sets:
        path = Path(given)
        if not path.exists():
            raise UserError(f"{given}: no such file or folder")
        if path.is_dir() and (path / "sets").is_dir() and (path / "records").is_dir():
            if not args.method:
                raise UserError(f"{given} is a dsvbench run: name the column to evaluate with --method")
            found = sorted((path / "sets").glob(f"{args.method}-seed*.pt"),
                           key=lambda p: int(p.stem.rsplit("seed", 1)[1]))
            if not found:
                raise UserError(f"{given}: no sets/{args.method}-seed*.pt there")
            seeds = [int(p.stem.rsplit("seed", 1)[1]) for p in found]
            if seeds != list(range(len(seeds))):
                raise UserError(f"{given}: the sets of {args.method} are seeds {seeds}; seeds 0 … N-1 are needed")
            files += [str(p) for p in found]
        else:
            files.append(str(path))
    for file in files:
        if "," in file:
            raise UserError(f"{file}: a set's path may not contain a comma")
    return files


def is_external(method: str) -> bool:
    """Whether ``method`` is a column of evaluated sets (``dsvbench evaluate``), not a method."""
    return method in METHODS and getattr(METHODS.get(method).recipe, "EXTERNAL", False)
