"""Command line: flags (:mod:`.options`) -> checks (:mod:`.checks`) -> the library call
(:func:`.api.execute`, :func:`.api.rerender`).  Bad input is one line on stderr and exit code 2,
checked before any work starts."""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Sequence

from .api import execute, rerender
from .data import DATASETS
from .methods import METHODS
from .models import MODELS
from .options import build_parser, config_from_args, flags_from_toml
from .process import keep_freed_memory
from .registry import UserError


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit code (0 ok, 1 a job failed, 2 bad input, 130 Ctrl-C).
    ``dsvbench evaluate SET ...`` scores sets made elsewhere (:mod:`.external`)."""
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["evaluate"]:
        return _evaluate(given[1:])
    config_file = None
    if given[:1] == ["run"]:   # dsvbench run GRID.toml [flags]: the file's flags, then the given ones
        if len(given) < 2 or not given[1].endswith(".toml"):
            print("dsvbench: error: dsvbench run needs a .toml grid config file (dsvbench run configs/NAME.toml)",
                  file=sys.stderr)
            return 2
        try:
            from_file, text = flags_from_toml(given[1])
        except UserError as error:
            print(f"dsvbench: error: {error}", file=sys.stderr)
            return 2
        config_file = {"path": given[1], "toml": text}
        argv = given = from_file + given[2:]
    args = build_parser().parse_args(argv)
    args.config_file = config_file
    args.argv = list(sys.argv[1:] if argv is None else argv)   # --replay: which flags were given
    try:
        keep_freed_memory()   # dsvbench.process: measured 20–25 % off the CPU hot loops
        return _main(args)
    except UserError as error:
        print(f"dsvbench: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:   # a full disk, an I/O error: one line; finished records stay valid
        where = f" ({error.filename})" if error.filename else ""
        print(f"dsvbench: error: {error.strerror or error}{where}; no table or run.json was left that looks "
              "complete — finished records are kept, rerun to complete", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # every finished record is on disk already: say so, no traceback
        records = Path(args.out or f"results/{args.dataset}-ipc{'-'.join(map(str, args.ipc))}") / "records"
        finished = sum(1 for _ in records.glob("*.json")) if records.is_dir() and not args.from_dirs else 0
        print(f"dsvbench: interrupted; {finished} records finished in {records}, rerun to resume",
              file=sys.stderr, flush=True)
        return 130


def _evaluate(argv: list[str]) -> int:
    """``dsvbench evaluate``: the sets read and checked, then a run of their column (and random's)."""
    from .external import build_evaluate_parser, evaluation
    args = build_evaluate_parser().parse_args(argv)
    try:
        with evaluation(args) as (run_argv, said):   # the evaluated column lives for this call only
            for line in said:
                print(f"evaluate: {line}")
            return main(run_argv)
    except UserError as error:
        print(f"dsvbench: error: {error}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    if args.list_methods or args.list_models or args.list_datasets:
        if args.list_methods:
            print(list_methods() if args.list_methods == "*" else describe_method(args.list_methods))
        if args.list_models:
            print("\n".join(f"{n:16s} {(MODELS.get(n).__doc__ or '').strip()}" for n in MODELS.names()))
        if args.list_datasets:
            print("\n".join(DATASETS.names()))
        return 0
    if args.replay and args.from_dirs:
        raise UserError("--replay and --from: one at a time (--from re-renders stored records, --replay runs again)")
    if args.from_dirs:
        results = rerender(args.from_dirs, args.out, in_place=args.in_place, reference_dataset=args.reference_dataset,
                           ddrs_weight_=args.ddrs_weight, echo=print)
        damaged = [line for line in results.failures if "unreadable record" in line]
        return 1 if damaged else 0   # a table rendered without a damaged record is not a clean result
    if args.in_place:
        raise UserError("--in-place only applies to --from (a run writes into --out anyway)")
    started, replayed = time.time(), None
    if args.replay:   # the configuration a run recorded (dsvbench.replay), checked like one from flags
        from .replay import replay_config
        config, replayed = replay_config(args)
    else:
        config = config_from_args(args)
    results = execute(config, progress=not args.quiet, echo=print, replayed=replayed,
                      extra_info={"config_file": args.config_file} if args.config_file else None)
    for failure in results.failures:
        print(f"dsvbench: {failure}", file=sys.stderr)
    print(f"outputs in {config.out} ({time.time() - started:.0f} s)")
    return 1 if results.failures else 0


def list_methods() -> str:
    """Id, Table 1 name, group, needs, retraining recipe and the first docstring line of each method."""
    from tabulate import tabulate
    specs = sorted((METHODS.get(n) for n in METHODS.names()), key=lambda s: (s.group != "selection", s.order))
    rows = [[s.name, s.version, s.table_name, s.group, s.needs, _retrained_with(s), "yes" if s.in_all else "no",
             _first_line(s.build.__doc__ or s.recipe.__doc__)] for s in specs]
    return tabulate(rows, ["id", "version", "name", "group", "needs", "retrained with", "in all", "description"])


def _first_line(text: str | None) -> str:
    return _plain((text or "").strip().splitlines()[0]) if (text or "").strip() else ""


def _plain(text: str) -> str:
    """Docstring markup (``code``, :func:`name`) as plain text for the terminal."""
    return re.sub(r":\w+:`~?\.?([^`]+)`", r"\1", text).replace("``", "")


def describe_method(name: str) -> str:
    """One method in full: what it declares, every recipe field (type, default for the reference dataset
    defaults of none, the comment beside it in the source), its presets and the hooks its recipe defines."""
    import dataclasses
    import inspect

    from tabulate import tabulate

    from .methods import NamesOwnTheta, NamesRetraining
    spec = METHODS.get(name)
    comments: dict[str, str] = {}
    for cls in reversed(spec.recipe.__mro__):   # a subclass's comment wins
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        for match in re.finditer(r"^\s+(\w+):[^=\n]+=[^#\n]*#\s*(.+)$", source, re.M):
            comments[match.group(1)] = match.group(2).strip()
        for match in re.finditer(r"^\s*\*\s+``(\w+)``([^\n]*)", inspect.getdoc(cls) or "", re.M):   # docstring bullets
            comments.setdefault(match.group(1), _plain(match.group(2)).strip(" —-:,"))
    rows = []
    for field in dataclasses.fields(spec.recipe):
        default = field.default if field.default is not dataclasses.MISSING else (
            field.default_factory() if field.default_factory is not dataclasses.MISSING else "(required)")
        rows.append([field.name, str(field.type).replace("typing.", ""), repr(default), comments.get(field.name, "")])
    recipe = spec.recipe()
    hooks = [text for present, text in (
        (isinstance(recipe, NamesRetraining), "retrain: names its column's evaluation recipe"),
        (isinstance(recipe, NamesOwnTheta), "pretrained_spec(): may name a θ* of its own")) if present]
    lines = [f"{spec.name} (v{spec.version}): {spec.table_name}, {spec.group}; needs {spec.needs}; "
             f"retrained with {_retrained_with(spec)}; seeds in one call: {'yes' if spec.build_many else 'no'}",
             _plain(inspect.getdoc(spec.build) or inspect.getdoc(spec.recipe) or ""), "",
             tabulate(rows, ["field", "type", "default", "comment"]) if rows else "(no recipe fields)"]
    if spec.presets:
        lines += ["", "presets: " + "; ".join(f"{p}: {', '.join(f'{k}={v}' for k, v in fields.items())}"
                                               for p, fields in spec.presets.items())]
    if hooks:
        lines += ["", "hooks: " + "; ".join(hooks)]
    return "\n".join(lines)



def _retrained_with(spec) -> str:
    """The recipe a method's column is retrained with by default: its recipe's ``retrain`` (the
    ``NamesRetraining`` hook) where it names one, else the registered ``eval_recipe``."""
    try:
        recipe = spec.make_recipe("")
    except Exception:  # noqa: BLE001 - a recipe that needs a dataset's defaults: the registered name
        return spec.eval_recipe
    return spec.retraining(recipe)

if __name__ == "__main__":   # python -m dsvbench.cli, as the dsvbench console script
    sys.exit(main())
