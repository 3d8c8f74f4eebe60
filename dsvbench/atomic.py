"""Atomic file writes (a temporary file beside the target, then ``os.replace``) and their
counterpart, checked reads of cache files: ``weights_only`` loads that turn an unsafe,
truncated or malformed file into one line on stderr and a rebuild, never a traceback.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import torch

from .registry import say


def read_json_object(path: Path | str) -> dict[str, Any] | None:
    """The JSON object stored in ``path``; None when the file is missing, unreadable, not JSON or
    not an object (callers say so in their own words, or treat it as absent)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


_ROOTS: list[Path] = []   # where writes may land (``confined``); empty = anywhere


class EscapesRoots(OSError):
    """A write whose folder resolves outside ``--out`` and ``--cache-dir`` (a symlinked folder)."""


@contextmanager
def confined(*roots: Path | str) -> Iterator[None]:
    """Inside the block, :func:`_atomic_write` writes only under ``roots`` (resolved now): a folder
    inside them that is a symlink to elsewhere cannot redirect a run's outputs.  Restored after."""
    saved = list(_ROOTS)
    _ROOTS[:] = [Path(root).expanduser().resolve() for root in roots]
    try:
        yield
    finally:
        _ROOTS[:] = saved


def _check_inside(folder: Path) -> None:
    if not _ROOTS:
        return
    real = folder.resolve()
    if not any(real == root or root in real.parents for root in _ROOTS):
        raise EscapesRoots(f"refusing to write into {folder}: it resolves to {real}, outside --out and "
                           f"--cache-dir ({', '.join(map(str, _ROOTS))}); a symlinked folder?")


def _atomic_write(path: Path | str, write) -> Path:
    """Write ``path`` through a uniquely named temporary file created beside it (``mkstemp``:
    O_CREAT|O_EXCL, so a planted link at the temporary name is never followed), then
    ``os.replace`` — which replaces a symlink at ``path`` itself instead of writing through it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _check_inside(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except OSError as error:   # a full disk, an I/O error: name the file the run was writing
        Path(tmp).unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    return _atomic_write(path, lambda handle: handle.write(text.encode()))


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    return _atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: Path | str) -> Path:
    return _atomic_write(path, lambda handle: torch.save(obj, handle))


T = TypeVar("T")


class CacheMismatch(Exception):
    """Raised by a :func:`load_cache_file` ``use`` when a readable file does not hold what it should."""


def check_claims(stored: Any, claims: dict[str, Any], what: str) -> None:
    """Raise :class:`CacheMismatch` unless a cache file's stored claims are ``claims``, naming each
    field that differs ("belongs to another <what>: field=stored (expected …)")."""
    if stored == claims:
        return
    differing = (", ".join(f"{k}={stored.get(k)!r} (expected {v!r})" for k, v in claims.items()
                           if stored.get(k) != v) if isinstance(stored, dict) else "no claims (older format)")
    raise CacheMismatch(f"belongs to another {what}: {differing}")


def load_cache_file(path: Path | str, use: Callable[[Any], T], what: str, action: str = "building it again",
                    map_location: Any = "cpu") -> T | None:
    """``use(torch.load(path, weights_only=True))``, or None after one line on stderr naming the file.

    ``weights_only=True`` unpickles tensors and plain containers only, so a file planted under a
    cache's exact name cannot run code; ``use`` turns the state into what the caller needs and
    any error it raises (a missing key, a wrong shape) marks the file as malformed.
    """
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - refused global, truncated zip, garbage bytes, unreadable file
        refused = re.search(r"GLOBAL ([\w.]+)", str(error)) if isinstance(error, pickle.UnpicklingError) else None
        reason = (f"asks for {refused.group(1)}, which no cache file holds (refused, nothing in it was run)"
                  if refused else f"is not a readable torch file: truncated or garbage ({_first_line(error)})")
    else:
        try:
            return use(state)
        except CacheMismatch as error:
            reason = str(error)
        except Exception as error:  # noqa: BLE001 - a cache file is only ever a cache: rebuild it
            reason = f"is malformed ({_first_line(error)})"
    say(f"{what} {path} {reason}; {action}")
    return None


# torch's weights_only explanation around the one line that says what was wrong
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def _first_line(error: BaseException) -> str:
    """The first informative line of ``error``, shortened: the reason printed for a bad cache file."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if not line.startswith(_BOILERPLATE)), "").split(". ")[0]
    text = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
    return text if len(text) <= 160 else text[:157] + "..."
