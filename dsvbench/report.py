"""``<out>/report.html``: one self-contained page (PNGs inlined as data: URIs, CSS inline, no links
needed) with the table (ours beside the paper's, Δ), the notes (reduced budgets first, in a banner),
the figures of :mod:`dsvbench.figures`, every set's image grid and the run's provenance (``run.json``).

Written after the tables by a run and by ``--from`` (which regenerates it from the stored folders).
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from .atomic import atomic_write_text, read_json_object
from .figures import FILES, StoredSet, find_sets, write_figures
from .results import STD_NOTE, details_rows, mark_lines, table_rows

CAPTIONS = {
    "table": "The table as bars: ours (mean ± std over seeds × evals, population std) and the paper's "
             "figures as black diamonds with their std.",
    "fig3": "Fig. 3 of the paper, for DSVg: prediction entropy of the candidates, primal loss (Eq. 7), relative "
            "stationarity residual and survivors (λ ≥ 0) over the synthesis steps, one line per seed (the dashed "
            "line: low → full resolution). The paper reports a rising entropy.",
    "fig4": "Fig. 4 of the paper, for DSVs: per class, the sum of λ over its training images against θ*'s test "
            "accuracy on that class, one color per seed, Pearson ρ per seed in the legend.",
    "sets": "The condensed sets side by side: one row per method (its first seed, named in the row), one column "
            "per class.",
}
# notes that change what the numbers mean: shown in a banner above the table
WARNING_PREFIXES = ("REDUCED", "CHANGED", "PRESET", "SEPARATE COLUMNS", "every column")
STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
thead th { background: #f0f0f0; }
.banner { background: #fff3cd; border: 2px solid #e0a800; padding: .6em 1em; margin: 1em 0; }
.banner strong { color: #8a5a00; }
li.warn { font-weight: bold; color: #8a5a00; }
figure { margin: 1em 0; } figcaption { font-size: .9em; color: #555; max-width: 900px; }
img { max-width: 100%; height: auto; image-rendering: pixelated; border: 1px solid #eee; }
.grids { display: flex; flex-wrap: wrap; gap: 1em; } .grids figure { margin: 0; }
.grids img { height: 320px; width: auto; max-width: none; }
pre { background: #f7f7f7; padding: .6em; overflow-x: auto; font-size: .85em; }
"""


def render_report(out: Path | str, summary: pd.DataFrame, records: list[dict[str, Any]],
                  set_folders: list[Path | str]) -> Path:
    """Draw the figures (when matplotlib is there) and write ``<out>/report.html`` from the run's
    outputs: ``summary``, the ``run.json`` just written into ``out``, and the sets in ``set_folders``."""
    out = Path(out)
    info = _read_json(out / "run.json")
    sets = find_sets(set_folders, records)
    figures = write_figures(out, summary, sets, info)
    page = report_html(summary, info, figures, sets)
    return atomic_write_text(out / "report.html", page)


def report_html(summary: pd.DataFrame, info: dict[str, Any], figures: dict[str, Path] | None,
                sets: dict[str, dict[int, StoredSet]]) -> str:
    """The page: title, banner, tables, notes, figures, grids, provenance."""
    title = "dsvbench: " + ", ".join(f"{d} IPC={i}" for d, i in dict.fromkeys(zip(summary["dataset"], summary["ipc"])))
    notes = [*mark_lines(summary), *(str(n) for n in info.get("notes", []))]
    header, rows = table_rows(summary)
    dheader, drows = details_rows(summary)
    body = [f"<h1>{_e(title)}</h1>", _banner(notes),
            "<h2>Table: ours beside the paper</h2>", tabulate(rows, header, tablefmt="html"),
            f"<p>{_e(STD_NOTE)}. Δ = ours − paper, in points. {_no_paper(summary)}</p>",
            "<h3>Per column</h3>", tabulate(drows, dheader, tablefmt="html"),
            "<h2>Notes</h2>", _notes(notes), "<h2>Figures</h2>", _figures(figures),
            "<h2>Condensed sets</h2>", _grids(summary, sets), "<h2>Provenance</h2>", _provenance(info)]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(part for part in body if part) + "\n</body>\n</html>\n")


def _no_paper(summary: pd.DataFrame) -> str:
    """Say so when a dataset has no published figures (digits, an image folder without --reference-dataset)."""
    missing = summary.loc[pd.to_numeric(summary["paper_mean"], errors="coerce").isna(), "dataset"].unique()
    return (f"<strong>No published figure for {_e(', '.join(map(str, missing)))}</strong> in some or all columns "
            "(a copy of a paper dataset takes the paper's figures with <code>--reference-dataset</code>)."
            if len(missing) else "")


def _e(text: Any) -> str:
    return html.escape(str(text))


def _is_warning(note: str) -> bool:
    return note.startswith(WARNING_PREFIXES)


def _banner(notes: list[str]) -> str:
    warnings = [n for n in notes if _is_warning(n)]
    if not warnings:
        return ""
    items = "".join(f"<li>{_e(n)}</li>" for n in warnings)
    return (f"<div class=\"banner\"><strong>Not the published setup: {len(warnings)} change(s) to budgets or "
            f"recipes; compare with the paper accordingly.</strong><ul>{items}</ul></div>")


def _notes(notes: list[str]) -> str:
    if not notes:
        return "<p>None.</p>"
    return "<ul>" + "".join(f"<li class=\"warn\">{_e(n)}</li>" if _is_warning(n) else f"<li>{_e(n)}</li>"
                            for n in notes) + "</ul>"


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _figures(figures: dict[str, Path] | None) -> str:
    if figures is None:
        return ("<p><strong>Figures skipped:</strong> matplotlib is not installed "
                "(<code>pip install 'dsvbench[plots]'</code>, then re-render with <code>--from</code>).</p>")
    parts = [f"<figure><img src=\"{data_uri(path)}\" alt=\"{_e(FILES[name])}\">"
             f"<figcaption><code>figures/{_e(FILES[name])}</code>: {_e(CAPTIONS[name])}</figcaption></figure>"
             for name, path in figures.items()]
    missing = [FILES[name] for name in FILES if name not in figures]
    if missing:
        parts.append(f"<p>Not drawn (no data for them in this run): {_e(', '.join(missing))}.</p>")
    return "\n".join(parts)


def _grids(summary: pd.DataFrame, sets: dict[str, dict[int, StoredSet]]) -> str:
    """Every set's grid (``sets/<method>-seed<s>.png``: a row per class), a section per method."""
    names = dict(zip(summary["method"], summary["table_name"]))
    parts = []
    for method in [*names, *(m for m in sets if m not in names)]:
        stored = [s for s in sets.get(method, {}).values() if s.grid is not None]
        if not stored:
            continue
        cells = "".join(f"<figure><img src=\"{data_uri(s.grid)}\" alt=\"{_e(s.grid.name)}\">"
                        f"<figcaption>seed {s.seed}</figcaption></figure>" for s in stored)
        parts.append(f"<h3>{_e(names.get(method, method))} (<code>{_e(method)}</code>)</h3>"
                     f"<div class=\"grids\">{cells}</div>")
    return "\n".join(parts) or "<p>No set grids found (<code>sets/*.png</code>).</p>"


def _provenance(info: dict[str, Any]) -> str:
    """The run's identity as a key/value table, the longer parts of ``run.json`` folded below it."""
    if not info:
        return "<p>No readable run.json.</p>"
    config = info.get("config") or {}
    dirty = info.get("git_dirty")
    rows = [("git commit", info.get("git_commit") or "unknown (not a git checkout)"),
            ("uncommitted changes", "unknown" if dirty is None else "YES" if dirty else "no"),
            ("device", info.get("device")), ("host", info.get("host")), ("finished at", info.get("finished_at")),
            ("wall time", f"{info['wall_seconds']:.0f} s" if isinstance(info.get("wall_seconds"), (int, float))
             else None),
            ("dataset", (config.get("data") or {}).get("name")), ("seeds", config.get("seeds")),
            ("methods", config.get("methods")), ("IPC", config.get("ipc")),
            ("command", " ".join(map(str, info["command"])) if isinstance(info.get("command"), list) else None),
            ("rendered from", info.get("rendered_from")), ("left out", info.get("left_out")),
            *(((f"version of {k}", v) for k, v in (info.get("versions") or {}).items())),
            ("θ*", _theta(info.get("pretrained")))]
    table = tabulate([(k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in rows
                      if v not in (None, [], "")], ["what", "value"], tablefmt="html")
    folded = [f"<details><summary>{_e(key)}</summary><pre>{_e(json.dumps(info[key], indent=2, default=str))}"
              "</pre></details>" for key in ("config", "recipes", "eval_recipes", "method_versions", "pretrained")
              if info.get(key)]
    return table + "\n" + "\n".join(folded)


def _theta(pretrained: Any) -> str | None:
    if not isinstance(pretrained, dict):
        return None
    train, test = pretrained.get("train_accuracy"), pretrained.get("test_accuracy")
    accuracy = f"train {train:.2f} %, test {test:.2f} %" if isinstance(train, float) and isinstance(test, float) else ""
    return f"{accuracy}, {pretrained.get('epochs')} epochs, key {pretrained.get('key')}".strip(", ")


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path) or {}
