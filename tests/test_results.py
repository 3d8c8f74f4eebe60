"""Aggregation and rendering: hand-checkable numbers and golden files."""
from pathlib import Path

import pytest

from dsvbench.results import render_latex, render_latex_narrow, render_markdown, render_text, summarize

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
    assert "21.5 ± 1.2" in herding                       # the DC paper's herding, not DSV's 21.2
    mnist = render_markdown(summarize([dict(r, dataset="digits") for r in RECORDS], reference_dataset="mnist"))
    assert "paper: DC Table 1" in mnist and "also:" not in mnist and "64.9 ± 3.5" in mnist


def test_latex_says_the_runs_notes_reduced_budgets_included():
    note = "REDUCED/CHANGED BUDGET: retraining for 2 epochs (recipe default: dc 1000)"
    latex = render_latex(summarize(RECORDS), [note])
    assert r"\par{\footnotesize " + note + "}" in latex
    assert note not in render_latex(summarize(RECORDS))


@pytest.mark.parametrize("dataset, ipc, mean", [("mnist", 10, 97.4), ("svhn", 50, 82.3), ("fashion-mnist", 10, 82.3)])
def test_dc_table_1_cells_beyond_ipc_1_render(dataset, ipc, mean):
    records = [dict(r, dataset=dataset, ipc=ipc) for r in RECORDS]
    summary = summarize(records).set_index("method")
    assert summary.loc["dc", "paper_mean"] == mean and summary.loc["dc", "paper_source"] == "DC Table 1"
    assert f"{mean:.1f} ± " in render_markdown(summarize(records))
    assert summary["paper_mean"].drop("dc").isna().all()   # unread random / herding cells stay empty


def _reduced(records, **fields):
    return [dict(r, **fields) for r in records]


@pytest.mark.parametrize("render", [render_markdown, render_text, render_latex, render_latex_narrow])
def test_a_changed_budget_is_marked_in_the_cell_of_every_output_format(render):
    """DC at 40 of its 1000 iterations and retrained 20 epochs instead of 300: its cell carries a mark
    in every format, and a line under the table says what changed; the unchanged columns carry none."""
    changed = _reduced(RECORDS[2:4], **{"recipe.iterations": 40, "eval.epochs": 20})
    summary = summarize(RECORDS[:2] + changed + RECORDS[4:])
    dc = summary.set_index("method").loc["dc"]
    assert dc["mark"] == "a" and "dc.iterations=40 (default 1000)" in dc["changes"]
    assert "retraining epochs=20 (default 300)" in dc["changes"]
    assert summary.set_index("method").loc[["random", "herding"], "mark"].eq("").all()
    text = render(summary)
    cell = "29.0 $\\pm$ 1.0$^{a}$" if "latex" in render.__name__ else "29.0 ± 1.0 [a]"
    assert cell in text
    assert "CHANGED FROM THE PUBLISHED SETUP: dc.iterations=40 (default 1000)" in text
    assert text.count("[a]" if "latex" not in render.__name__ else "$^{a}$") >= 2   # the cell and its line


def test_a_forced_retraining_recipe_is_marked():
    summary = summarize(_reduced(RECORDS[:2], **{"eval.name": "dsa", "eval.epochs": 1000, "eval.augment": "dsa"}))
    assert "retrained with dsa (published: dc)" in summary["changes"].iloc[0]


def test_one_model_says_one_seed_not_a_zero_spread():
    text = render_markdown(summarize(RECORDS[:1]))
    assert "10.0 (1 seed)" in text and "10.0 ± 0.0" not in text


def test_minus_signs_are_minus_signs_and_decimals_match():
    records = _reduced(RECORDS, **{"test_accuracy": 5.0})   # below every paper cell: Δ negative
    text = render_markdown(summarize(records))
    delta = [line for line in text.splitlines() if line.startswith("| Δ")][0]
    assert "−9.4" in delta and "-9.4" not in delta
    latex = render_latex(summarize(records))
    assert "$-$9.4" in latex and " -9" not in latex
    paper = [line for line in text.splitlines() if line.startswith("| paper")][0]
    assert "14.4 ± 2.0" in paper and "14.40" not in paper   # the paper's cells at ours' one decimal


def test_no_reference_row_of_dashes_only():
    """CIFAR-10's conference-version row has a random cell only: with random absent it is dropped."""
    text = render_markdown(summarize(RECORDS[2:]))
    assert "also: DSV conf." not in text
    assert "also: DSV conf." in render_markdown(summarize(RECORDS))


def test_retrained_with_names_augmentation_and_epochs():
    records = _reduced(RECORDS[:2], **{"eval.name": "dsa", "eval.epochs": 1000, "eval.augment": "dsa"})
    assert "dsa (1000 ep, dsa aug)" in render_markdown(summarize(records))
    assert "dc (300 ep, no aug)" in render_markdown(summarize(RECORDS))


def test_a_folder_is_labelled_by_the_dataset_it_stands_for():
    records = _reduced(RECORDS, dataset="folder:cifar10-jpeg")
    text = render_markdown(summarize(records, reference_dataset="cifar10"))
    assert "| cifar10 IPC=1: ours" in text and "folder:cifar10-jpeg IPC" not in text
    assert "cifar10 / 1" in render_latex_narrow(summarize(records, reference_dataset="cifar10"))


@pytest.mark.parametrize("render", [render_latex, render_latex_narrow])
def test_latex_is_ascii(render):
    """pdflatex reads ASCII safely: every symbol the tables and notes use is written as LaTeX."""
    text = render(summarize(RECORDS), ["θ* ≈ 1 × 2 — Δ ≥ λ → ‖x‖², 5 % & _x_"])
    assert text.isascii()
    assert r"$\theta$* $\approx$ 1 $\times$ 2 --- $\Delta$ $\geq$ $\lambda$" in text


def test_a_plug_in_registers_its_published_figures():
    from dsvbench.references import REFERENCES, register_reference
    register_reference("mymethod", "Mine Table 2", {("cifar10", 1): (30.0, 0.5)})
    try:
        records = [dict(r, method="mymethod", table_name="Mine") for r in RECORDS[:2]]
        summary = summarize(records)
        assert summary["paper_mean"].iloc[0] == 30.0 and summary["paper_source"].iloc[0] == "Mine Table 2"
        assert "| paper: Mine Table 2" in render_markdown(summary)
    finally:
        REFERENCES[("cifar10", 1)].pop("mymethod")


def test_published_cells_of_what_is_not_run_are_said_under_the_block():
    text = render_markdown(summarize(RECORDS))
    assert "published, not run here, cifar10 IPC=1: LD 25.7 ± 0.7 (DC Table 1); whole dataset 84.8 ± 0.1" in text
    assert "published, not run here" in render_latex(summarize(RECORDS))


@pytest.mark.skipif(__import__("shutil").which("pdflatex") is None, reason="pdflatex is not installed here")
@pytest.mark.parametrize("render", [render_latex, render_latex_narrow])
def test_the_latex_of_a_reduced_run_compiles_with_booktabs(tmp_path, render):
    import subprocess
    changed = _reduced(RECORDS[2:4], **{"recipe.iterations": 40, "eval.epochs": 20})
    (tmp_path / "table.tex").write_text(render(summarize(RECORDS[:2] + changed + RECORDS[4:]),
                                               ["REDUCED/CHANGED BUDGET: retraining for 20 epochs; run with --scores"]))
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}"
                                      "\\input{table.tex}\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def test_a_peak_set_before_a_columns_build_is_printed_as_an_upper_bound():
    """A CPU build's memory is the process's peak RSS at its end; where the build did not raise it (θ*, the
    polish or an earlier column set it), every output says "≤" instead of charging the column with it."""
    from dsvbench.results import details_rows
    from dsvbench.tasks import _peak_memory
    import torch
    assert _peak_memory(torch.device("cpu"), before=float("inf"))["peak_memory_raised"] is False
    assert _peak_memory(torch.device("cpu"), before=0.0)["peak_memory_raised"] is True
    records = [{**r, "peak_memory_raised": r["method"] != "random"} for r in RECORDS]
    records[1]["peak_memory_raised"] = None      # a record of older code: unknown, printed as it is
    records[0]["peak_memory_raised"] = False
    header, rows = details_rows(summarize(records))
    cells = {row[0]: row[header.index("peak MB")] for row in rows}
    assert cells == {"random": "100", "herding": "100", "dc": "100"}   # random: one unknown record, no bound
    records[1]["peak_memory_raised"] = False
    header, rows = details_rows(summarize(records))
    assert {row[0]: row[header.index("peak MB")] for row in rows} == {"random": "≤ 100", "herding": "100", "dc": "100"}
    assert "≤ 100" in render_markdown(summarize(records))
