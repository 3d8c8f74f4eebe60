"""Method code versions, the resolved plan, and ``--from`` merging rules, on hand-made records.

A merge never averages records of different recipes / evaluation recipes / method versions /
θ* into one cell (separate columns instead), never counts a record twice, never writes into an
input folder unless ``--in-place``, and says what it left out.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from dsvbench.cli import main
from dsvbench.config import BenchConfig, PretrainRecipe, config_hash
from dsvbench.plan import set_key
from dsvbench.methods import METHODS, load_methods, register_method
from dsvbench.plan import resolve
from dsvbench.pretrain import dataset_fingerprint, load_or_pretrain
from dsvbench.records import label_columns, merge_runs, select_records
from tests.conftest import make_tiny_dataset

load_methods()


def record(method="dc", seed=0, accuracy=30.0, eval_index=0, **fields):
    """A finished record as the harness writes it (the fields the table reads, plus the keys)."""
    base = {"method": method, "table_name": method.upper(), "group": "synthesis", "order": 1, "seed": seed,
            "eval_index": eval_index, "test_accuracy": accuracy, "dataset": "digits", "ipc": 1,
            "build_seconds": 1.0, "retrain_seconds": 2.0, "peak_memory_mb": 100.0, "needs": "data",
            "eval_model": "convnet", "model": "convnet", "method_version": 2, "set_key": f"set{seed}",
            "pretrain_key": None, "eval.name": "dc", "eval.epochs": 300, "eval.lr": 0.01, "recipe.iterations": 1000}
    return {**base, **fields}


def write_run(folder: Path, records: list[dict], notes: tuple[str, ...] = ()) -> Path:
    (folder / "records").mkdir(parents=True, exist_ok=True)
    for r in records:
        name = f"{r['method']}-seed{r['seed']}-eval{r['eval_index']}-{config_hash(r)}.json"
        (folder / "records" / name).write_text(json.dumps(r))
    (folder / "run.json").write_text(json.dumps({"notes": list(notes), "config": {}}))
    return folder


def render(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def summary_of(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "summary.csv").set_index("table_name")


# ---------------------------------------------------------------- (a) never one cell for different recipes

def test_different_eval_epochs_are_separate_columns(capsys, tmp_path):
    a = write_run(tmp_path / "a", [record(seed=0, accuracy=48.0), record(seed=1, accuracy=50.0)])
    b = write_run(tmp_path / "b", [record(seed=0, accuracy=10.0, **{"eval.epochs": 5}),
                                   record(seed=1, accuracy=12.0, **{"eval.epochs": 5})])
    code, out, _ = render(capsys, "--from", str(a), str(b), "--out", str(tmp_path / "m"))
    summary = summary_of(tmp_path / "m")
    assert code == 0 and sorted(summary.index) == ["DC (300 ep)", "DC (5 ep)"]
    assert summary.loc["DC (300 ep)", "mean"] == 49.0 and summary.loc["DC (300 ep)", "n"] == 2
    assert summary.loc["DC (5 ep)", "mean"] == 11.0 and summary.loc["DC (5 ep)", "n"] == 2
    assert "DC (300 ep)" in out and "SEPARATE COLUMNS: digits IPC=1: dc records differ in eval.epochs" in out
    assert "SEPARATE COLUMNS" in (tmp_path / "m" / "table.md").read_text()


@pytest.mark.parametrize("change, labels, named", [
    ({"method_version": 1}, ["DC (v1)", "DC (v2)"], "method_version"),
    ({"recipe.iterations": 40}, ["DC [1]", "DC [2]"], "recipe.iterations=40"),
    ({"eval.lr": 0.1, "eval.epochs": 5}, ["DC [1]", "DC [2]"], "eval.epochs=5, eval.lr=0.1"),
    ({"needs": "data+model", "pretrain_key": "other"}, ["DC [1]", "DC [2]"], "pretrain_key=other"),
])
def test_records_that_differ_in_version_recipe_or_theta_are_not_merged(change, labels, named):
    records = [record(seed=0, **({"needs": "data+model", "pretrain_key": "theta"} if "pretrain_key" in change else {})),
               record(seed=1, **change)]
    labelled, notes = label_columns(records)
    assert sorted(r["table_name"] for r in labelled) == labels
    assert len(notes) == 1 and named in notes[0]


def test_old_records_without_a_version_are_version_1_and_theta_counts_only_where_used():
    old = {k: v for k, v in record(seed=0, method_version=1).items() if k != "method_version"}
    # random needs no θ*: which θ* another column of its run loaded does not split it
    same = [old, record(seed=1, method_version=1), record(seed=2, method_version=1, pretrain_key="x")]
    labelled, notes = label_columns(same)
    assert {r["column"] for r in labelled} == {"dc"} and notes == []


# ---------------------------------------------------------------- (b) never count a record twice

def test_two_identical_runs_count_each_model_once(capsys, tmp_path):
    runs = [record(seed=0, accuracy=40.0), record(seed=1, accuracy=44.0)]
    a, b = write_run(tmp_path / "a", runs), write_run(tmp_path / "b", runs)
    code, _, err = render(capsys, "--from", str(a), str(b), "--out", str(tmp_path / "m"))
    assert code == 0 and summary_of(tmp_path / "m").loc["DC", "n"] == 2
    assert len(pd.read_csv(tmp_path / "m" / "results.csv")) == 2
    assert err.strip().splitlines() == [
        f"dsvbench: --from {b}: 2 record(s) left out, already read from an earlier folder "
        "(same method, seed, eval, set key and recipes: counted once)"]
    assert json.loads((tmp_path / "m" / "run.json").read_text())["left_out"] == [err.strip()[len("dsvbench: "):]]


def test_other_seeds_evals_and_sets_are_not_duplicates(tmp_path):
    a = write_run(tmp_path / "a", [record(seed=0)])
    b = write_run(tmp_path / "b", [record(seed=1), record(seed=0, eval_index=1), record(seed=0, set_key="other")])
    records, left_out = merge_runs([a, b])
    assert len(records) == 4 and left_out == []


# ---------------------------------------------------------------- (c) never write into an input unless asked

@pytest.mark.parametrize("out", [None, "a", "a/."])
def test_writing_into_an_input_folder_is_refused_without_in_place(capsys, tmp_path, out):
    a = write_run(tmp_path / "a", [record(seed=0)])
    b = write_run(tmp_path / "b", [record(seed=1)])
    before = {p.name: p.read_bytes() for p in a.iterdir() if p.is_file()}
    argv = ["--from", str(a), str(b)] + (["--out", str(tmp_path / out)] if out else [])
    code, _, err = render(capsys, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--in-place" in err and str(a) in err
    assert {p.name: p.read_bytes() for p in a.iterdir() if p.is_file()} == before      # untouched
    code, _, err = render(capsys, *argv, "--in-place")
    assert code == 0 and len(pd.read_csv(a / "results.csv")) == 2


def test_in_place_without_from_is_refused(capsys, tmp_path):
    code, _, err = render(capsys, "--dataset", "digits", "--in-place", "--out", str(tmp_path / "o"))
    assert code == 2 and "--in-place only applies to --from" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- (d) say what was dropped

def test_records_missing_fields_are_named_and_counted_per_folder(capsys, tmp_path):
    broken = {k: v for k, v in record(seed=1).items() if k != "eval.epochs"}
    a = write_run(tmp_path / "a", [record(seed=0), broken])
    [path] = [p for p in (a / "records").glob("*.json") if "eval.epochs" not in p.read_text()]
    code, _, err = render(capsys, "--from", str(a), "--out", str(tmp_path / "m"))
    assert code == 1 and summary_of(tmp_path / "m").loc["DC", "n"] == 1    # rendered, but not a clean result
    assert err.strip().splitlines() == [
        f"dsvbench: record {path} is unreadable (missing field 'eval.epochs'); left out of the table",
        f"dsvbench: --from {a}: 1 unreadable record(s) left out (named above)"]


# ---------------------------------------------------------------- the table filter (results layer)

def test_select_records_keeps_only_the_runs_keys_and_evals():
    wanted = {("dc", 0, 1, "convnet"): ("set0", {"name": "dc", "epochs": 300, "lr": 0.01})}
    kept = record(seed=0)
    others = [record(seed=1), record(seed=0, set_key="old"), record(seed=0, **{"eval.epochs": 5}),
              record(seed=0, eval_index=1), record(seed=0, ipc=10),   # another IPC of a grid: its own key
              record(seed=0, eval_model="mlp")]                        # another architecture: its own key
    assert select_records([kept, *others], wanted, evals_per_set=1) == [kept]


# ---------------------------------------------------------------- method versions and the plan

def test_version_is_in_the_set_key_and_version_1_keeps_the_old_keys():
    dataset = make_tiny_dataset()
    config = BenchConfig(methods=("random",))
    spec = METHODS.get("random")
    recipe = spec.make_recipe("tiny")
    old = config_hash("random", recipe, dataset.name, dataset_fingerprint(dataset), config.model, None,
                      config.ipc, 0, config.device)            # the formula before versions existed
    assert set_key(config, spec, recipe, dataset, None, 0) == old
    assert set_key(config, dataclasses.replace(spec, version=2), recipe, dataset, None, 0) != old


def test_versions_of_the_methods_changed_this_week_and_bad_versions():
    assert {name: METHODS.get(name).version for name in METHODS.names()} == {
        "random": 1, "herding": 1, "forgetting": 1, "dsvs": 2, "dd": 2, "dc": 2, "dsvg": 2,
        "kcenter": 1, "dsa": 1, "dm": 1, "mtt": 1}
    with pytest.raises(ValueError, match="version must be an int of at least 1"):
        register_method("never-added", table_name="x", group="selection", recipe=object, eval_recipe="dc",
                        version=0)


def test_plan_resolves_recipes_and_theta_once_per_column():
    config = BenchConfig(methods=("random", "dc", "dsvg"), eval_epochs=7, reference_dataset="digits",
                         method_overrides=(("dc", "iterations", "5"),))
    plan = resolve(config)
    assert [c.method for c in plan.columns] == ["random", "dc", "dsvg"]
    assert plan.column("dc").recipe.iterations == 5 and plan.column("dc").eval_recipe.epochs == 7
    assert plan.column("dsvg").eval_recipe.name == "dsv"
    assert plan.column("random").theta is None and plan.column("dc").theta is None
    assert plan.column("dsvg").theta == (config.model, config.pretrain)


def test_theta_key_is_the_key_of_the_loaded_theta(tmp_path):
    dataset = make_tiny_dataset()
    config = BenchConfig(methods=("herding",), model="convnet_tiny",
                         pretrain=PretrainRecipe(epochs=1, batch_size=16, augment="none", polish_steps=2))
    column = resolve(config).column("herding")
    loaded = load_or_pretrain(dataset, *column.theta, tmp_path, "cpu", progress=False)
    assert column.theta_key(dataset) == loaded.key
    assert column.set_key(dataset, 0) == set_key(config, column.spec, column.recipe, dataset, loaded.key, 0)


def test_records_carry_version_and_eval_key_and_run_json_the_versions(capsys, tmp_path):
    argv = ["--dataset", "digits", "--methods", "random", "--seed-list", "0", "--eval-epochs", "1", "--quiet",
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    code, out, _ = render(capsys, *argv)
    [path] = (tmp_path / "out" / "records").glob("*.json")
    saved = json.loads(path.read_text())
    assert code == 0 and saved["method_version"] == 1 and path.stem.endswith(saved["eval_key"])
    assert json.loads((tmp_path / "out" / "run.json").read_text())["method_versions"] == {"random": 1}
    assert "  random (v1): {}" in out
