"""--replay: the recorded configuration rebuilt exactly, a tiny run replayed to the same records, bad input."""
import dataclasses
import json
import time

import pandas as pd
import pytest

from dsvbench.cli import main
from dsvbench.options import build_parser, config_from_args
from dsvbench.runinfo import run_info
from dsvbench.plan import resolve
from dsvbench.replay import replay_config


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def parse(*argv):
    args = build_parser().parse_args([str(a) for a in argv])
    args.argv = [str(a) for a in argv]
    return args


def test_replayed_config_equals_the_original(tmp_path, capsys):
    """Every field a flag can set survives run.json: --set and preset overrides, forced recipe, budgets,
    data root, reference dataset, IPC, seeds, architectures, evals per set, device, scores and weight."""
    original = config_from_args(parse(
        "--dataset", "digits", "--data-root", tmp_path / "data", "--reference-dataset", "mnist", "--methods", "dc",
        "herding", "dsvg", "--seed-list", "3", "5", "--ipc", "2", "--model", "convnet", "--eval-model", "mlp",
        "--evals-per-set", "2", "--eval-recipe", "dsv", "--eval-epochs", "7", "--pretrain-epochs", "3",
        "--preset", "neurips", "--set", "dc.iterations=5", "--herding-features", "pixels", "--scores",
        "--ddrs-weight", "0.3", "--retrain-engine", "plain", "--out", tmp_path / "a", "--cache-dir", tmp_path / "cache"))
    info = run_info(resolve(original), time.time(), None)
    (tmp_path / "a" / "run.json").write_text(json.dumps(info, default=str))
    replayed, _ = replay_config(parse("--replay", tmp_path / "a" / "run.json", "--out", tmp_path / "b"))
    assert replayed == dataclasses.replace(original, out=str(tmp_path / "b"))
    assert original.method_overrides and original.eval_model == "mlp" and original.seeds == (3, 5)
    assert original.retrain_engine == "plain"


def test_a_run_json_from_before_the_retrain_engine_replays_with_the_stacked_one(tmp_path, capsys):
    """A field whose default changed what a run computes: a recording without it replays with the value that
    reproduces it (``BenchConfig.BEFORE``: every population stacked), and says so; other missing fields keep
    their defaults."""
    original = config_from_args(parse("--dataset", "digits", "--methods", "random", "--out", tmp_path / "a"))
    assert original.retrain_engine == "auto"
    info = run_info(resolve(original), time.time(), None)
    del info["config"]["retrain_engine"], info["config"]["force"]
    (tmp_path / "a").mkdir(exist_ok=True)
    (tmp_path / "a" / "run.json").write_text(json.dumps(info, default=str))
    replayed, _ = replay_config(parse("--replay", tmp_path / "a" / "run.json", "--out", tmp_path / "b"))
    assert replayed.retrain_engine == "stacked" and replayed.force is False
    assert "config.retrain_engine='stacked'" in capsys.readouterr().err


def test_a_tiny_run_replayed_gives_identical_records_and_warns_about_other_code(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    code, _, err = run_cli(capsys, "--dataset", "digits", "--methods", "random", "dc", "--set", "dc.iterations=1",
                           "--seeds", "2", "--eval-epochs", "5", "--scores", "--out", first,
                           "--cache-dir", tmp_path / "cache1", "--quiet")
    assert code == 0, err
    run_json = json.loads((first / "run.json").read_text())
    assert run_json["dataset"]["fingerprint"] and run_json["torch_threads"] >= 1 and run_json["config"]["scores"]
    run_json["versions"]["dsvbench"], run_json["git_commit"] = "0.0.1", "0" * 40   # as if older code wrote it
    (first / "run.json").write_text(json.dumps(run_json))
    code, _, err = run_cli(capsys, "--replay", first / "run.json", "--out", second,
                           "--cache-dir", tmp_path / "cache2", "--jobs", "1", "--quiet")   # a fresh cache: all rebuilt
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("dsvbench: warning:")]
    assert any("dsvbench 0.0.1" in line for line in warnings) and any("000000000000" in line for line in warnings)

    def accuracies(folder):
        return {path.name: json.loads(path.read_text())["test_accuracy"]
                for path in sorted((folder / "records").glob("*.json"))}
    assert accuracies(first) == accuracies(second) and len(accuracies(first)) == 4
    full = [{p.name: json.loads(p.read_text())["test_accuracy"] for p in (f / "full-data").glob("*.json")}
            for f in (first, second)]
    assert full[0] == full[1] and len(full[0]) == 2              # one recipe (dc) × 2 seeds
    replayed = json.loads((second / "run.json").read_text())
    assert replayed["replayed_from"] == str(first / "run.json")
    assert {**replayed["config"], "out": None, "cache_dir": None} == {**run_json["config"], "out": None,
                                                                      "cache_dir": None}
    summary = pd.read_csv(second / "summary.csv").set_index("method")
    assert summary.loc["random", "ior_mean"] == 0.0 and summary["hlr_mean"].notna().all()
    table = (second / "table.md").read_text()
    assert "| IOR (vs random, same recipe)" in table and "| DDRS (w = 0.5)" in table
    # --from re-scores stored runs with another weight, from their full-data accuracies
    code, _, err = run_cli(capsys, "--from", second, "--out", tmp_path / "rescored", "--ddrs-weight", "1")
    rescored = pd.read_csv(tmp_path / "rescored" / "summary.csv").set_index("method")
    assert code == 0 and (rescored["ddrs_weight"] == 1.0).all()
    assert rescored.loc["dc", "ddrs_mean"] != summary.loc["dc", "ddrs_mean"]


@pytest.fixture
def recorded(tmp_path):
    folder = tmp_path / "run"
    config = config_from_args(parse("--dataset", "digits", "--methods", "random", "--out", folder,
                                    "--cache-dir", tmp_path / "cache"))
    (folder / "run.json").write_text(json.dumps(run_info(resolve(config), time.time(), None), default=str))
    return folder


@pytest.mark.parametrize("extra, expected", [
    (["--seeds", "3"], "--seeds cannot change it"),
    (["--set", "dc.iterations=2", "--methods", "dc"], "--methods, --overrides cannot change it"),
    (["--eval-epochs", "5"], "--eval-epochs cannot change it"),
    (["--scores"], "--scores cannot change it"),
])
def test_grid_flags_with_replay_are_refused(capsys, tmp_path, recorded, extra, expected):
    code, _, err = run_cli(capsys, "--replay", recorded / "run.json", "--out", tmp_path / "new", *extra)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()


def test_bad_replay_input_is_one_line_and_exit_code_2(capsys, tmp_path, recorded):
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    merged = tmp_path / "merged.json"
    merged.write_text(json.dumps({**json.loads((recorded / "run.json").read_text()), "rendered_from": ["a", "b"]}))
    cases = [(["--replay", tmp_path / "nothing.json", "--out", tmp_path / "n"], "no such file"),
             (["--replay", garbage, "--out", tmp_path / "n"], "not a readable run.json"),
             (["--replay", tmp_path, "--out", tmp_path / "n"], "no such file"),          # a folder without run.json
             (["--replay", merged, "--out", tmp_path / "n"], "written by --from"),
             (["--replay", recorded / "run.json"], "needs --out"),
             (["--replay", recorded / "run.json", "--out", recorded], "the recorded run's folder"),
             (["--replay", recorded / "run.json", "--from", recorded, "--out", tmp_path / "n"], "one at a time")]
    for argv, expected in cases:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (tmp_path / "n").exists()


def test_a_changed_default_is_pinned_to_the_recorded_value(capsys, tmp_path, recorded):
    info = json.loads((recorded / "run.json").read_text())
    info["recipes"]["random"] = {"nosuch": 1}
    info["config"]["methods"] = ["random", "dc"]
    info["recipes"]["dc"] = {**info["recipes"].get("dc", {}), "iterations": 7}
    (recorded / "run.json").write_text(json.dumps(info))
    config, _ = replay_config(parse("--replay", recorded / "run.json", "--out", tmp_path / "new"))
    err = capsys.readouterr().err
    assert ("dc", "iterations", "7") in config.method_overrides and "pinned to the recorded value" in err
    assert "random.nosuch (recorded 1) no longer exists" in err


def test_replay_passes_the_checks_of_a_run_from_flags(capsys, tmp_path, recorded):
    """One check_config for flags and --replay: a recording whose configuration this machine cannot run
    as recorded (TF32 retraining, replayed on the CPU) is refused before any work."""
    info = json.loads((recorded / "run.json").read_text())
    info["config"].update(device="cuda", eval_precision="tf32")
    (recorded / "run.json").write_text(json.dumps(info))
    code, _, err = run_cli(capsys, "--replay", recorded / "run.json", "--out", tmp_path / "new", "--device", "cpu")
    assert code == 2 and "--eval-precision tf32 needs a CUDA device" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "new").exists()
