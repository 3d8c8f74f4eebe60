"""What a column's records changed from the published budgets and recipes, read from the records
themselves (so a re-rendered or merged run is marked as the run that made it was).

Every table cell whose column deviates gets a mark (``[a]``, ``$^{a}$`` in LaTeX), and a line per
mark says what changed: a method recipe field away from its default for the dataset, a retraining
recipe other than the one the method's figure was published with, or one of its fields (epochs,
augmentation, precision, ...) away from that recipe's default, and a θ* trained to a changed recipe.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from .config import EVAL_RECIPES, eval_recipe, to_dict
from .methods import METHODS
from .registry import UserError

MARKS = "abcdefghijklmnopqrstuvwxyz"
PRETRAIN_NOTE = "CHANGED PRETRAINING"


def deviations(record: dict[str, Any], dataset: str, notes: list[str] = ()) -> list[str]:
    """Each way ``record``'s column deviates from the published defaults for ``dataset``, as
    ``"what=value (default value)"`` texts; empty when it follows them (or the method is unknown here:
    a plug-in that is not installed, a set evaluated from outside)."""
    method = record.get("method")
    try:
        spec = METHODS.get(method)
    except UserError:
        return []
    changes, external = [], getattr(spec.recipe, "EXTERNAL", False)   # sets evaluated from outside
    try:
        defaults = {} if external else to_dict(spec.make_recipe(dataset))
    except (UserError, ValueError, TypeError):
        defaults = {}
    for field, default in defaults.items():
        value = record.get(f"recipe.{field}")
        if _present(value) and not _same(value, default):
            changes.append(f"{method}.{field}={_show(value)} (default {_show(default)})")
    published = None if external else _published_eval_name(spec, record, dataset)
    name = record.get("eval.name")
    if name in EVAL_RECIPES:
        if published is not None and name != published:
            changes.append(f"retrained with {name} (published: {published})")
        model = record.get("eval_model") if _present(record.get("eval_model")) else None
        defaults = eval_recipe(name, dataset, model)   # every field, those left out of keys at their default too
        for field, default in ((f.name, getattr(defaults, f.name)) for f in dataclasses.fields(defaults)):
            value = record.get(f"eval.{field}")
            if field != "name" and _present(value) and not _same(value, default):
                changes.append(f"retraining {field}={_show(value)} (default {_show(default)})")
    needs = str(record.get("needs") or "")
    if ("model" in needs or "dynamics" in needs) and any(str(n).startswith(PRETRAIN_NOTE) for n in notes):
        changes.append("θ* pretrained with a changed recipe (see the notes)")
    return changes


def _published_eval_name(spec: Any, record: dict[str, Any], dataset: str) -> str | None:
    """The recipe the column's published figure was retrained with, given its recorded recipe
    (a recipe may name it: DC with ``dsa=True`` is retrained as DSA was)."""
    fields = {f.name: f for f in dataclasses.fields(spec.recipe)}
    values = {k: record[f"recipe.{k}"] for k in fields if _present(record.get(f"recipe.{k}"))}
    try:
        recipe = spec.recipe(**{k: _typed(v, fields[k].type) for k, v in values.items()})
    except (UserError, ValueError, TypeError):
        try:
            recipe = spec.make_recipe(dataset)
        except (UserError, ValueError, TypeError):
            return None
    return spec.retraining(recipe)


def _typed(value: Any, annotation: Any) -> Any:
    """A value read back from a CSV (256.0, 'True') in its field's type."""
    kind = str(getattr(annotation, "__name__", annotation))
    if kind.startswith("bool") and isinstance(value, str):
        return value.lower() in ("true", "1")
    if kind.startswith("int") and isinstance(value, float) and value.is_integer():
        return int(value)
    if kind.startswith("tuple") and isinstance(value, list):
        return tuple(value)
    return value


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return str(value).lower() == str(default).lower()
    if isinstance(default, (int, float)) and isinstance(value, (int, float)):
        return math.isclose(float(value), float(default), rel_tol=1e-12, abs_tol=0.0)
    if isinstance(default, (list, tuple)):
        return str(list(default)) == str(value) or list(default) == list(value if isinstance(value, (list, tuple)) else [value])
    return str(value) == str(default)


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def mark_columns(columns: list[tuple[str, list[str]]]) -> dict[str, str]:
    """column → mark (a, b, ...) for the columns with changes, in table order."""
    marked = [column for column, changes in columns if changes]
    return {column: MARKS[i % len(MARKS)] + ("" if i < len(MARKS) else str(i // len(MARKS)))
            for i, column in enumerate(marked)}
