"""Records -> one aggregate -> every writer (CSV, Markdown, LaTeX, JSON, terminal); reading the
records is :mod:`.records`.

Std is the population std (ddof 0) over all retrained models of a column, as in the
DC literature; every output says so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from .atomic import atomic_write_json, atomic_write_text
from .records import label_columns
from .references import reference_for, reference_rows
from .scores import add_scores, score_lines

DDOF = 0
STD_NOTE = "mean ± std over seeds × evals (population std, ddof 0)"
GROUP_TITLES = {"selection": "coreset selection", "synthesis": "synthesis"}


def summarize(records: list[dict[str, Any]], reference_dataset: str | None = None) -> pd.DataFrame:
    """One row per column (:func:`label_columns`; normally one per method) and dataset / IPC:
    mean, std (ddof 0), n, timings, the paper's figure."""
    if not records:
        return pd.DataFrame()
    frame = pd.DataFrame(label_columns(records)[0])
    keys = ["dataset", "ipc", "group", "order", "method", "column", "table_name"]
    summary = frame.groupby(keys, sort=False).agg(
        mean=("test_accuracy", "mean"), std=("test_accuracy", lambda s: s.std(ddof=DDOF)),
        n=("test_accuracy", "size"), seeds=("seed", "nunique"),
        build_seconds=("build_seconds", "mean"), retrain_seconds=("retrain_seconds", "mean"),
        peak_memory_mb=("peak_memory_mb", "max"), needs=("needs", "first"),
        eval_recipe=("eval.name", "first"), eval_epochs=("eval.epochs", "first"),
        eval_model=("eval_model", "first"),
    ).reset_index()
    for column in ("pretrained_agreement", "lambda_class_acc_pearson"):
        if column in frame:
            summary[column] = frame.groupby(keys, sort=False)[column].mean().values
    refs = [reference_for(reference_dataset or row.dataset, row.ipc, row.method)
            for row in summary.itertuples()]
    summary["paper_mean"] = [r[0] if r else None for r in refs]
    summary["paper_std"] = [r[1] if r else None for r in refs]
    summary["paper_source"] = [r[2] if r else None for r in refs]
    summary["delta"] = summary["mean"] - summary["paper_mean"].astype(float)
    summary["reference_dataset"] = [reference_dataset or row.dataset for row in summary.itertuples()]
    summary["group_rank"] = summary["group"].map({"selection": 0, "synthesis": 1}).fillna(2)
    return summary.sort_values(["dataset", "ipc", "group_rank", "order", "method", "column"]).drop(
        columns="group_rank").reset_index(drop=True)


def _cell(mean: Any, std: Any, digits: int = 1) -> str:
    if mean is None or pd.isna(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def table_rows(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Table 1's layout: a column per method (selection, then synthesis); per dataset/IPC the
    rows ours / paper / Δ / eval recipe."""
    methods = list(dict.fromkeys(summary["column"]))
    names = summary.drop_duplicates("column").set_index("column")
    header = ["", *[f"{names.loc[m, 'table_name']}" for m in methods]]
    rows = [["group", *[GROUP_TITLES.get(names.loc[m, "group"], names.loc[m, "group"]) for m in methods]]]
    for (dataset, ipc), block in summary.groupby(["dataset", "ipc"], sort=False):
        by_method = block.set_index("column")
        def line(label, fn):
            return [label, *[fn(by_method.loc[m]) if m in by_method.index else "" for m in methods]]
        rows.append(line(f"{dataset} IPC={ipc}: ours", lambda r: _cell(r["mean"], r["std"])))
        references = _reference_rows(block, ipc)
        if block["paper_mean"].notna().any():
            rows.append(line(f"paper: {references[0][0]}", lambda r: _cell(r["paper_mean"], r["paper_std"], 2)
                             if pd.notna(r["paper_mean"]) else "–"))
            rows.append(line("Δ (ours − paper)", lambda r: f"{r['delta']:+.1f}" if pd.notna(r["delta"]) else "–"))
        for label, figures in references[1:]:
            rows.append(line(f"also: {label}", lambda r, f=figures: _cell(*f[r["method"]][:2], 2)
                             if r["method"] in f else "–"))
        rows.append(line("retrained with", lambda r: f"{r['eval_recipe']} ({int(r['eval_epochs'])} ep)"))
        rows.append(line("models (seeds)", lambda r: f"{int(r['n'])} ({int(r['seeds'])})"))
        rows += [line(label, cell) for label, cell in score_lines(block)]   # IOR / HLR / DDRS (dsvbench.scores)
    return header, rows


def _reference_rows(block: pd.DataFrame, ipc: int) -> list[tuple[str, dict[str, Any]]]:
    """The published rows of one dataset/IPC block (primary first, :func:`reference_rows`)."""
    dataset = block["reference_dataset"].iloc[0] if "reference_dataset" in block else block["dataset"].iloc[0]
    return reference_rows(dataset, int(ipc)) or [("paper", {})]


def details_rows(summary: pd.DataFrame) -> tuple[list[str], list[list[Any]]]:
    header = ["method", "needs", "build s (mean)", "retrain s (mean)", "peak MB", "θ* agrees %",
              "ρ(Σλ, class acc)"]
    rows = []
    grid = summary["ipc"].nunique() > 1   # an IPC grid: say which IPC each line is
    for row in summary.itertuples():
        rows.append([f"{row.column} (IPC {row.ipc})" if grid else row.column, row.needs,
                     f"{row.build_seconds:.1f}", f"{row.retrain_seconds:.1f}",
                     f"{row.peak_memory_mb:.0f}", _maybe(row, "pretrained_agreement", "{:.0f}"),
                     _maybe(row, "lambda_class_acc_pearson", "{:+.2f}")])
    return header, rows


def _maybe(row: Any, name: str, fmt: str) -> str:
    value = getattr(row, name, None)
    return fmt.format(value) if value is not None and pd.notna(value) else "–"


DC_PAPER_PROTOCOL = (5, 20)   # the DC paper: 5 experiments (sets) x 20 freshly initialised models each


def protocol_note(summary: pd.DataFrame) -> list[str]:
    """Which protocol each column's cell follows: sets (seeds) × models per set, and whether
    that is the DC paper's (``--protocol dc-paper``: 5 sets × 20 models, mean ± std over all
    100 models, ddof 0 — ``main.py --num_exp 5 --num_eval 20`` of its reference code)."""
    if summary.empty:
        return []
    groups: dict[str, list[str]] = {}
    for row in summary.drop_duplicates("column").itertuples():
        seeds, n = int(row.seeds), int(row.n)
        per_set = f"{n // seeds}" if seeds and n % seeds == 0 else f"{n}/{seeds}"
        label = f"{seeds} × {per_set}"
        if (seeds, n) == (DC_PAPER_PROTOCOL[0], DC_PAPER_PROTOCOL[0] * DC_PAPER_PROTOCOL[1]):
            label += " (the DC paper's)"
        groups.setdefault(label, []).append(str(row.table_name))
    parts = "; ".join(f"{', '.join(names)}: {label}" for label, names in groups.items())
    return [f"protocol (sets × models per set): {parts}; the DC paper's cells are 5 × 20 "
            "(mean ± std over all 100 models)"]


def render_text(summary: pd.DataFrame, notes: list[str] = ()) -> str:
    notes = [*notes, *summary.attrs.get("notes", []), *protocol_note(summary)]
    header, rows = table_rows(summary)
    dheader, drows = details_rows(summary)
    parts = [tabulate(rows, header, tablefmt="simple"), "", tabulate(drows, dheader, tablefmt="simple"),
             "", STD_NOTE, *notes]
    return "\n".join(parts)


def render_markdown(summary: pd.DataFrame, notes: list[str] = ()) -> str:
    notes = [*notes, *summary.attrs.get("notes", []), *protocol_note(summary)]
    header, rows = table_rows(summary)
    dheader, drows = details_rows(summary)
    notes_md = "".join(f"\n- {n}" for n in (STD_NOTE, *notes))
    return (tabulate(rows, header, tablefmt="github") + "\n\n" + tabulate(drows, dheader, tablefmt="github")
            + "\n" + notes_md + "\n")


def render_latex(summary: pd.DataFrame, notes: list[str] = ()) -> str:
    """booktabs table with a \\cmidrule per group, ready to paste; the run's notes (reduced or
    changed budgets, presets, the code it came from) follow it as small print, so a pasted table
    says what the markdown one says."""
    methods = list(dict.fromkeys(summary["column"]))
    info = summary.drop_duplicates("column").set_index("column")
    groups = [(g, [m for m in methods if info.loc[m, "group"] == g]) for g in dict.fromkeys(info.loc[methods, "group"])]
    lines = [r"\begin{tabular}{l" + "c" * len(methods) + "}", r"\toprule"]
    spans, rules, column = [], [], 2
    for group, members in groups:
        spans.append(rf"\multicolumn{{{len(members)}}}{{c}}{{{GROUP_TITLES.get(group, group).capitalize()}}}")
        rules.append(rf"\cmidrule(lr){{{column}-{column + len(members) - 1}}}")
        column += len(members)
    lines += [" & " + " & ".join(spans) + r" \\", " ".join(rules)]
    lines.append("Dataset / IPC & " + " & ".join(_tex(info.loc[m, "table_name"]) for m in methods) + r" \\")
    lines.append(r"\midrule")
    for (dataset, ipc), block in summary.groupby(["dataset", "ipc"], sort=False):
        by_method = block.set_index("column")
        cells = [_cell(by_method.loc[m, "mean"], by_method.loc[m, "std"]).replace("±", r"$\pm$")
                 if m in by_method.index else "" for m in methods]
        lines.append(f"{_tex(dataset)} / {ipc} & " + " & ".join(cells) + r" \\")
        if block["paper_mean"].notna().any():
            paper = [_cell(by_method.loc[m, "paper_mean"], by_method.loc[m, "paper_std"], 2).replace("±", r"$\pm$")
                     if m in by_method.index and pd.notna(by_method.loc[m, "paper_mean"]) else "--"
                     for m in methods]
            lines.append(r"\quad paper & " + " & ".join(paper) + r" \\")
        for label, figures in _reference_rows(block, ipc)[1:]:
            also = [_cell(*figures[by_method.loc[m, "method"]][:2], 2).replace("±", r"$\pm$")
                    if m in by_method.index and by_method.loc[m, "method"] in figures else "--" for m in methods]
            lines.append(rf"\quad {_tex(label)} & " + " & ".join(also) + r" \\")
        for label, cell in score_lines(block):
            lines.append(rf"\quad {_tex(label)} & " + " & ".join(
                cell(by_method.loc[m]) if m in by_method.index else "" for m in methods).replace("±", r"$\pm$").replace(
                "–", "--") + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [rf"\par{{\footnotesize {_tex(note)}}}" for note in notes]
    return "\n".join([*lines, ""])


def _tex(text: Any) -> str:
    return str(text).replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


def write_outputs(out: Path | str, records: list[dict[str, Any]], run_info: dict[str, Any],
                  notes: list[str] = (), reference_dataset: str | None = None,
                  full_data: list[dict[str, Any]] | None = None, ddrs_weight: float = 0.5) -> pd.DataFrame:
    """Write results.csv, summary.csv, table.md, table.tex and run.json into ``out``; the summary carries
    the DD-Ranking scores (:func:`dsvbench.scores.add_scores`, their notes in ``summary.attrs``)."""
    out = Path(out)
    summary = summarize(records, reference_dataset)
    if summary.empty:
        return summary
    summary, score_notes = add_scores(summary, records, full_data or [], ddrs_weight)
    summary.attrs["notes"] = score_notes
    try:
        atomic_write_text(out / "results.csv", pd.DataFrame(records).sort_values(
            ["method", "seed", "eval_index"]).to_csv(index=False))
        atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
        atomic_write_text(out / "table.md", render_markdown(summary, notes))
        atomic_write_text(out / "table.tex", render_latex(summary, notes))
        atomic_write_json(out / "run.json", {**run_info, "notes": list(notes), "score_notes": score_notes,
                                             "std": STD_NOTE})
    except OSError:
        remove_outputs(out)
        raise
    return summary


OUTPUT_FILES = ("results.csv", "summary.csv", "table.md", "table.tex", "run.json", "report.html")


def remove_outputs(out: Path | str) -> None:
    """Remove the run-level outputs (never the records): after a failed write, no table or
    run.json that looks complete is left beside records that would not produce it."""
    for name in OUTPUT_FILES:
        try:
            (Path(out) / name).unlink(missing_ok=True)
        except OSError:
            pass
