"""DD-Ranking scores (IOR, HLR, DDRS) on hand-made records: exact numbers, and no IOR across recipes."""
import math

import pytest

from dsvbench.results import render_latex, render_markdown, summarize
from dsvbench.scores import add_scores, ddrs


def record(method, seed, accuracy, recipe="dc", group="selection", order=0):
    return {"method": method, "table_name": method, "group": group, "order": order, "seed": seed,
            "eval_index": 0, "test_accuracy": accuracy, "dataset": "digits", "ipc": 1, "build_seconds": 1.0,
            "retrain_seconds": 1.0, "peak_memory_mb": 1.0, "needs": "data", "eval.name": recipe,
            "eval.epochs": 300, "eval_model": "convnet"}


def full(seed, accuracy, recipe="dc"):
    return {"kind": "full-data", "key": f"{recipe}{seed}", "dataset": "digits", "eval_model": "convnet",
            "seed": seed, "test_accuracy": accuracy, "eval.name": recipe, "eval.epochs": 300}


RECORDS = [record("random", 0, 10.0), record("random", 1, 20.0),
           record("dc", 0, 28.0, group="synthesis"), record("dc", 1, 30.0, group="synthesis"),
           record("dsvg", 0, 40.0, "dsv", "synthesis", 2), record("dsvg", 1, 44.0, "dsv", "synthesis", 2)]
FULL = [full(0, 90.0), full(1, 92.0), full(0, 95.0, "dsv"), full(1, 97.0, "dsv")]


def scored(records=RECORDS, full_data=FULL, weight=0.5):
    summary, notes = add_scores(summarize(records), records, full_data, weight)
    return summary.set_index("method"), notes


def test_ddrs_is_dd_rankings_formula():
    """(e^α − e^−1)/(e − e^−1), α = w·IOR − (1−w)·HLR with IOR, HLR as fractions: 0 at α = −1, 1 at α = 1."""
    assert ddrs(0.0, 100.0, 0.0) == pytest.approx(0.0) and ddrs(100.0, 0.0, 1.0) == pytest.approx(1.0)
    assert ddrs(20.0, 40.0, 0.5) == pytest.approx((math.exp(-0.1) - math.exp(-1)) / (math.e - math.exp(-1)))


def test_scores_are_exact_on_hand_made_numbers():
    summary, notes = scored()
    dc = summary.loc["dc"]
    assert (dc["ior_mean"], dc["ior_std"]) == (14.0, 4.0)            # pairs: 28 − 10, 30 − 20
    assert (dc["hlr_mean"], dc["hlr_std"]) == (62.0, 0.0)            # 90 − 28, 92 − 30
    per_seed = [ddrs(18.0, 62.0), ddrs(10.0, 62.0)]
    assert dc["ddrs_mean"] == pytest.approx(sum(per_seed) / 2)
    assert dc["ddrs_std"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2)
    assert dc["full_data_accuracy"] == 91.0 and dc["score_pairs"] == 2 and dc["ddrs_weight"] == 0.5
    random = summary.loc["random"]
    assert (random["ior_mean"], random["hlr_mean"]) == (0.0, 76.0)   # (90 − 10 + 92 − 20) / 2
    assert scored(weight=1.0)[0].loc["dc", "ddrs_mean"] == pytest.approx(
        (ddrs(18.0, 0.0, 1.0) + ddrs(10.0, 0.0, 1.0)) / 2)
    assert any(n.startswith("scores (DD-Ranking)") for n in notes)


def test_a_column_retrained_with_another_recipe_gets_no_ior():
    summary, notes = scored()
    dsvg = summary.loc["dsvg"]
    assert math.isnan(dsvg["ior_mean"]) and math.isnan(dsvg["ddrs_mean"])
    assert (dsvg["hlr_mean"], dsvg["hlr_std"]) == (54.0, 1.0)        # its own recipe's full data: 95 − 40, 97 − 44
    assert any("IOR: – for dsvg (dsv)" in n and "random was retrained with dc" in n for n in notes)
    # random also evaluated under dsv (a merged run): now dsvg is compared with that evaluation only
    with_dsv = RECORDS + [record("random", 0, 30.0, "dsv"), record("random", 1, 34.0, "dsv")]
    summary, notes = scored(with_dsv)
    dsvg = summary[summary["column"] == "dsvg"].iloc[0]
    assert (dsvg["ior_mean"], dsvg["ior_std"]) == (10.0, 0.0) and not any(n.startswith("IOR: –") for n in notes)


def test_without_full_data_or_random_the_rows_say_so():
    summary, notes = scored(full_data=[])
    assert math.isnan(summary.loc["dc", "hlr_mean"]) and summary.loc["dc", "ior_mean"] == 14.0
    assert any("--scores" in n for n in notes)
    no_random = [r for r in RECORDS if r["method"] != "random"]
    summary, notes = scored(no_random)
    assert summary["ior_mean"].isna().all() and any("no random column" in n for n in notes)
    assert add_scores(summarize(no_random), no_random, [], 0.5)[1] == []   # nothing to score against


def test_score_rows_in_markdown_and_latex():
    summary, notes = scored()
    summary.attrs["notes"] = notes
    text = render_markdown(summary)
    ior = next(line for line in text.splitlines() if line.startswith("| IOR"))
    assert "+0.0 ± 0.0" in ior and "+14.0 ± 4.0" in ior and "–" in ior
    assert any(line.startswith("| HLR") and "+62.0 ± 0.0" in line for line in text.splitlines())
    assert any(line.startswith("| DDRS (w = 0.5)") for line in text.splitlines())
    assert "IOR: – for dsvg" in text
    latex = render_latex(summary)
    assert r"\quad IOR (vs random, same recipe) & +0.0 $\pm$ 0.0" in latex and "DDRS (w = 0.5)" in latex


@pytest.mark.parametrize("argv, expected", [(["--ddrs-weight", "1.5", "--scores"], "must lie in [0, 1]"),
                                            (["--ddrs-weight", "0.3"], "add --scores")])
def test_bad_ddrs_weight_is_one_line_and_exit_code_2(capsys, tmp_path, argv, expected):
    from dsvbench.cli import main
    code = main(["--dataset", "digits", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
