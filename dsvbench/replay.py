"""``--replay <out>/run.json``: run again exactly the configuration a run recorded, into a new ``--out``.

The :class:`BenchConfig` is rebuilt field by field from ``run.json``'s ``config`` (not re-derived from
flags, so changed defaults cannot slip in); a method recipe field whose current default differs from the
recorded value is pinned to it (as a ``--set``, said in a warning).  Only where and how fast it runs may
change (``--out``, ``--device``, ``--jobs``, ``--backend``, ``--scheduler``, ``--cache-dir``,
``--quiet``).  Different code (dsvbench version, git commit), torch, thread count, data or θ* are one
warning line each, not errors: the run goes on and its records say which code made them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checks import check_config, worker_count
from .options import build_parser
from .provenance import provenance
from .version import __version__
from .config import BenchConfig, canonical_json, to_dict
from .ranges import RangeError, check_bench_config
from .registry import UserError, warn

ALLOWED = ("out", "device", "jobs", "threads", "backend", "scheduler", "cache_dir", "quiet")


@dataclass
class Replayed:
    """The recorded run a replay comes from, and what is checked once its data is loaded."""
    path: Path
    info: dict[str, Any]

    def check(self, plan: Any, dataset: Any) -> None:
        """One warning line per difference from the recording: data content, θ*, condensed-set keys."""
        from .pretrain import dataset_fingerprint
        recorded = self.info.get("dataset") or {}
        if recorded.get("fingerprint") not in (None, dataset_fingerprint(dataset)):
            warn(f"the data differ from the recording ({dataset.name} content hash {dataset_fingerprint(dataset)}, "
                 f"recorded {recorded['fingerprint']}): same configuration, other numbers")
        theta = (self.info.get("pretrained") or {}).get("key")
        from .pretrain import theta_key
        current = theta_key(dataset, plan.config.model, plan.config.pretrain)
        if theta is not None and theta != current:
            warn(f"θ* key {current} differs from the recorded {theta}: the pretrained network will differ")
        stored = _recorded_set_keys(self.path.parent)
        differing = sorted({m for (m, seed, ipc, _), (key, _) in plan.record_keys(dataset).items()
                            if stored.get((m, seed, ipc), key) != key})
        if differing:
            warn(f"condensed-set keys of {', '.join(differing)} differ from the recorded run's records "
                 "(code version, recipe, data, θ* or device): their sets are built anew")


def explicit_flags(argv: list[str]) -> set[str]:
    """The destinations of the flags actually given in ``argv`` (defaults suppressed)."""
    parser = build_parser()
    for action in parser._actions:   # argparse has no public "was it given" query
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv)))


def read_run_json(path: str | Path) -> tuple[dict[str, Any], Path]:
    """A run's ``run.json`` (or the one in a run folder); a missing or unreadable one is a :class:`UserError`."""
    path = Path(path)
    path = path / "run.json" if path.is_dir() else path
    if not path.is_file():
        raise UserError(f"--replay {path}: no such file; give a run's <out>/run.json")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserError(f"--replay {path}: not a readable run.json ({type(error).__name__}); "
                        "give a run's <out>/run.json") from None
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        raise UserError(f"--replay {path}: no recorded config in it; give a run's <out>/run.json")
    if info.get("rendered_from"):
        raise UserError(f"--replay {path}: written by --from (a re-render of {', '.join(info['rendered_from'])}); "
                        "replay the run.json of one of those runs")
    return info, path


def config_from_record(recorded: dict[str, Any]) -> tuple[BenchConfig, list[str]]:
    """The :class:`BenchConfig` a run recorded (``to_dict`` inverted), and a warning per field the
    recording lacks (written by an older dsvbench: the default is used, or ``BenchConfig.BEFORE``'s value
    where the default changed what a run computes)."""
    missing: list[str] = []
    config = _rebuild(BenchConfig(), recorded, "config", missing)
    return config, ([f"run.json predates {', '.join(missing)} (an older dsvbench): these values are used "
                     "(each the behaviour before its field existed)"] if missing else [])


def _rebuild(default: Any, recorded: dict[str, Any], where: str, missing: list[str]) -> Any:
    fields = [f.name for f in dataclasses.fields(default)]
    unknown = sorted(set(recorded) - set(fields))
    if unknown:
        raise UserError(f"--replay: the recorded {where} has field(s) {', '.join(unknown)} that dsvbench "
                        f"{__version__} does not know, so it cannot re-run it exactly; use the version that wrote it")
    values = {}
    for name in fields:
        current = getattr(default, name)
        if name not in recorded:
            before = getattr(default, "BEFORE", {})   # a field whose default changed what a run computes
            if name in before:
                values[name] = current = before[name]
            missing.append(f"{where}.{name}={current!r}")
            continue
        value = recorded[name]
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = _rebuild(current, value, f"{where}.{name}", missing)
        elif isinstance(current, tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        values[name] = value
    try:
        return dataclasses.replace(default, **values)
    except (TypeError, ValueError) as error:
        raise UserError(f"--replay: the recorded {where} is malformed ({error})") from None


def replay_config(args: argparse.Namespace) -> tuple[BenchConfig, Replayed]:
    """The recorded configuration with only ``ALLOWED`` flags applied, validated like one from flags."""
    given = explicit_flags(args.argv) - {"replay"}
    refused = sorted(given - set(ALLOWED))
    if refused:
        names = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise UserError(f"--replay re-runs the recorded configuration, so {names} cannot change it; with --replay "
                        "give only " + ", ".join("--" + name.replace("_", "-") for name in ALLOWED))
    info, path = read_run_json(args.replay)
    config, warnings = config_from_record(info["config"])
    try:   # the recorded values' types and ranges, before anything below uses them
        check_bench_config(config)
    except RangeError as error:
        raise UserError(f"--replay {path}: {error}") from None
    if "out" not in given:
        raise UserError("--replay needs --out NEW_FOLDER (the recorded run stays as it is)")
    if Path(args.out).resolve() == path.parent.resolve():
        raise UserError(f"--replay into {args.out}: that is the recorded run's folder; give --out NEW_FOLDER")
    changes: dict[str, Any] = {"out": args.out}
    for name in ("device", "cache_dir", "backend", "scheduler", "threads"):
        if name in given and hasattr(config, name):
            changes[name] = getattr(args, name)
    if "backend" in given and "scheduler" not in given and hasattr(config, "scheduler"):
        changes["scheduler"] = None
    if not (changes.get("scheduler", getattr(config, "scheduler", None))):
        jobs = args.jobs if "jobs" in given else config.jobs
        changes["jobs"] = worker_count(jobs, len(config.methods) * len(config.seeds))
        if "jobs" not in given and changes["jobs"] != config.jobs:
            warnings.append(f"--jobs {config.jobs} recorded, {changes['jobs']} usable here")
    config = dataclasses.replace(config, **changes)
    warnings += _provenance_warnings(info, config)
    config, pinned = _pin_recipes(config, info)
    if not (config.seeds and config.ipc >= 1 and config.evals_per_set >= 1 and 0.0 <= config.ddrs_weight <= 1.0):
        raise UserError("--replay: the recorded seeds, IPC, evals per set or DDRS weight are out of range")
    config = check_config(config, args.jobs if "jobs" in given else config.jobs)
    for line in warnings + pinned:
        warn(line)
    return config, Replayed(path, info)


def _provenance_warnings(info: dict[str, Any], config: BenchConfig) -> list[str]:
    warnings = []
    versions = info.get("versions") or {}
    if versions.get("dsvbench") != __version__:
        warnings.append(f"recorded with dsvbench {versions.get('dsvbench')}, this is {__version__}")
    recorded, current = info.get("git_commit"), provenance().get("git_commit")
    if recorded != current:
        warnings.append(f"recorded at git commit {(recorded or 'unknown')[:12]}, this code is at "
                        f"{(current or 'no git checkout')[:12]}: changes since may change the numbers")
    if info.get("git_dirty"):
        warnings.append("the recorded run had uncommitted code changes, which its commit does not contain")
    if versions.get("torch") not in (None, torch.__version__):
        warnings.append(f"recorded with torch {versions['torch']}, this is {torch.__version__}")
    threads = info.get("torch_threads")
    if threads is not None and threads != torch.get_num_threads():
        warnings.append(f"recorded with {threads} torch threads, this process has {torch.get_num_threads()} "
                        "(floating-point sums, and long optimizations such as dsvg's, may differ in the last bits)")
    if info["config"].get("device", config.device) != config.device:
        warnings.append(f"recorded on {info['config']['device']}, replayed on {config.device}: other arithmetic")
    return warnings


def _pin_recipes(config: BenchConfig, info: dict[str, Any]) -> tuple[BenchConfig, list[str]]:
    """Pin every method recipe field whose current default differs from the recorded value (as a
    ``--set`` appended to the overrides), and say each; evaluation recipes can only be compared."""
    from .plan import resolve
    plan, lines, pins = resolve(config), [], []
    for column in plan.columns:
        current, recorded = to_dict(column.recipe), (info.get("recipes") or {}).get(column.method)
        for field, value in (recorded or {}).items():
            if field not in current:
                lines.append(f"{column.method}.{field} (recorded {value!r}) no longer exists; it is ignored")
            elif canonical_json(current[field]) != canonical_json(value):
                text = _as_text(value)
                if text is None:
                    lines.append(f"{column.method}.{field}: recorded {value!r}, now {current[field]!r} (cannot be pinned)")
                    continue
                pins.append((column.method, field, text))
                lines.append(f"{column.method}.{field}: recorded {value!r}, this code's default {current[field]!r}; "
                             f"pinned to the recorded value (--set {column.method}.{field}={text})")
        evaluation = (info.get("eval_recipes") or {}).get(column.method) or {}
        current_eval = to_dict(column.eval_recipe)
        differing = [f for f in evaluation if f in current_eval and canonical_json(current_eval[f]) != canonical_json(evaluation[f])]
        if differing:
            lines.append(f"{column.method}: retraining recipe differs from the recording in {', '.join(differing)} "
                         "(recorded " + ", ".join(f"{f}={evaluation[f]!r}" for f in differing) + ")")
    if pins:
        config = dataclasses.replace(config, method_overrides=config.method_overrides + tuple(pins))
    return config, lines


def _as_text(value: Any) -> str | None:
    """``value`` as a ``--set`` string that parses back to it, None when there is none."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float, str)):
        return str(value)
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return ",".join(map(str, value))
    return None


def _recorded_set_keys(folder: Path) -> dict[tuple[str, int, int], str]:
    """(method, seed, ipc) → set key of the records a run left in ``folder`` (its ``records/``, else the
    ``results.csv`` a committed run keeps); none when the run's folder holds neither."""
    keys = {}
    for path in (folder / "records").glob("*.json"):
        try:
            record = json.loads(path.read_text())
            keys[(record["method"], int(record["seed"]), int(record["ipc"]))] = record["set_key"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if not keys and (folder / "results.csv").is_file():
        import csv
        try:
            with open(folder / "results.csv", newline="") as handle:
                for row in csv.DictReader(handle):
                    keys[(row["method"], int(row["seed"]), int(row["ipc"]))] = row["set_key"]
        except (OSError, ValueError, KeyError, csv.Error):
            return {}
    return keys
