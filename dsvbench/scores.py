"""Fair-evaluation scores of DD-Ranking (Li et al. 2025, arXiv:2505.13300; NUS-HPC-AI-Lab/DD-Ranking):
IOR, HLR and their combination DDRS, per column of the table.

* **IOR** (improvement over random) = acc(column) − acc(random) with random's sets retrained under the
  *same* evaluation recipe and architecture.  A column whose recipe random was not evaluated with
  gets no IOR ("–", said in a note): a difference across recipes would measure the recipe.
* **HLR** (hard-label recovery) = acc(full data) − acc(column): the retrained architecture trained on
  the whole training split with the column's recipe (``dsvbench.fulldata``, only with ``--scores``).
* **DDRS** = (e^α − e^−1) / (e − e^−1), α = w·IOR − (1 − w)·HLR, IOR and HLR as fractions (so
  α ∈ [−1, 1] and DDRS ∈ [0, 1]), w = 0.5 by default (``--ddrs-weight``) — DD-Ranking's README
  ("Benchmark") and ``ddranking/metrics``: ``alpha = w * ior - (1 - w) * hlr``,
  ``(np.exp(alpha) - np.exp(-1)) / (np.exp(1) - np.exp(-1))``.

As in DD-Ranking's evaluation loop, the three are computed per evaluation — here per (seed, eval
index), paired with random's record and the full-data model of the same seed — and reported as
mean ± std (population std, ddof 0, like every other cell).  DD-Ranking trains its full-data model
with a fixed per-dataset recipe; ours uses the column's own recipe, so HLR compares like with like.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from .records import label_columns

DEFAULT_WEIGHT = 0.5
SCORE_COLUMNS = ("ior_mean", "ior_std", "hlr_mean", "hlr_std", "ddrs_mean", "ddrs_std", "score_pairs",
                 "full_data_accuracy", "ddrs_weight")
NOTE = ("scores (DD-Ranking): IOR = acc − random's acc under the same retraining recipe; HLR = full-data acc "
        "(the retrained architecture on the whole training split, same recipe and seed) − acc; "
        "DDRS = (e^α − e^−1)/(e − e^−1), α = w·IOR − (1−w)·HLR with IOR, HLR as fractions, w = {w:g}; "
        "per (seed, eval), mean ± std")


def ddrs(ior: float, hlr: float, weight: float = DEFAULT_WEIGHT) -> float:
    """DD-Ranking score of one evaluation; ``ior`` and ``hlr`` in percentage points."""
    alpha = weight * ior / 100.0 - (1.0 - weight) * hlr / 100.0
    return (math.exp(alpha) - math.exp(-1.0)) / (math.e - math.exp(-1.0))


def _recipe(entry: dict[str, Any]) -> str:
    """What makes two evaluations comparable: data, IPC-free architecture and every ``eval.*`` field."""
    return json.dumps([entry.get("dataset"), entry.get("eval_model"),
                       {k: v for k, v in entry.items() if k.startswith("eval.")}], sort_keys=True, default=str)


def add_scores(summary: pd.DataFrame, records: list[dict[str, Any]], full_data: list[dict[str, Any]],
               weight: float = DEFAULT_WEIGHT) -> tuple[pd.DataFrame, list[str]]:
    """``summary`` with :data:`SCORE_COLUMNS` per column, and the notes that explain them; unchanged
    (no notes) when there is neither a random column nor a full-data accuracy to score against."""
    labelled = label_columns(records)[0]
    randoms = [r for r in labelled if r["method"] == "random"]
    if summary.empty or not (randoms or full_data):
        return summary, []
    random_acc: dict[tuple, float] = {}
    for r in randoms:   # the first random column of a recipe wins when merged runs hold several
        random_acc.setdefault((_recipe(r), r["ipc"], r["seed"], r["eval_index"]), r["test_accuracy"])
    full_acc = {(_recipe(f), f["seed"]): f["test_accuracy"] for f in full_data}
    by_column: dict[tuple, list[dict[str, Any]]] = {}
    for r in labelled:
        by_column.setdefault((r["dataset"], r["ipc"], r.get("eval_model"), r["column"]), []).append(r)
    values, unmatched = [], []
    for row in summary.itertuples():
        column_records = by_column.get((row.dataset, row.ipc, row.eval_model, row.column), [])
        scores = _column_scores(column_records, random_acc, full_acc, weight)
        values.append(scores)
        if randoms and np.isnan(scores["ior_mean"]):
            unmatched.append(f"{row.column} ({row.eval_recipe})")
    summary = summary.copy()
    for name in SCORE_COLUMNS:
        summary[name] = [v[name] for v in values]
    notes = [NOTE.format(w=weight)]
    if not randoms:
        notes.append("IOR: – everywhere, no random column among the records (add --methods random)")
    elif unmatched:
        recipes = sorted({f"{r['eval.name']}" for r in randoms})
        notes.append(f"IOR: – for {', '.join(unmatched)}: random was retrained with {', '.join(recipes)} only, "
                     "and an accuracy difference across retraining recipes would measure the recipe")
    if not full_data:
        notes.append("HLR, DDRS: – (no full-data accuracy; run with --scores to train it)")
    return summary, notes


def _column_scores(records: list[dict[str, Any]], random_acc: dict[tuple, float], full_acc: dict[tuple, float],
                   weight: float) -> dict[str, float]:
    iors, hlrs, both, fulls = [], [], [], []
    for r in records:
        random = random_acc.get((_recipe(r), r["ipc"], r["seed"], r["eval_index"]))
        full = full_acc.get((_recipe(r), r["seed"]))
        ior = None if random is None else r["test_accuracy"] - random
        hlr = None if full is None else full - r["test_accuracy"]
        iors += [] if ior is None else [ior]
        hlrs += [] if hlr is None else [hlr]
        fulls += [] if full is None else [full]
        both += [] if ior is None or hlr is None else [ddrs(ior, hlr, weight)]
    stats = {}
    for name, series in (("ior", iors), ("hlr", hlrs), ("ddrs", both)):
        stats[f"{name}_mean"] = float(np.mean(series)) if series else float("nan")
        stats[f"{name}_std"] = float(np.std(series, ddof=0)) if series else float("nan")
    stats["score_pairs"] = len(iors)
    stats["full_data_accuracy"] = float(np.mean(fulls)) if fulls else float("nan")
    stats["ddrs_weight"] = weight
    return stats


def score_lines(block: pd.DataFrame) -> list[tuple[str, Any]]:
    """(row label, cell function) of the score rows of one dataset/IPC block of the table: IOR when a
    random column was scored against, HLR and DDRS when there is a full-data accuracy."""
    if "ior_mean" not in block:
        return []
    weight = block["ddrs_weight"].iloc[0]
    lines = []
    if block["ior_mean"].notna().any():
        lines.append(("IOR (vs random, same recipe)", lambda r: _signed(r["ior_mean"], r["ior_std"], r["n"])))
    if block["hlr_mean"].notna().any():
        lines.append(("HLR (full data − ours)", lambda r: _signed(r["hlr_mean"], r["hlr_std"], r["n"])))
        lines.append((f"DDRS (w = {weight:g})", lambda r: "–" if pd.isna(r["ddrs_mean"]) else (
            f"{r['ddrs_mean']:.3f} (1 seed)" if r["n"] == 1 else f"{r['ddrs_mean']:.3f} ± {r['ddrs_std']:.3f}"
        ).replace("-", "−")))
    return lines


def _signed(mean: float, std: float, n: int = 0) -> str:
    """``+1.0 ± 0.5`` with a true minus sign; one model: ``+1.0 (1 seed)``."""
    if pd.isna(mean):
        return "–"
    return (f"{mean:+.1f} (1 seed)" if n == 1 else f"{mean:+.1f} ± {std:.1f}").replace("-", "−")
