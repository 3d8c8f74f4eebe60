"""Declared ranges of recipe fields and numeric flags, checked before any work.

A recipe dataclass declares ``RANGES: ClassVar[dict[str, Range]]`` for its numeric fields;
fields it does not list get the defaults: a float must be finite, an int at least 0.  A
learning rate is ``POSITIVE``, a momentum or an Adam beta ``UNIT`` ([0, 1)), a count of steps
``count(1)``.  Counts have an upper bound of what one machine can run or hold; past it the
message says so and ``--force`` lets a user who means it go on.  :func:`check_recipe` runs on
every recipe the moment it is built from defaults and ``--set`` values (``MethodSpec.make_recipe``),
so a new method's fields are checked for free, and a value that cannot run is one line and
exit 2 before any data is read.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

# Work bounds past which a value is refused unless --force: far above any published budget.
MAX_STEPS = 10_000_000        # iterations / steps / epochs of one build
MAX_SIZE = 1_000_000          # batch sizes, chunk sizes, candidates, history points
MAX_SEEDS = 10_000
MAX_EVALS_PER_SET = 1_000
MAX_PRETRAIN_EPOCHS = 10_000  # θ* records its training dynamics: epochs × training images bytes
SEED_LIMIT = 2 ** 63          # torch.Generator.manual_seed takes a signed 64-bit value


class RangeError(ValueError):
    """A value outside its declared range (the message names the value and the range)."""


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None
    low_open: bool = False        # low < value (else low <= value)
    high_open: bool = False       # value < high (else value <= high)
    what: str = ""                # shown in the message ("a learning rate")
    work_bound: float | None = None   # above it: refused unless --force (what the machine can run or hold)

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "finite"

    def check(self, value: Any, where: str, force: bool = False) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        what = f" ({self.what})" if self.what else ""
        if isinstance(value, float) and not math.isfinite(value):
            raise RangeError(f"{where}={value}: must be finite{what}")
        low_bad = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        high_bad = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if low_bad or high_bad:
            raise RangeError(f"{where}={_show(value)}: must be {self.describe()}{what}")
        if self.work_bound is not None and value > self.work_bound and not force:
            raise RangeError(f"{where}={_show(value)} is more than this suite runs or holds on one machine "
                             f"(bound {_show(self.work_bound)}); pass --force if you mean it")


def _show(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


POSITIVE = Range(0.0, low_open=True, what="a learning rate or scale: finite and > 0")
NON_NEGATIVE = Range(0.0)
UNIT = Range(0.0, 1.0, high_open=True, what="a momentum / beta: in [0, 1)")
FRACTION = Range(0.0, 1.0)
DECAY = Range(0.0, 1.0, low_open=True, what="a decay factor: in (0, 1]")
SEED = Range(0, SEED_LIMIT, high_open=True, what="the random generator's range")


def count(low: int = 1, bound: float = MAX_STEPS) -> Range:
    """An integer count of at least ``low``, with a work bound (``--force`` past it)."""
    return Range(low, work_bound=bound)


def _default_range(field: dataclasses.Field) -> Range | None:
    kind = str(getattr(field.type, "__name__", field.type)).replace(" ", "")
    if kind.startswith("bool"):
        return None
    if kind.startswith("int"):
        return count(0)
    if kind.startswith("float"):
        return Range()
    return None


def check_recipe(recipe: Any, prefix: str, force: bool = False) -> None:
    """Every numeric field of ``recipe`` against its declared range (``RANGES``) or the default
    (finite floats, non-negative ints).  Raises :class:`RangeError` naming ``prefix.field``."""
    declared: dict[str, Range] = getattr(type(recipe), "RANGES", {})
    for field in dataclasses.fields(recipe):
        rule = declared.get(field.name) or _default_range(field)
        if rule is not None:
            rule.check(getattr(recipe, field.name), f"{prefix}.{field.name}", force)


def check_seeds(count_: int, seeds: tuple[int, ...] = (), force: bool = False) -> None:
    """``count_`` seeds at most ``MAX_SEEDS`` (unless ``force``; checked before a ``--seeds N`` tuple
    is built), each of ``seeds`` in the generator's range."""
    Range(work_bound=MAX_SEEDS).check(count_, "seeds", force)   # at least one: the callers' own messages
    for seed in seeds:
        if not 0 <= seed < SEED_LIMIT:
            raise RangeError(f"seed {seed}: must be in [0, 2^63) ({SEED.what})")


# ----- typed configurations: every field of a (nested) dataclass against its annotation --------
def check_types(obj: Any, where: str) -> None:
    """Every field of the dataclass ``obj`` (nested ones too) has its annotated type: ``int`` (not
    bool), ``float`` (an int is accepted), ``str``, ``bool``, ``X | None``, ``tuple[X, ...]``,
    ``tuple[tuple[str, str, str], ...]``.  Raises :class:`RangeError` naming ``where.field`` —
    what a hand-edited ``run.json`` gets instead of a traceback halfway through a run."""
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        name = f"{where}.{field.name}"
        if dataclasses.is_dataclass(value):
            check_types(value, name)
        elif not _has_type(value, str(field.type).replace(" ", "")):
            raise RangeError(f"{name}={value!r}: expected {field.type}")


def _has_type(value: Any, annotation: str) -> bool:
    if annotation.endswith("|None"):
        return value is None or _has_type(value, annotation[:-5])
    if annotation.startswith("tuple[") and annotation.endswith(",...]"):
        inner = annotation[len("tuple["):-len(",...]")]
        return isinstance(value, tuple) and all(_has_type(v, inner) for v in value)
    if annotation.startswith("tuple[") and annotation.endswith("]"):
        parts = annotation[len("tuple["):-1].split(",")
        return isinstance(value, tuple) and len(value) == len(parts) and all(
            _has_type(v, p) for v, p in zip(value, parts))
    simple = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "str": lambda v: isinstance(v, str), "bool": lambda v: isinstance(v, bool)}
    check = simple.get(annotation)
    return True if check is None else check(value)   # other annotations: left to their own checks


def check_bench_config(config: Any) -> None:
    """Types and ranges of a whole :class:`~dsvbench.config.BenchConfig` (flags or ``--replay``):
    raises :class:`RangeError` with one line naming the field."""
    check_types(config, "config")
    if not config.methods:
        raise RangeError("config.methods is empty: name at least one method")
    if not config.seeds:
        raise RangeError("config.seeds is empty: give at least one seed")
    check_seeds(len(config.seeds), config.seeds, config.force)
    check_recipe(config, "config", config.force)
    check_recipe(config.pretrain, "config.pretrain", config.force)
