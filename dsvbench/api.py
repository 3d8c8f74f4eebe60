"""The library entry point: :func:`run` a benchmark and get its :class:`Results`, :func:`rerender`
stored runs.  The command line (:mod:`.cli`) is a thin layer over these two::

    import dsvbench
    results = dsvbench.run(dataset="digits", methods=["random", "herding"], seeds=2, out="results/api-demo")
    print(results.table())

A run writes exactly what the command line's run writes (records, tables, ``run.json``, figures,
report) under ``out``, and resumes from the records already there.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch

from .atomic import confined, read_json_object
from .checks import check_config, check_ipc, check_writable, ddrs_weight
from .config import BenchConfig
from .data import load_dataset
from .dispatch import run_all
from .fulldata import full_data_accuracies, load_full_data
from .options import config_from_flags
from .plan import record_files, resolve
from .process import busy_note, keep_freed_memory, run_threads
from .provenance import provenance
from .records import (CODE_NOTE, SPLIT_NOTE, load_failures, load_records, merge_runs, select_records,
                      set_aside_unreadable, table_notes)
from .registry import UserError, say
from .report import render_report
from .results import remove_outputs, render_text, write_outputs
from .runinfo import budget_notes, print_config, run_info
from .tasks import prepare


@dataclass
class Results:
    """What a run or a re-rendering produced: the summary table (one row per column), the records
    it was computed from, the notes said under it, and the failures (each one line)."""
    out: Path
    summary: pd.DataFrame
    records: list[dict[str, Any]]
    notes: list[str]
    info: dict[str, Any]
    failures: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The table as the command line prints it (with its notes)."""
        return render_text(self.summary, self.notes)

    @property
    def ok(self) -> bool:
        return not self.failures


def run(config: BenchConfig | None = None, *, progress: bool = False, verbose: bool = False,
        **flags: Any) -> Results:
    """Run the benchmark of ``config``, or of the command line's flags given as keyword arguments
    (``dataset="digits", methods=["random"], seeds=2``; see :func:`.options.config_from_flags`).
    Bad input raises :class:`.registry.UserError` before any work; a method that fails leaves a
    failure record and a line in ``Results.failures``, the other columns go on."""
    if config is None:
        config = config_from_flags(**flags)
    elif flags:
        raise UserError(f"dsvbench.run: give a BenchConfig or flags, not both (got {', '.join(flags)})")
    else:
        config = check_config(config, config.jobs)
    command = ["dsvbench.run", *(f"{k}={v!r}" for k, v in flags.items())]
    return execute(config, progress=progress, echo=print if verbose else _silent, command=command)


def evaluate(sets: Sequence[str | Path], *, dataset: str, progress: bool = False, verbose: bool = False,
             **options: Any) -> Results:
    """``dsvbench evaluate`` as a call: score condensed sets made elsewhere (files, image folders or a
    dsvbench run's folder with ``method=``) under the suite's protocols; ``options`` are the command's
    flags with underscores (``name="mine", eval_recipe="dc", seeds=5, out="results/mine"``)."""
    from .external import build_evaluate_parser, evaluation
    from .options import build_parser, config_from_args
    defaults = vars(build_evaluate_parser().parse_args(["SET", "--dataset", dataset]))
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(unknown)} of dsvbench.evaluate; options: "
                        f"{', '.join(sorted(k for k in defaults if k not in ('sets', 'dataset')))}")
    args = argparse.Namespace(**{**defaults, **options, "sets": [str(s) for s in sets], "dataset": dataset})
    with evaluation(args) as (run_argv, said):   # the evaluated column lives for this call only
        echo = print if verbose else _silent
        for line in said:
            echo(f"evaluate: {line}")
        config = config_from_args(build_parser().parse_args(run_argv))
        return execute(config, progress=progress, echo=echo, command=["dsvbench.evaluate", *map(str, sets)])


def _silent(*_: Any, **__: Any) -> None:
    pass


def execute(config: BenchConfig, progress: bool = True, echo: Callable[..., None] = print,
            replayed: Any = None, command: Sequence[str] | None = None,
            extra_info: dict[str, Any] | None = None) -> Results:
    """The pipeline of a checked ``config``: plan, data, θ*, tasks, records, outputs."""
    started = time.time()
    keep_freed_memory()   # dsvbench.process: measured 20–25 % off the CPU hot loops
    if config.device == "cpu" or config.threads is not None:
        torch.set_num_threads(run_threads(config.threads))   # workers share them (dispatch)
    with confined(config.out, config.cache_dir):   # dsvbench.atomic: every write lands under these two
        provenance()   # the commit of the code this process loaded, asked now, not when a record is written
        grid = [dataclasses.replace(config, ipc=ipc, eval_model=model) for ipc in (config.ipc_grid or (config.ipc,))
                for model in (config.eval_models or (config.eval_model,))]
        plans = [resolve(part) for part in grid]   # one per IPC × retrained architecture; the same columns, recipes and θ*
        plan = plans[0]
        dataset = load_dataset(config.data, config.cache_dir)
        for part in grid:
            check_ipc(part, dataset.class_counts())
        if replayed is not None:
            replayed.check(plan, dataset)   # same data, θ* and set keys as recorded, else a warning line each
        print_config(plan, echo)
        if config.ipc_grid:
            echo(f"  IPC grid: {', '.join(map(str, config.ipc_grid))} (every column at each; a table row per IPC)")
        if config.eval_models:
            echo(f"  cross-architecture: every set retrained on {', '.join(config.eval_models)} (a table row each)")
        busy = busy_note(torch.get_num_threads()) if config.threads is None and config.device == "cpu" else None
        if busy:
            echo(f"  NOTE: {busy}")
        dataset, pretrained = prepare(config, progress=progress, dataset=dataset)
        if pretrained is not None:
            echo(f"θ*: {config.model} on {dataset.name}: train {pretrained.train_accuracy:.2f}%, "
                 f"test {pretrained.test_accuracy:.2f}%, {pretrained.seconds_per_epoch:.2f} s/epoch")
        set_aside_unreadable(config.out)  # a damaged record is a job to redo, not a finished one
        names = [name for part_plan in plans for name in record_files(part_plan, dataset)]
        present = sum((Path(config.out) / "records" / f"{name}.json").exists() for name in names)
        echo(f"{present}/{len(names)} records present" + (": nothing to build or retrain" if present == len(names)
                                                         else f"; {len(names) - present} to make"))
        outcomes, wanted = [], {}
        for part, part_plan in zip(grid, plans):
            outcomes += run_all(part, progress=progress, loaded=(dataset, pretrained))
            wanted.update(part_plan.record_keys(dataset))
        records = select_records(load_records(config.out), wanted, config.evals_per_set)
        notes = budget_notes(config) + table_notes(records)
        per_model = {part.config.retrain_model: part for part in plans}   # full data: once per retrained architecture
        full_data = ([entry for part in per_model.values() for entry in full_data_accuracies(part, dataset, progress)]
                     if config.scores and records else [])
        info = run_info(plan, started, pretrained, dataset, command)
        if replayed is not None:
            info["replayed_from"] = str(replayed.path)
        info.update(extra_info or {})   # e.g. the grid config file the flags came from, as written
        summary = write_outputs(config.out, records, info, notes, config.reference_dataset, full_data=full_data,
                                ddrs_weight=config.ddrs_weight)
        if not summary.empty:
            echo(render_text(summary, notes))
            try:
                render_report(config.out, summary, records, [config.out])   # figures/ and report.html
            except OSError:
                remove_outputs(config.out)
                raise
    failures = [f"{o['task'].method} seed {', '.join(map(str, o['task'].seeds))} failed: {o['error']}"
                for o in outcomes if o["error"]]
    return Results(Path(config.out), summary, records, notes, info, failures)


def rerender(folders: Sequence[str | Path], out: str | Path | None = None, *, in_place: bool = False,
             reference_dataset: str | None = None, ddrs_weight_: float | None = None,
             echo: Callable[..., None] = _silent) -> Results:
    """Re-render stored runs, several merged: each model counted once, a method whose records differ
    in recipe, evaluation, code version or θ* split into columns, nothing written into an input
    folder unless ``in_place``, and one line per folder saying what was left out (``Results.failures``
    lists the damaged records and the failed jobs)."""
    folders = [str(folder) for folder in folders]
    for folder in folders:
        if not (Path(folder) / "records").is_dir():
            raise UserError(f"--from {folder}: no records/ folder there; point it at a run's --out folder")
    target = _rerender_target(folders, out, in_place)
    records, left_out = merge_runs(folders)
    for line in left_out:
        say(line)
    if not records:
        raise UserError(f"--from {' '.join(folders)}: no finished records to render")
    notes, info = [], {}
    for folder in folders:
        info = _read_run_json(Path(folder) / "run.json") or info
        notes += [n for n in info.get("notes", []) if n not in notes and not n.startswith((CODE_NOTE, SPLIT_NOTE))]
    notes += table_notes(records)  # recomputed: merged runs may come from different code and recipes
    reference = reference_dataset or (info.get("config", {}).get("reference_dataset"))
    info.update(rendered_from=folders, left_out=left_out)
    weight = (ddrs_weight(ddrs_weight_, False, True) if ddrs_weight_ is not None
              else info.get("config", {}).get("ddrs_weight", 0.5))
    summary = write_outputs(target, records, info, notes, reference, full_data=load_full_data(folders),
                            ddrs_weight=weight)
    echo(render_text(summary, notes))
    render_report(target, summary, records, folders)   # figures/ and report.html, from the stored sets
    failures = [line for line in left_out if "unreadable record" in line]
    jobs = [f"failed job {f['method']} seed {f['seed']}: {f['error']}" for f in sum((load_failures(f) for f in folders), [])]
    for line in jobs:
        echo(line)
    return Results(target, summary, records, notes, info, failures + jobs)


def _rerender_target(folders: list[str], out: str | Path | None, in_place: bool) -> Path:
    """The folder a re-rendering writes into: ``out``, never an input folder unless ``in_place``."""
    target = Path(out or folders[0])
    if target.resolve() in {Path(folder).resolve() for folder in folders} and not in_place:
        where = f"--out {out} is an input folder" if out else f"without --out the outputs go to {target}"
        raise UserError(f"--from: {where}, whose run.json and tables would be overwritten; "
                        f"give --out NEW_FOLDER, or --in-place to rewrite {target}")
    check_writable(target, "--out")
    return target


def _read_run_json(path: Path) -> dict[str, Any] | None:
    """A run's ``run.json`` (notes, config), None when absent or unreadable (said in one line)."""
    if not path.exists():
        return None
    info = read_json_object(path)
    if info is None:
        say(f"{path} is unreadable; rendering without its notes")
        return None
    return info
