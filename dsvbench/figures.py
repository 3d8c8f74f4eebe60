"""Figures of a run, drawn from its output folders alone (``summary``, ``sets/*.json``, ``sets/*.png``),
so that ``--from`` draws them as the run did.

``<out>/figures/``: ``table.png`` (the table as bars with error bars, the paper's figures as markers),
``fig3_dsvg_dynamics.png`` (the paper's Fig. 3: entropy, primal, stationarity residual and survivors
over the steps of each ``dsvg`` seed), ``fig4_dsvs_lambda_vs_accuracy.png`` (the paper's Fig. 4: per
class, Σλ against θ*'s test accuracy, with Pearson's ρ, for ``dsvs``) and ``sets.png`` (the condensed
sets side by side: a row per method, a column per class). Each is drawn only when its data is there.

matplotlib is optional (the ``plots`` extra) and imported only here; figures are drawn on Agg
canvases (``Figure.savefig``, no pyplot, no window, no global state). Without matplotlib a run says
so in one line and goes on.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .atomic import atomic_write_bytes, read_json_object
from .images import class_rows
from .registry import first_line, say

DPI = 100
FILES = {"table": "table.png", "fig3": "fig3_dsvg_dynamics.png", "fig4": "fig4_dsvs_lambda_vs_accuracy.png",
         "sets": "sets.png"}
TABLE_SIZE = (10.0, 4.5)        # inches; the height is per dataset / IPC block
FIG3_SIZE = (10.0, 7.0)
FIG4_SIZE = (6.0, 5.0)
SETS_MARGIN = (1.75, 0.5)       # inches left of the rows (method names) / above them (class names)
GROUP_COLORS = {"selection": "#4c72b0", "synthesis": "#dd8452"}
# Fig. 3's panels: (history field, panel title)
DYNAMICS = (("entropy", "prediction entropy of the candidates"), ("primal", "primal loss (Eq. 7)"),
            ("residual_l1", "stationarity residual ‖θ* + Σλ∇θL‖₁ / ‖θ*‖₁"), ("alive", "survivors (λ ≥ 0)"))


@dataclass(frozen=True)
class StoredSet:
    """One exported set: ``sets/<method>-seed<seed>.json`` and its grid ``.png`` (None when missing)."""
    method: str
    seed: int
    metadata: dict[str, Any]
    grid: Path | None


def wanted_sets(records: list[dict[str, Any]]) -> dict[tuple[str, int], set]:
    """(method, seed) -> the set keys the table's records were retrained on."""
    wanted: dict[tuple[str, int], set] = {}
    for record in records:
        wanted.setdefault((record["method"], record["seed"]), set()).add(record.get("set_key"))
    return wanted


def find_sets(folders: list[Path | str], records: list[dict[str, Any]] | None = None
              ) -> dict[str, dict[int, StoredSet]]:
    """method -> seed -> stored set, over the ``sets/`` of every folder (the first folder wins); with
    ``records``, only the sets the table's records come from (a json naming another set key is a set
    an earlier command with another recipe left there).  An IPC grid's sets (``sets/ipc<k>/``) count
    after the top-level ones, smallest IPC first: the figures show the grid's first IPC."""
    wanted = wanted_sets(records) if records is not None else None
    found: dict[str, dict[int, StoredSet]] = {}
    for folder in folders:
        sets = Path(folder) / "sets"
        grid = sorted(sets.glob("ipc*/*-seed*.json"), key=lambda p: (int(p.parent.name[3:] or 0)
                                                                      if p.parent.name[3:].isdigit() else 0, p.name))
        for path in sorted(sets.glob("*-seed*.json")) + grid:
            match = re.fullmatch(r"(.+)-seed(\d+)\.json", path.name)
            method, seed = (match.group(1), int(match.group(2))) if match else ("", -1)
            if not match or seed in found.get(method, {}) or (wanted is not None and (method, seed) not in wanted):
                continue
            metadata = read_json_object(path)
            if metadata is None:
                say(f"{path} is unreadable; its set is left out of the figures")
                continue
            if wanted is not None and "set_key" in metadata and metadata["set_key"] not in wanted[(method, seed)]:
                continue
            grid = path.with_suffix(".png")
            found.setdefault(method, {})[seed] = StoredSet(method, seed, metadata, grid if grid.exists() else None)
    return {method: dict(sorted(seeds.items())) for method, seeds in found.items()}


def load_matplotlib() -> Any | None:
    """``matplotlib.figure.Figure``, or None after one line saying why figures are skipped."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        print(f"dsvbench: figures skipped: matplotlib is not available ({error}); "
              "pip install 'dsvbench[plots]' to draw them", flush=True)
        return None
    return Figure


def write_figures(out: Path | str, summary: pd.DataFrame, sets: dict[str, dict[int, StoredSet]],
                  run_info: dict[str, Any] | None = None) -> dict[str, Path] | None:
    """Draw every figure whose data is there into ``<out>/figures/`` (a figure of an earlier render
    whose data is gone is removed); name -> path written, None when matplotlib is missing."""
    figure_class = load_matplotlib()
    if figure_class is None:
        return None
    info = run_info or {}
    drawers: dict[str, Callable[[], Any]] = {
        "table": lambda: draw_table(figure_class, summary),
        "fig3": lambda: draw_dynamics(figure_class, sets.get("dsvg", {}), info),
        "fig4": lambda: draw_lambda_accuracy(figure_class, sets.get("dsvs", {})),
        "sets": lambda: draw_sets(figure_class, summary, sets, info),
    }
    written = {}
    for name, draw in drawers.items():
        path = Path(out) / "figures" / FILES[name]
        try:
            figure = draw()
            if figure is not None:
                written[name] = save_png(figure, path)
        except Exception as error:  # noqa: BLE001 - a figure must not cost the run its tables
            say(f"figure {path} not drawn ({first_line(error, with_type=True)})")
        if name not in written:
            path.unlink(missing_ok=True)
    return written


def save_png(figure: Any, path: Path) -> Path:
    """The figure as a PNG of exactly figsize × DPI pixels (no tight bounding box), written atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return atomic_write_bytes(path, buffer.getvalue())


def draw_table(figure_class: Any, summary: pd.DataFrame) -> Any | None:
    """A bar per column (mean ± std over seeds × evals), the paper's mean ± std as black diamonds."""
    if summary.empty:
        return None
    keys = ["dataset", "ipc"] + (["eval_model"] if "eval_model" in summary and summary["eval_model"].nunique() > 1 else [])
    blocks = list(summary.groupby(keys, sort=False))
    figure = figure_class(figsize=(TABLE_SIZE[0], TABLE_SIZE[1] * len(blocks)), dpi=DPI, layout="constrained")
    for ax, ((dataset, ipc, *model), block) in zip(figure.subplots(len(blocks), 1, squeeze=False)[:, 0], blocks):
        x = np.arange(len(block))
        ax.bar(x, block["mean"], yerr=block["std"], capsize=4, edgecolor="black", linewidth=0.5,
               color=[GROUP_COLORS.get(g, "#8c8c8c") for g in block["group"]])
        paper = pd.to_numeric(block["paper_mean"], errors="coerce").to_numpy(dtype=float)
        paper_std = pd.to_numeric(block["paper_std"], errors="coerce").to_numpy(dtype=float)
        if np.isfinite(paper).any():
            ax.errorbar(x, paper, yerr=np.nan_to_num(paper_std), fmt="D", color="black", capsize=3,
                        markersize=6, label="paper (mean ± std)")
        for xi, mean in zip(x, block["mean"]):
            ax.annotate(f"{mean:.1f}", (xi, mean), ha="center", va="bottom", fontsize=8,
                        xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(x, [str(name) for name in block["table_name"]])
        ax.set_ylim(0, 100)
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{dataset} IPC={ipc}{''.join(f' {m}' for m in model)}: ours (bars: mean ± std over seeds × evals, ddof 0)")
        ax.grid(axis="y", alpha=0.3)
        handles = [_patch(color, f"ours, {group}") for group, color in GROUP_COLORS.items()
                   if group in set(block["group"])]
        ax.legend(handles=handles + ax.get_legend_handles_labels()[0], loc="upper left", fontsize=8)
    return figure


def _patch(color: str, label: str) -> Any:
    from matplotlib.patches import Patch
    return Patch(facecolor=color, edgecolor="black", linewidth=0.5, label=label)


def draw_dynamics(figure_class: Any, seeds: dict[int, StoredSet], run_info: dict[str, Any]) -> Any | None:
    """Fig. 3: four panels over the synthesis steps, one line per ``dsvg`` seed (``history`` in its json)."""
    histories = {seed: s.metadata["history"] for seed, s in seeds.items()
                 if isinstance(s.metadata.get("history"), list) and s.metadata["history"]}
    if not histories:
        return None
    figure = figure_class(figsize=FIG3_SIZE, dpi=DPI, layout="constrained")
    lowres = (run_info.get("recipes") or {}).get("dsvg", {}).get("lowres_steps")
    for ax, (field, title) in zip(figure.subplots(2, 2).ravel(), DYNAMICS):
        for index, (seed, rows) in enumerate(histories.items()):
            points = [(row["step"], row[field]) for row in rows if field in row and "step" in row]
            if points:
                ax.plot(*zip(*points), marker="o", markersize=2.5, color=f"C{index % 10}", label=f"seed {seed}")
        if isinstance(lowres, (int, float)) and 0 < lowres < max(r[-1].get("step", 0) for r in histories.values()):
            ax.axvline(lowres, color="grey", linestyle="--", linewidth=1, label="low → full resolution")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    figure.axes[0].legend(fontsize=8)
    figure.suptitle("Fig. 3 (DSVg): the candidates' dynamics over the synthesis steps, one line per seed")
    return figure


def lambda_accuracy_points(seeds: dict[int, StoredSet]) -> dict[int, tuple[np.ndarray, np.ndarray, float]]:
    """seed -> (Σλ per class, θ*'s per-class test accuracy, Pearson ρ), for the seeds whose json has both."""
    points = {}
    for seed, stored in seeds.items():
        sums, accuracy = stored.metadata.get("class_lambda_sums"), stored.metadata.get("theta_class_test_accuracy")
        if isinstance(sums, list) and isinstance(accuracy, list) and len(sums) == len(accuracy) > 1:
            x, y = np.asarray(sums, dtype=float), np.asarray(accuracy, dtype=float)
            rho = float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else float("nan")
            points[seed] = (x, y, rho)
    return points


def draw_lambda_accuracy(figure_class: Any, seeds: dict[int, StoredSet]) -> Any | None:
    """Fig. 4: per class, the sum of λ against θ*'s test accuracy, one color per ``dsvs`` seed, ρ each."""
    points = lambda_accuracy_points(seeds)
    if not points:
        return None
    figure = figure_class(figsize=FIG4_SIZE, dpi=DPI, layout="constrained")
    ax = figure.subplots()
    for index, (seed, (x, y, rho)) in enumerate(points.items()):
        ax.scatter(x, y, s=28, color=f"C{index % 10}", alpha=0.8, edgecolor="black", linewidth=0.3,
                   label=f"seed {seed}: ρ = {_signed(rho)}")
    rhos = [rho for _, _, rho in points.values() if np.isfinite(rho)]
    mean_rho = _signed(float(np.mean(rhos))) if rhos else "n/a"
    ax.set_title(f"Fig. 4 (DSVs): Σλ per class vs θ*'s class test accuracy\n"
                 f"Pearson ρ = {mean_rho} (mean over {len(points)} seed(s))", fontsize=10)
    ax.set_xlabel("Σλ of the class's training images")
    ax.set_ylabel("θ* test accuracy of the class (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return figure


def _signed(value: float) -> str:
    return f"{value:+.2f}" if np.isfinite(value) else "n/a"


def set_rows(summary: pd.DataFrame, sets: dict[str, dict[int, StoredSet]],
             ipc: int) -> list[tuple[str, StoredSet, list[np.ndarray]]]:
    """(row label, set, one image strip per class) per method of the table, from its first seed's grid."""
    names = dict(zip(summary["method"], summary["table_name"])) if not summary.empty else {}
    rows = []
    for method in [*names, *(m for m in sets if m not in names)]:
        stored = next((s for s in sets.get(method, {}).values() if s.grid is not None), None)
        if stored is None:
            continue
        classes = len(stored.metadata.get("class_names") or []) or _classes_from_grid(stored.grid, ipc)
        rows.append((f"{names.get(method, method)} (seed {stored.seed})", stored, class_rows(stored.grid, classes)))
    return rows


def _classes_from_grid(grid: Path, ipc: int) -> int:
    """The rows of a grid written before its json named the classes: square cells, ``ipc`` per row."""
    from PIL import Image
    from .images import PADDING
    width, height = Image.open(grid).size
    return max(1, round((height - PADDING) / ((width - PADDING) / max(ipc, 1))))


def sets_size(methods: int, classes: int, per_class: int = 1) -> tuple[float, float]:
    """Inches of ``sets.png``: a square cell per image (1, ½ or ¼ inch: whole pixels at any DPI that is
    a multiple of 4), plus the margins for the names."""
    images = classes * per_class
    cell = 1.0 if images <= 20 else 0.5 if images <= 40 else 0.25
    return SETS_MARGIN[0] + cell * images, SETS_MARGIN[1] + cell * methods


def draw_sets(figure_class: Any, summary: pd.DataFrame, sets: dict[str, dict[int, StoredSet]],
              run_info: dict[str, Any]) -> Any | None:
    """The condensed sets side by side: a row per method (its first seed), a column per class."""
    rows = set_rows(summary, sets, int((run_info.get("config") or {}).get("ipc") or 1))
    if not rows:
        return None
    classes = max(len(strips) for _, _, strips in rows)
    per_class = max(round(s.shape[1] / max(s.shape[0], 1)) for _, _, strips in rows for s in strips)
    width, height = sets_size(len(rows), classes, max(per_class, 1))
    figure = figure_class(figsize=(width, height), dpi=DPI)
    figure.subplots_adjust(left=SETS_MARGIN[0] / width, right=1 - 0.1 / width, bottom=0.1 / height,
                           top=1 - SETS_MARGIN[1] / height, wspace=0.05, hspace=0.05)
    axes = figure.subplots(len(rows), classes, squeeze=False)
    names = next((s.metadata.get("class_names") for _, s, _ in rows if s.metadata.get("class_names")), None)
    for r, (label, _, strips) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            if c < len(strips):
                ax.imshow(strips[c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if r == 0:
                ax.set_title(str(names[c]) if names and c < len(names) else f"class {c}",
                             fontsize=8 if classes <= 20 else 5)
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    return figure
