"""Aggregation and rendering: hand-checkable numbers and golden files."""
from pathlib import Path

import pytest

from dsvbench.results import render_latex, render_markdown, summarize

GOLDEN = Path(__file__).parent / "golden"


def record(method, seed, accuracy, group="selection", order=0, table_name=None):
    return {"method": method, "table_name": table_name or method, "group": group, "order": order,
            "seed": seed, "eval_index": 0, "test_accuracy": accuracy, "dataset": "cifar10", "ipc": 1,
            "build_seconds": 2.0, "retrain_seconds": 3.0, "peak_memory_mb": 100.0, "needs": "data",
            "eval.name": "dc", "eval.epochs": 300, "eval_model": "convnet"}


RECORDS = [record("random", 0, 10.0), record("random", 1, 20.0),
           record("dc", 0, 28.0, "synthesis", 1, "DC"), record("dc", 1, 30.0, "synthesis", 1, "DC"),
           record("herding", 0, 21.0, order=1), record("herding", 1, 21.0, order=1)]


def test_summary_uses_population_std_and_table1_order():
    summary = summarize(RECORDS)
    assert list(summary["method"]) == ["random", "herding", "dc"]
    random = summary.set_index("method").loc["random"]
    assert random["mean"] == 15.0 and random["std"] == 5.0          # ddof 0: sqrt(((10-15)²+(20-15)²)/2)
    assert random["paper_mean"] == 14.4 and random["delta"] == pytest.approx(0.6)


def test_reference_dataset_overrides_the_lookup():
    records = [dict(r, dataset="folder:cifar10-jpeg") for r in RECORDS]
    assert summarize(records)["paper_mean"].isna().all()
    assert summarize(records, reference_dataset="cifar10")["paper_mean"].notna().all()


@pytest.mark.parametrize("name, render", [("table.md", render_markdown), ("table.tex", render_latex)])
def test_rendered_tables_match_golden_files(name, render):
    text = render(summarize(RECORDS))
    golden = GOLDEN / name
    assert text == golden.read_text(), f"{name} changed; if intended, review and update {golden}"


def test_every_published_row_is_shown_under_ours():
    """CIFAR-10 IPC 1: DSV Table 1 first (Δ against it), then the DC paper's and the conference
    version's rows; MNIST (through --reference-dataset) has the DC paper's row only."""
    text = render_markdown(summarize(RECORDS))
    assert "paper: DSV Table 1" in text and "also: DC Table 1" in text and "also: DSV conf." in text
    herding = [line for line in text.splitlines() if line.startswith("| also: DC Table 1")][0]
    assert "21.50 ± 1.20" in herding                     # the DC paper's herding, not DSV's 21.2
    mnist = render_markdown(summarize([dict(r, dataset="digits") for r in RECORDS], reference_dataset="mnist"))
    assert "paper: DC Table 1" in mnist and "also:" not in mnist and "64.90 ± 3.50" in mnist


def test_latex_says_the_runs_notes_reduced_budgets_included():
    note = "REDUCED/CHANGED BUDGET: retraining for 2 epochs (recipe default: dc 1000)"
    latex = render_latex(summarize(RECORDS), [note])
    assert latex.rstrip().endswith(r"\par{\footnotesize " + note + "}")
    assert note not in render_latex(summarize(RECORDS))


@pytest.mark.parametrize("dataset, ipc, mean", [("mnist", 10, 97.4), ("svhn", 50, 82.3), ("fashion-mnist", 10, 82.3)])
def test_dc_table_1_cells_beyond_ipc_1_render(dataset, ipc, mean):
    records = [dict(r, dataset=dataset, ipc=ipc) for r in RECORDS]
    summary = summarize(records).set_index("method")
    assert summary.loc["dc", "paper_mean"] == mean and summary.loc["dc", "paper_source"] == "DC Table 1"
    assert f"{mean:.2f}" in render_markdown(summarize(records))
    assert summary["paper_mean"].drop("dc").isna().all()   # unread random / herding cells stay empty
