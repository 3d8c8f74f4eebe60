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
from .deviations import deviations, mark_columns
from .records import label_columns
from .references import published_only, reference_for, reference_rows
from .scores import add_scores, score_lines

DDOF = 0
STD_NOTE = "mean ± std over seeds × evals (population std, ddof 0)"
GROUP_TITLES = {"selection": "coreset selection", "synthesis": "synthesis"}
# Rows of a cross-architecture table in the DC paper's Table 2 order, then the others by name
ARCHITECTURE_ORDER = ("convnet", "mlp", "lenet", "alexnet", "vgg11", "resnet18")


def summarize(records: list[dict[str, Any]], reference_dataset: str | None = None,
              notes: list[str] = ()) -> pd.DataFrame:
    """One row per column (:func:`label_columns`; normally one per method) and dataset / IPC:
    mean, std (ddof 0), n, timings, the paper's figure, and what the column changed from the
    published budgets and recipes (``changes``, with its ``mark`` in every table cell)."""
    if not records:
        return pd.DataFrame()
    labelled = label_columns(records)[0]
    frame = pd.DataFrame(labelled)
    if "eval.augment" not in frame:   # records of older code
        frame["eval.augment"] = None
    if "eval_model" not in frame:
        frame["eval_model"] = frame["model"] if "model" in frame else ""
    keys = ["dataset", "ipc", "eval_model", "group", "order", "method", "column", "table_name"]
    summary = frame.groupby(keys, sort=False).agg(
        mean=("test_accuracy", "mean"), std=("test_accuracy", lambda s: s.std(ddof=DDOF)),
        n=("test_accuracy", "size"), seeds=("seed", "nunique"),
        build_seconds=("build_seconds", "mean"), retrain_seconds=("retrain_seconds", "mean"),
        peak_memory_mb=("peak_memory_mb", "max"), needs=("needs", "first"),
        eval_recipe=("eval.name", "first"), eval_epochs=("eval.epochs", "first"),
        eval_augment=("eval.augment", "first"),
    ).reset_index()
    for column in ("pretrained_agreement", "lambda_class_acc_pearson"):
        if column in frame:
            summary[column] = frame.groupby(keys, sort=False)[column].mean().values
    if "peak_memory_raised" in frame:   # did any of the column's builds raise the process's peak (older records: unknown)
        raised = frame.assign(raised=frame["peak_memory_raised"].map(lambda v: v is not False))
        summary["peak_memory_raised"] = raised.groupby(keys, sort=False)["raised"].any().values
    refs = [reference_for(reference_dataset or row.dataset, row.ipc, row.method)
            for row in summary.itertuples()]
    summary["paper_mean"] = [r[0] if r else None for r in refs]
    summary["paper_std"] = [r[1] if r else None for r in refs]
    summary["paper_source"] = [r[2] if r else None for r in refs]
    summary["delta"] = summary["mean"] - summary["paper_mean"].astype(float)
    summary["reference_dataset"] = [reference_dataset or row.dataset for row in summary.itertuples()]
    first = {}
    for record in labelled:   # the records of one column share its recipes (label_columns splits them)
        first.setdefault((record["dataset"], record["ipc"], record.get("eval_model", ""), record["column"]), record)
    summary["changes"] = ["; ".join(deviations(first[(row.dataset, row.ipc, row.eval_model, row.column)],
                                               row.reference_dataset, notes)) for row in summary.itertuples()]
    summary["group_rank"] = summary["group"].map({"selection": 0, "synthesis": 1}).fillna(2)
    summary["model_rank"] = [ARCHITECTURE_ORDER.index(m) if m in ARCHITECTURE_ORDER else len(ARCHITECTURE_ORDER)
                             for m in summary["eval_model"]]
    summary = summary.sort_values(["dataset", "ipc", "model_rank", "eval_model", "group_rank", "order", "method",
                                   "column"], kind="stable").drop(columns=["group_rank", "model_rank"]).reset_index(drop=True)
    marks = mark_columns(list(dict.fromkeys((row.column, row.changes) for row in summary.itertuples())))
    summary["mark"] = [marks.get(row.column, "") if row.changes else "" for row in summary.itertuples()]
    return summary


def block_label(block: pd.DataFrame) -> str:
    """A dataset/IPC block's dataset name: the dataset the data stands for (``--reference-dataset``,
    e.g. ``cifar10`` for a JPEG folder of it) when given, else the data's own name."""
    return str(block["reference_dataset"].iloc[0] if "reference_dataset" in block else block["dataset"].iloc[0])


def published_lines(summary: pd.DataFrame) -> list[str]:
    """Per dataset/IPC block, the published cells of what the suite does not run (LD, the whole dataset)."""
    lines = []
    for (dataset, ipc), block in summary.groupby(["dataset", "ipc"], sort=False):
        cells = published_only(block_label(block), int(ipc))
        if cells:
            lines.append(f"published, not run here, {block_label(block)} IPC={ipc}: " + "; ".join(
                f"{what} {mean:.1f} ± {std:.1f} ({source})" for what, mean, std, source in cells))
    return lines


def mark_lines(summary: pd.DataFrame) -> list[str]:
    """One line per mark: what its column changed from the published budgets and recipes."""
    lines = []
    for row in summary.drop_duplicates(["column", "mark"]).itertuples():
        if row.mark:
            lines.append(f"[{row.mark}] {row.table_name}: CHANGED FROM THE PUBLISHED SETUP: {row.changes}")
    return list(dict.fromkeys(lines))


def _cell(mean: Any, std: Any, n: Any = None, mark: str = "") -> str:
    """``mean ± std`` at one decimal (ours and the papers' alike); one model: ``mean (1 seed)``, as
    its spread is not a spread; ``[mark]`` when the column changed a published budget or recipe."""
    if mean is None or pd.isna(mean):
        return "–"
    text = f"{mean:.1f} (1 seed)" if n is not None and int(n) == 1 else f"{mean:.1f} ± {std:.1f}"
    return f"{text} [{mark}]" if mark else text


def signed(value: float, digits: int = 1) -> str:
    """``+1.0`` / ``−1.0`` with a true minus sign."""
    return f"{value:+.{digits}f}".replace("-", "−")


def _refs(figures: dict[str, Any], method: str) -> str:
    return _cell(*figures[method][:2]) if method in figures else "–"


def _has_any(block: pd.DataFrame, figures: dict[str, Any]) -> bool:
    return any(method in figures for method in block["method"])


def table_rows(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Table 1's layout: a column per method (selection, then synthesis); per dataset/IPC the
    rows ours / paper / Δ / eval recipe."""
    methods = list(dict.fromkeys(summary["column"]))
    names = summary.drop_duplicates("column").set_index("column")
    header = ["", *[f"{names.loc[m, 'table_name']}" for m in methods]]
    rows = [["group", *[GROUP_TITLES.get(names.loc[m, "group"], names.loc[m, "group"]) for m in methods]]]
    cross = summary["eval_model"].nunique() > 1   # a cross-architecture table: a block per retrained architecture
    for (dataset, ipc, model), block in summary.groupby(["dataset", "ipc", "eval_model"], sort=False):
        by_method = block.set_index("column")
        def line(label, fn):
            return [label, *[fn(by_method.loc[m]) if m in by_method.index else "" for m in methods]]
        rows.append(line(f"{block_label(block)} IPC={ipc}{f' {model}' if cross else ''}: ours", lambda r: _cell(r["mean"], r["std"], r["n"], r["mark"])))
        references = _reference_rows(block, ipc)
        if block["paper_mean"].notna().any():
            rows.append(line(f"paper: {references[0][0]}", lambda r: _cell(r["paper_mean"], r["paper_std"])
                             if pd.notna(r["paper_mean"]) else "–"))
            rows.append(line("Δ (ours − paper)", lambda r: signed(r["delta"]) if pd.notna(r["delta"]) else "–"))
        for label, figures in references[1:]:
            if _has_any(block, figures):   # a row of dashes says nothing
                rows.append(line(f"also: {label}", lambda r, f=figures: _refs(f, r["method"])))
        rows.append(line("retrained with", retrained_with))
        rows.append(line("models (seeds)", lambda r: f"{int(r['n'])} ({int(r['seeds'])})"))
        rows += [line(label, cell) for label, cell in score_lines(block)]   # IOR / HLR / DDRS (dsvbench.scores)
    return header, rows


def retrained_with(row: Any) -> str:
    """The retraining recipe with what tells it apart: epochs and augmentation (a DSA-evaluated
    column does not read like DC's)."""
    augment = row["eval_augment"] if "eval_augment" in row and pd.notna(row["eval_augment"]) else "none"
    return f"{row['eval_recipe']} ({int(row['eval_epochs'])} ep, " + ("no aug)" if augment == "none" else f"{augment} aug)")


def _reference_rows(block: pd.DataFrame, ipc: int) -> list[tuple[str, dict[str, Any]]]:
    """The published rows of one dataset/IPC block (primary first, :func:`reference_rows`); the primary
    row is labelled by the sources of the block's own cells (``DC Table 1 / DSA Table 1``)."""
    dataset = block["reference_dataset"].iloc[0] if "reference_dataset" in block else block["dataset"].iloc[0]
    rows = reference_rows(dataset, int(ipc)) or [("paper", {})]
    sources = [s for s in dict.fromkeys(block["paper_source"]) if isinstance(s, str)] if "paper_source" in block else []
    return [(" / ".join(sources) or rows[0][0], rows[0][1]), *rows[1:]]


def details_rows(summary: pd.DataFrame) -> tuple[list[str], list[list[Any]]]:
    header = ["method", "needs", "build s (mean)", "retrain s (mean)", "peak MB", "θ* agrees %",
              "ρ(Σλ, class acc)"]
    rows = []
    grid = summary["ipc"].nunique() > 1   # an IPC grid: say which IPC each line is
    cross = summary["eval_model"].nunique() > 1
    for row in summary.itertuples():
        where = ", ".join(([f"IPC {row.ipc}"] if grid else []) + ([str(row.eval_model)] if cross else []))
        rows.append([f"{row.column} ({where})" if where else row.column, row.needs,
                     f"{row.build_seconds:.1f}", f"{row.retrain_seconds:.1f}",
                     ("" if getattr(row, "peak_memory_raised", True) is not False else "≤ ") + f"{row.peak_memory_mb:.0f}",
                     _maybe(row, "pretrained_agreement", "{:.0f}"),
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
    notes = [*mark_lines(summary), *notes, *summary.attrs.get("notes", []), *protocol_note(summary),
             *published_lines(summary)]
    header, rows = table_rows(summary)
    dheader, drows = details_rows(summary)
    parts = [tabulate(rows, header, tablefmt="simple"), "", tabulate(drows, dheader, tablefmt="simple"),
             "", STD_NOTE, *notes]
    return "\n".join(parts)


def render_markdown(summary: pd.DataFrame, notes: list[str] = ()) -> str:
    notes = [*mark_lines(summary), *notes, *summary.attrs.get("notes", []), *protocol_note(summary),
             *published_lines(summary)]
    header, rows = table_rows(summary)
    dheader, drows = details_rows(summary)
    notes_md = "".join(f"\n- {n}" for n in (STD_NOTE, *notes))
    return (tabulate(rows, header, tablefmt="github") + "\n\n" + tabulate(drows, dheader, tablefmt="github")
            + "\n" + notes_md + "\n")


def render_latex(summary: pd.DataFrame, notes: list[str] = ()) -> str:
    """booktabs table with a \\cmidrule per group, ready to paste: a cell whose column changed a
    published budget or recipe carries its mark ($^{a}$), explained under the table with the run's
    other notes (reduced or changed budgets, presets, the code it came from), so a pasted table says
    what the markdown one says.  :func:`render_latex_narrow` is the one-column layout."""
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
    _, rows = table_rows(summary)
    for row in rows[1:]:   # the Markdown table's rows (its group row is the header here), in LaTeX
        label = row[0]
        label = (_tex(label[:-len(": ours")].replace(" IPC=", " / ")) if label.endswith(": ours")
                 else r"\quad " + _tex(label.removeprefix("also: ").removeprefix("paper: ")))
        lines.append(" & ".join([label, *map(_tex, row[1:])]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join([*lines, *_latex_notes(summary, notes), ""])


def render_latex_narrow(summary: pd.DataFrame, notes: list[str] = ()) -> str:
    """The same cells for one article column: a row per method, per dataset/IPC two columns (ours,
    the paper's), the retraining recipe of each column in the notes."""
    blocks = list(summary.groupby(["dataset", "ipc", "eval_model"], sort=False))
    cross = summary["eval_model"].nunique() > 1
    lines = [r"\begin{tabular}{l" + "cc" * len(blocks) + "}", r"\toprule",
             " & " + " & ".join(rf"\multicolumn{{2}}{{c}}{{{_tex(block_label(b))} / {ipc}"
                                + (f" / {_tex(model)}" if cross else "") + "}"
                                for (_, ipc, model), b in blocks) + r" \\",
             " ".join(rf"\cmidrule(lr){{{2 + 2 * i}-{3 + 2 * i}}}" for i in range(len(blocks))),
             "Method" + " & ours & paper" * len(blocks) + r" \\", r"\midrule"]
    for column in dict.fromkeys(summary["column"]):
        cells = []
        for _, block in blocks:
            row = block.set_index("column").loc[column] if column in set(block["column"]) else None
            cells += ["", ""] if row is None else [
                _cell(row["mean"], row["std"], row["n"], row["mark"]),
                _cell(row["paper_mean"], row["paper_std"]) if pd.notna(row["paper_mean"]) else "–"]
        name = summary.loc[summary["column"] == column, "table_name"].iloc[0]
        lines.append(" & ".join(_tex(c) for c in [name, *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    retrain = "; ".join(dict.fromkeys(f"{row['table_name']}: {retrained_with(row)}" for _, row in summary.iterrows()))
    return "\n".join([*lines, *_latex_notes(summary, [f"retrained with: {retrain}", *notes]), ""])


def _latex_notes(summary: pd.DataFrame, notes: list[str]) -> list[str]:
    every = [*mark_lines(summary), *notes, *summary.attrs.get("notes", []), *protocol_note(summary),
             *published_lines(summary), STD_NOTE]
    return [r"\par\smallskip"] + [rf"\par{{\footnotesize {_tex(note)}}}" for note in every]


# LaTeX for the characters the tables and notes use (pdflatex reads only ASCII safely)
_TEX_TEXT = {"\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$",
             "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_SYMBOLS = {"±": r"$\pm$", "−": r"$-$", "–": "--", "—": "---", "×": r"$\times$", "Δ": r"$\Delta$",
                "θ": r"$\theta$", "λ": r"$\lambda$", "α": r"$\alpha$", "β": r"$\beta$", "γ": r"$\gamma$",
                "ρ": r"$\rho$", "σ": r"$\sigma$", "Σ": r"$\Sigma$", "∇": r"$\nabla$", "≈": r"$\approx$",
                "≤": r"$\leq$", "≥": r"$\geq$", "→": r"$\rightarrow$", "·": r"$\cdot$", "‖": r"$\|$",
                "∞": r"$\infty$", "’": "'", "“": "``", "”": "''", "…": "...", "μ": r"$\mu$", "ε": r"$\epsilon$",
                "²": r"$^2$", "φ": r"$\phi$", "η": r"$\eta$", "τ": r"$\tau$", "ς": r"$\varsigma$"}


def _tex(text: Any) -> str:
    """``text`` as LaTeX that pdflatex compiles: specials escaped, the symbols above as math, a cell's
    mark ``[a]`` as a superscript, any other non-ASCII character as ``?``."""
    import re
    out = "".join(_TEX_TEXT.get(ch, ch) for ch in str(text)).replace("--", "-{}-")   # --flag, not an en dash
    out = "".join(_TEX_SYMBOLS.get(ch, ch if ord(ch) < 128 else "?") for ch in out)
    return re.sub(r"(?:^| )\[([a-z]+[0-9]*)\]", r"$^{\1}$", out)


def write_outputs(out: Path | str, records: list[dict[str, Any]], run_info: dict[str, Any],
                  notes: list[str] = (), reference_dataset: str | None = None,
                  full_data: list[dict[str, Any]] | None = None, ddrs_weight: float = 0.5) -> pd.DataFrame:
    """Write results.csv, summary.csv, table.md, table.tex and run.json into ``out``; the summary carries
    the DD-Ranking scores (:func:`dsvbench.scores.add_scores`, their notes in ``summary.attrs``)."""
    out = Path(out)
    summary = summarize(records, reference_dataset, notes)
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
        atomic_write_text(out / "table-narrow.tex", render_latex_narrow(summary, notes))
        atomic_write_json(out / "run.json", {**run_info, "notes": list(notes), "score_notes": score_notes,
                                             "std": STD_NOTE})
    except OSError:
        remove_outputs(out)
        raise
    return summary


OUTPUT_FILES = ("results.csv", "summary.csv", "table.md", "table.tex", "table-narrow.tex", "run.json", "report.html")


def remove_outputs(out: Path | str) -> None:
    """Remove the run-level outputs (never the records): after a failed write, no table or
    run.json that looks complete is left beside records that would not produce it."""
    for name in OUTPUT_FILES:
        try:
            (Path(out) / name).unlink(missing_ok=True)
        except OSError:
            pass
