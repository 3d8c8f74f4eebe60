"""Turn shipped archives into folders the readers read.

``python -m dsvbench.data.prepare cifar10-jpeg SRC.tar.gz DEST`` unpacks the CIFAR-10
JPEG copy (``train/<class>/NNNN.jpg``, ``test/<class>/NNNN.jpg``) into ``DEST`` so that
``--dataset folder --data-root DEST`` reads it.  Only members of that shape are written
(no links, no absolute or ``..`` paths), into a temporary folder renamed to ``DEST`` at
the end, so an interrupted run leaves nothing half-done behind.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path, PurePosixPath

from ..registry import UserError
from .folder import IMAGE_SUFFIXES

SPLITS = ("train", "test")


def _folder_member(member: tarfile.TarInfo) -> tuple[str, str, str] | None:
    """``(split, class, file)`` of a regular file at ``{train,test}/<class>/<image>``, else None."""
    parts = PurePosixPath(member.name).parts  # "./train/x/y.jpg" -> ("train", "x", "y.jpg")
    if not member.isfile() or len(parts) != 3 or parts[0] not in SPLITS:
        return None
    _, class_name, file_name = parts
    if class_name in ("..", ".") or file_name.startswith(".") or not file_name.lower().endswith(IMAGE_SUFFIXES):
        return None
    return parts[0], class_name, file_name


def extract_image_folder(source: Path | str, dest: Path | str, per_class: int | None = None) -> dict[str, int]:
    """Unpack an image-folder tarball into ``dest``; return the number of images per split.

    ``per_class`` keeps only the first that many images of each class and split, in archive
    order (for quick tests).  An existing ``dest`` with ``train/`` and ``test/`` is left alone.
    """
    source, dest = Path(source), Path(dest)
    if (dest / "train").is_dir() and (dest / "test").is_dir():
        return {split: sum(1 for _ in (dest / split).glob("*/*")) for split in SPLITS}
    if not source.is_file():
        raise UserError(f"archive not found: {source}")
    if dest.exists() and any(dest.iterdir()):
        raise UserError(f"{dest} exists and is not a prepared image folder; remove it or pick another DEST")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    kept: Counter[tuple[str, str]] = Counter()
    try:
        with tarfile.open(source, "r:*") as archive:
            for member in archive:
                where = _folder_member(member)
                if where is None or (per_class is not None and kept[where[:2]] >= per_class):
                    continue
                target = staging.joinpath(*where)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())
                kept[where[:2]] += 1
        if not all(any(split == s for s, _ in kept) for split in SPLITS):
            raise UserError(f"{source} holds no train/<class>/<image> and test/<class>/<image> files")
        if dest.exists():
            dest.rmdir()  # empty (checked above)
        staging.rename(dest)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise UserError(f"cannot unpack {source} into {dest}: {error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {split: sum(n for (s, _), n in kept.items() if s == split) for split in SPLITS}


PREPARERS = {"cifar10-jpeg": extract_image_folder}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsvbench.data.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(PREPARERS), help="what the archive is")
    parser.add_argument("source", help="the archive, e.g. datasets/cifar10/cifar10-jpeg.tar.gz")
    parser.add_argument("dest", help="folder to create; then use --dataset folder --data-root DEST")
    parser.add_argument("--per-class", type=int, default=None, help="keep only N images per class and split")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        counts = PREPARERS[args.kind](args.source, args.dest, per_class=args.per_class)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.dest}: {counts['train']} train and {counts['test']} test images "
          f"({time.perf_counter() - start:.1f} s); use --dataset folder --data-root {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
