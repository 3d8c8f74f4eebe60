"""Records on disk: reading and checking them (a damaged record neither counts as finished nor
crashes a table), the records a run's table shows, merging several runs' records, setting aside
the unreadable ones, failure records, and the columns records fall into (with the notes that say
why a method is split).  Rendering them is :mod:`.results`."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .atomic import read_json_object
from .config import canonical_json
from .ranges import SEED_LIMIT
from .registry import say


# What the table and the resume check read from every record; a file lacking one is unreadable.
RECORD_FIELDS = {"method": str, "table_name": str, "group": str, "order": (int, float), "seed": int,
                 "eval_index": int, "test_accuracy": (int, float), "dataset": str, "ipc": int,
                 "build_seconds": (int, float), "retrain_seconds": (int, float), "eval.name": str,
                 "eval.epochs": (int, float), "peak_memory_mb": (int, float), "needs": str, "eval_model": str}


# Values a finished record can hold (finite, within these bounds); anything else is a damaged record.
RECORD_RANGES = (("test_accuracy", 0.0, 100.0), ("seed", 0, SEED_LIMIT - 1), ("eval_index", 0, 10 ** 6),
                 ("ipc", 1, 10 ** 7), ("eval.epochs", 1, 10 ** 9), ("order", -10 ** 9, 10 ** 9))


def _read_record(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(the record, "") or (None, what is wrong with the file)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None, "not JSON"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    for name, kind in RECORD_FIELDS.items():
        if not isinstance(record.get(name), kind) or isinstance(record.get(name), bool):
            return None, f"{'missing' if name not in record else 'malformed'} field {name!r}"
    for name, low, high in RECORD_RANGES:
        value = record[name]
        if not (math.isfinite(value) and low <= value <= high):
            return None, f"field {name!r} = {value!r} out of range [{low:g}, {high:g}]"
    return record, ""


def load_records(out: Path | str) -> list[dict[str, Any]]:
    """Every readable finished record under ``<out>/records`` (failures excluded); each unreadable
    one is skipped with one line on stderr naming it and what is wrong."""
    records = []
    for path in sorted((Path(out) / "records").glob("*.json")):
        record, problem = _read_record(path)
        if record is None:
            say(f"record {path} is unreadable ({problem}); left out of the table")
        else:
            records.append(record)
    return records


def select_records(records: list[dict[str, Any]], wanted: dict[tuple[str, int, int, str], tuple[str, dict[str, Any]]],
                   evals_per_set: int) -> list[dict[str, Any]]:
    """Only the records of one run: ``wanted`` maps (method, seed, ipc, retrained architecture) to the (set key, evaluation
    recipe) its records carry (``Plan.record_keys``), and eval indices stop at ``evals_per_set``.

    A record left in ``--out`` by an earlier command with another recipe (``--set``, a changed
    default, another θ*, IPC or method version) has another set key or evaluation recipe and stays out.
    """
    wanted = {key: (set_key, canonical_json(evaluation)) for key, (set_key, evaluation) in wanted.items()}
    return [r for r in records if r["eval_index"] < evals_per_set
            and wanted.get((r["method"], r["seed"], r["ipc"], r.get("eval_model"))) == (r.get("set_key"),
                                                                                     canonical_json(_prefixed(r, "eval.")))]


def merge_runs(folders: list[Path | str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of several runs for one table, each retrained model counted once
    (:func:`record_identity`), and one line per folder saying what was left out of it."""
    records, seen, left_out = [], set(), []
    for folder in folders:
        files = sum(1 for _ in (Path(folder) / "records").glob("*.json"))
        loaded = load_records(folder)                   # one line per unreadable record
        duplicates = 0
        for record in loaded:
            identity = record_identity(record)
            duplicates += identity in seen
            if identity not in seen:
                seen.add(identity)
                records.append(record)
        if files > len(loaded):
            left_out.append(f"--from {folder}: {files - len(loaded)} unreadable record(s) left out (named above)")
        if duplicates:
            left_out.append(f"--from {folder}: {duplicates} record(s) left out, already read from an earlier "
                            "folder (same method, seed, eval, set key and recipes: counted once)")
    return records, left_out


def column_fields(record: dict[str, Any]) -> dict[str, Any]:
    """What two records of a method must share to be averaged in one cell: the method's code
    version and recipe, the evaluation recipe and architectures, and the θ* if the method uses one."""
    uses_theta = bool({"model", "dynamics"} & set(str(record.get("needs", "")).split("+")))
    return {"method_version": record.get("method_version", 1), "model": record.get("model"),
            "eval_model": record.get("eval_model"), "pretrain_key": record.get("pretrain_key") if uses_theta else None,
            **{k: v for k, v in record.items() if k.startswith(("recipe.", "eval."))}}


def record_identity(record: dict[str, Any]) -> tuple:
    """One retrained model: the same identity in two folders is the same result, counted once."""
    return (record["method"], record["dataset"], record["ipc"], record["seed"], record["eval_index"],
            record.get("set_key"), canonical_json(column_fields(record)))


def _prefixed(record: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in record.items() if k.startswith(prefix)}


def set_aside_unreadable(out: Path | str) -> int:
    """Move unreadable records to ``<out>/records/unreadable/`` (kept for inspection), one line each,
    so that the run treats their jobs as missing and computes them again; returns how many."""
    folder = Path(out) / "records"
    moved = 0
    for path in sorted(folder.glob("*.json")):
        record, problem = _read_record(path)
        if record is None:
            (folder / "unreadable").mkdir(exist_ok=True)
            path.replace(folder / "unreadable" / path.name)
            say(f"record {path} is unreadable ({problem}); computing it again "
                  f"(the file is now in {folder / 'unreadable'})")
            moved += 1
    return moved


def load_failures(out: Path | str) -> list[dict[str, Any]]:
    failures = []
    for path in sorted((Path(out) / "records" / "failed").glob("*.json")):
        failure = read_json_object(path)
        if failure is not None and {"method", "seed", "error"} <= set(failure):
            failures.append(failure)
        else:
            say(f"failure record {path} is unreadable; ignored")
    return failures


CODE_NOTE = "code: "   # prefix of the provenance note (recomputed, not merged, when runs are merged)


def code_versions(records: list[dict[str, Any]]) -> list[str]:
    """One note naming the code the records came from (version, git commit, uncommitted changes),
    flagged MIXED when the table combines several; none when no record says."""
    if not any("git_commit" in r for r in records):
        return []
    versions = sorted({(str(r.get("dsvbench_version")), r.get("git_commit"), r.get("git_dirty"))
                       for r in records}, key=str)
    named = [f"dsvbench {version} at {_commit_label(commit)}" + (" + uncommitted changes" if dirty else "")
             for version, commit, dirty in versions]
    if len(named) == 1:
        return [f"{CODE_NOTE}{named[0]}"]
    return [f"{CODE_NOTE}MIXED, records from {len(named)} code versions: {'; '.join(named)}"]


def _commit_label(commit: str | None) -> str:
    """A commit's short hash; records without one (no git checkout: a wheel install) say so whole."""
    return commit[:12] if commit else "an unknown commit (no git checkout: a wheel install?)"


SPLIT_NOTE = "SEPARATE COLUMNS: "   # prefix of the notes of :func:`label_columns` (recomputed on merges)


def table_notes(records: list[dict[str, Any]]) -> list[str]:
    """The notes the records themselves call for: the code they came from, methods split into columns."""
    return code_versions(records) + label_columns(records)[1]


def label_columns(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Copies of the records with a ``column`` each, and a note per split method.

    Records of one method (per dataset and IPC) that differ in :func:`column_fields` — recipe,
    evaluation recipe, code version, θ* — are never averaged into one cell: each variant is its own
    column, labelled by what differs ("DC (300 ep)", "DC (v2)", else "DC [1]", "DC [2]"), in order
    of first appearance.
    """
    variants: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in records:
        fields = _without_model(column_fields(r))
        variants.setdefault(_block(r), {}).setdefault(canonical_json(fields), fields)
    suffixes, notes = {}, []
    for (dataset, ipc, model, method), found in variants.items():
        if len(found) == 1:
            suffixes[(dataset, ipc, model, method, *found)] = ""
            continue
        differing = sorted(k for k in set().union(*found.values())
                           if len({canonical_json(fields.get(k)) for fields in found.values()}) > 1)
        labels = [_suffix(differing, fields, i) for i, fields in enumerate(found.values(), 1)]
        if len(set(labels)) < len(labels):
            labels = [f"[{i}]" for i in range(1, len(labels) + 1)]
        suffixes.update({(dataset, ipc, model, method, key): label for key, label in zip(found, labels)})
        parts = [f"{method} {label}: " + ", ".join(f"{k}={fields.get(k)}" for k in differing)
                 for label, fields in zip(labels, found.values())]
        notes.append(f"{SPLIT_NOTE}{dataset} IPC={ipc}: {method} records differ in {', '.join(differing)}, "
                     f"not merged: {'; '.join(parts)}")
    labelled = []
    for r in records:
        suffix = suffixes[(*_block(r), canonical_json(_without_model(column_fields(r))))]
        labelled.append({**r, "column": f"{r['method']} {suffix}".strip(),
                         "table_name": f"{r['table_name']} {suffix}".strip()})
    return labelled, notes


def _block(record: dict[str, Any]) -> tuple:
    """The table block a record belongs to: dataset, IPC, retrained architecture (a cross-architecture
    table has a row per architecture), and its method."""
    return record["dataset"], record["ipc"], record.get("eval_model"), record["method"]


def _without_model(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != "eval_model"}


def _suffix(differing: list[str], fields: dict[str, Any], index: int) -> str:
    if differing == ["eval.epochs"] and isinstance(fields.get("eval.epochs"), (int, float)):
        return f"({fields['eval.epochs']:g} ep)"
    if differing == ["method_version"]:
        return f"(v{fields['method_version']})"
    return f"[{index}]"
