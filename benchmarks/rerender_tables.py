"""Re-render the tables of committed runs with the current rendering code (maintenance).

    python benchmarks/rerender_tables.py results/*/

A committed run keeps ``results.csv`` (its records are not committed; a local ``records/`` may come
from another run of the same configuration): its rows are read back as records, and
``summary.csv``, ``table.md``, ``table.tex``, ``table-narrow.tex`` and, where the run has one,
``report.html`` with its figures (where both were committed) are rewritten with the notes its ``run.json`` stored.
``results.csv`` and ``run.json`` are not touched.  Accuracies, keys and recipes are read, never
recomputed: only the layout and the marks can change.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd

from dsvbench.atomic import atomic_write_text
from dsvbench.report import render_report
from dsvbench.results import render_latex, render_latex_narrow, render_markdown, summarize
from dsvbench.scores import add_scores


def records_from_csv(path: Path) -> list[dict]:
    frame = pd.read_csv(path)
    rows = []
    for row in frame.to_dict("records"):
        rows.append({k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))})
    return rows


def rerender_from_csv(folder: Path) -> None:
    info = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
    notes = [n for n in info.get("notes", [])]
    config = info.get("config", {})
    records = records_from_csv(folder / "results.csv")
    summary = summarize(records, config.get("reference_dataset"), notes)
    summary, score_notes = add_scores(summary, records, [], config.get("ddrs_weight", 0.5))
    summary.attrs["notes"] = score_notes
    atomic_write_text(folder / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(folder / "table.md", render_markdown(summary, notes))
    atomic_write_text(folder / "table.tex", render_latex(summary, notes))
    atomic_write_text(folder / "table-narrow.tex", render_latex_narrow(summary, notes))
    if (folder / "report.html").exists() and (folder / "figures").is_dir():   # figures as committed
        render_report(folder, summary, records, [folder])


def main(folders: list[str]) -> int:
    for name in folders:
        folder = Path(name)
        if (folder / "results.csv").is_file():
            rerender_from_csv(folder)
            print(f"{folder}: tables re-rendered from results.csv")
        else:
            print(f"{folder}: no records or results.csv; left as it is")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
