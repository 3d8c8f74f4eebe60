"""A small generic registry: decorator registration, lookup with "did you mean".

Modelled on timm's ``register_model`` and lm-evaluation-harness's ``Registry``:
duplicate names raise, unknown names list what is valid.
"""
from __future__ import annotations

import difflib
import fnmatch
import sys
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A mistake in the user's input: printed as one line, exit code 2, no traceback."""


def say(message: str) -> None:
    """One line to stderr, prefixed ``dsvbench:`` (what was left out, set aside, recomputed)."""
    print(f"dsvbench: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A warning line to stderr: the run goes on."""
    say(f"warning: {message}")


def first_line(error: BaseException, with_type: bool = False) -> str:
    """The first line of an exception's message (its type's name when the message is empty);
    ``with_type``: prefixed ``Type: `` as in failure records."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return f"{type(error).__name__}: {line}" if with_type and text else line


class Registry(Generic[T]):
    """Maps names to objects of one kind (models, methods, datasets, recipes)."""

    def __init__(self, kind: str, loader: Callable[[], None] | None = None):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._loader = loader   # called once, before the first lookup: imports the modules that register

    def set_loader(self, loader: Callable[[], None]) -> None:
        self._loader = loader

    def _load(self) -> None:
        loader, self._loader = self._loader, None
        if loader is not None:
            loader()

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def discard(self, name: str) -> None:
        """Forget ``name`` (an entry registered for one call, such as an evaluated column)."""
        self._entries.pop(name, None)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        self._load()
        if name not in self._entries:
            raise UserError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; known: {', '.join(self.names())}"

    def names(self, pattern: str = "*") -> list[str]:
        self._load()
        return [n for n in self._entries if fnmatch.fnmatch(n, pattern)]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(self._entries)

    def __len__(self) -> int:
        self._load()
        return len(self._entries)
