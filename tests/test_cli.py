"""CLI: one-line errors with exit code 2, the end-to-end digits run, exports, --from."""
import json

import pandas as pd
import pytest
import torch

from dsvbench.cli import main

FAST = ["--dataset", "digits", "--pretrain-epochs", "2", "--eval-epochs", "30", "--quiet"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, expected", [
    (["--methods", "nosuch"], "unknown method 'nosuch'"),
    (["--methods", "randon"], "did you mean 'random'"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--model", "resnet"], "unknown model 'resnet'"),
    (["--eval-model", "resnet"], "unknown model 'resnet'"),
    (["--seeds", "0"], "--seeds must be at least 1"),
    (["--ipc", "0"], "--ipc must be at least 1"),
    (["--set", "random"], "expected METHOD.FIELD=VALUE"),
    (["--set", "random.nope=1"], "has no recipe field 'nope'"),
    (["--device", "cuda:0"] , "CUDA is not available"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, tmp_path, argv, expected):
    code, out, err = run_cli(capsys, "--dataset", "digits", "--out", str(tmp_path / "o"), *argv)
    if "CUDA" in expected:
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    assert code == 2
    assert expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "records").exists()


def test_unknown_method_lists_the_known_ones(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--methods", "nosuch", "--dataset", "digits", "--out", str(tmp_path))
    assert code == 2 and "known:" in err and "random" in err


def test_missing_dataset_names_path_download_and_digits(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--dataset", "mnist", "--data-root", str(tmp_path / "nothing"),
                           "--out", str(tmp_path / "o"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(tmp_path / "nothing") in err and "--download" in err and "--dataset digits" in err


def test_ipc_larger_than_smallest_class(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--dataset", "digits", "--ipc", "500", "--out", str(tmp_path))
    assert code == 2 and "smallest class" in err and "116" in err


def test_unwritable_out(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "--dataset", "digits", "--out", str(blocker / "sub"))
    assert code == 2 and "cannot write" in err


def test_list_methods_shows_needs(capsys):
    code, out, _ = run_cli(capsys, "--list-methods")
    assert code == 0
    line = next(l for l in out.splitlines() if l.startswith("random"))
    assert "selection" in line and "data" in line
    for method, recipe in (("kcenter", "dc"), ("dsa", "dsa"), ("dm", "dsa"), ("mtt", "mtt")):   # the newer baselines
        cells = next(l for l in out.splitlines() if l.startswith(method + " ")).split()
        assert recipe in cells and "no" in cells                 # retrained as published; not in --methods all


def test_end_to_end_digits_run_exports_everything_and_rerenders(capsys, tmp_path):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(capsys, *FAST, "--methods", "random", "--seeds", "2", "--out", str(out),
                              "--cache-dir", str(tmp_path / "cache"))
    assert code == 0
    assert "digits IPC=1: ours" in stdout and "random" in stdout and "REDUCED" in stdout
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 2 and set(results["seed"]) == {0, 1}
    assert results["test_accuracy"].between(10, 100).all()          # far from 0: it learned something
    assert {"eval.lr", "eval.epochs", "eval.optimizer"} <= set(results.columns)
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[0, "mean"] == pytest.approx(results["test_accuracy"].mean())
    assert summary.loc[0, "std"] == pytest.approx(results["test_accuracy"].std(ddof=0))
    assert r"\toprule" in (out / "table.tex").read_text()
    assert "| random" in (out / "table.md").read_text().replace("|  ", "| ")
    info = json.loads((out / "run.json").read_text())
    assert {"config", "versions", "git_commit", "device", "recipes", "eval_recipes", "wall_seconds"} <= set(info)
    assert info["config"]["seeds"] == [0, 1]
    for seed in (0, 1):
        assert (out / "sets" / f"random-seed{seed}.pt").exists()
        assert (out / "sets" / f"random-seed{seed}.png").stat().st_size > 100
    (out / "table.md").unlink()
    code, again, _ = run_cli(capsys, "--from", str(out), "--in-place")
    assert code == 0 and (out / "table.md").exists()
    ours = [line for line in stdout.splitlines() if "IPC=1: ours" in line]
    assert ours and ours == [line for line in again.splitlines() if "IPC=1: ours" in line]


def test_from_merges_runs(capsys, tmp_path):
    common = [*FAST, "--methods", "random", "--cache-dir", str(tmp_path / "cache")]
    assert run_cli(capsys, *common, "--seed-list", "0", "--out", str(tmp_path / "a"))[0] == 0
    assert run_cli(capsys, *common, "--seed-list", "1", "--out", str(tmp_path / "b"))[0] == 0
    code, out, _ = run_cli(capsys, "--from", str(tmp_path / "a"), str(tmp_path / "b"),
                           "--out", str(tmp_path / "merged"))
    assert code == 0
    assert len(pd.read_csv(tmp_path / "merged" / "results.csv")) == 2


def test_from_without_records_is_a_clear_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--from", str(tmp_path))
    assert code == 2 and "no records/ folder" in err


@pytest.mark.slow
def test_same_seed_same_numbers_and_parallel_jobs_agree(capsys, tmp_path):
    common = [*FAST, "--methods", "random", "--seeds", "2"]
    assert run_cli(capsys, *common, "--out", str(tmp_path / "a"), "--cache-dir", str(tmp_path / "ca"))[0] == 0
    assert run_cli(capsys, *common, "--out", str(tmp_path / "b"), "--cache-dir", str(tmp_path / "cb"),
                   "--jobs", "2", "--backend", "loky")[0] == 0
    a = pd.read_csv(tmp_path / "a" / "results.csv").sort_values("seed")
    b = pd.read_csv(tmp_path / "b" / "results.csv").sort_values("seed")
    assert list(a["test_accuracy"]) == list(b["test_accuracy"])
    assert a["test_accuracy"].nunique() == 2           # the two seeds differ


def test_evals_per_set_retrains_several_networks_per_set(capsys, tmp_path):
    code, stdout, _ = run_cli(capsys, *FAST, "--methods", "random", "--seed-list", "3", "--evals-per-set", "3",
                              "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache"))
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert code == 0 and sorted(results["eval_index"]) == [0, 1, 2] and set(results["seed"]) == {3}
    assert "3 (1)" in stdout                                   # 3 models from 1 seed


@pytest.mark.parametrize("methods, noted", [(["random", "dc"], False), (["herding"], True)])
def test_changed_pretraining_is_noted_only_when_a_method_uses_theta(methods, noted):
    from dsvbench.options import build_parser, config_from_args
    from dsvbench.runinfo import budget_notes
    config = config_from_args(build_parser().parse_args(
        ["--dataset", "digits", "--pretrain-epochs", "3", "--methods", *methods]))
    assert any("CHANGED PRETRAINING" in note for note in budget_notes(config)) == noted


def test_ipc_grid_in_one_run_gives_a_row_per_ipc(tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["--dataset", "digits", "--methods", "random", "herding", "--seeds", "2", "--ipc", "1", "3",
                 "--eval-epochs", "1", "--quiet", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    table = (out / "table.md").read_text()
    assert "digits IPC=1: ours" in table and "digits IPC=3: ours" in table
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["ipc_grid"] == [1, 3] and info["config"]["ipc"] == 1
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert sorted((r["method"], r["ipc"]) for r in records) == sorted(
        [(m, k) for m in ("random", "herding") for k in (1, 3) for _ in range(2)])
    for k in (1, 3):   # each IPC's sets in its own folder, with the right size
        state = torch.load(out / "sets" / f"ipc{k}" / "random-seed0.pt", weights_only=True)
        assert len(state["labels"]) == 10 * k
    from dsvbench.figures import find_sets   # the figures and the report show the grid's first IPC
    found = find_sets([out])
    assert found["random"][0].metadata["set_key"] == records[[(r["method"], r["ipc"], r["seed"]) for r in records]
                                                             .index(("random", 1, 0))]["set_key"]
    # a rerun finds everything done, and a single-IPC run into the same folder keeps only its rows
    assert main(["--dataset", "digits", "--methods", "random", "--seeds", "2", "--ipc", "3", "--eval-epochs", "1",
                 "--quiet", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "IPC=1" not in (out / "table.md").read_text()


def test_cross_architecture_run_gives_a_row_per_architecture_from_one_set_each(tmp_path, capsys):
    """--eval-model convnet mlp lenet: every set built once, retrained on each architecture; a table
    block per architecture, a record each, scores against random of the same architecture."""
    out = tmp_path / "cross"
    assert main(["--dataset", "digits", "--methods", "random", "herding", "--seeds", "2", "--eval-model", "convnet",
                 "mlp", "lenet", "--eval-epochs", "1", "--quiet", "--out", str(out),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    table = (out / "table.md").read_text()
    for model in ("convnet", "mlp", "lenet"):
        assert f"digits IPC=1 {model}: ours" in table
    assert table.index("IPC=1 convnet") < table.index("IPC=1 mlp") < table.index("IPC=1 lenet")   # DC Table 2's order
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert sorted((r["method"], r["eval_model"]) for r in records) == sorted(
        [(m, e) for m in ("random", "herding") for e in ("convnet", "mlp", "lenet") for _ in range(2)])
    assert len({r["set_key"] for r in records if r["method"] == "herding"}) == 2          # one set per seed
    assert len(list((tmp_path / "cache" / "sets").glob("herding-*.pt"))) == 2            # built once
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["eval_models"] == ["convnet", "mlp", "lenet"]
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 6 and summary["ior_mean"].notna().all()   # IOR within each architecture


def test_a_grid_config_file_is_the_flags_and_is_stored(tmp_path, capsys):
    config = tmp_path / "grid.toml"
    config.write_text('dataset = "digits"\nmethods = ["random"]\nipc = [1, 2]\nseeds = 1\nquiet = true\n'
                      'eval_epochs = 1\n[set]\n"herding.features" = "pixels"\n')
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    info = json.loads((out / "run.json").read_text())
    assert info["config_file"]["toml"] == config.read_text() and info["config"]["ipc_grid"] == [1, 2]
    assert ["herding", "features", "pixels"] in info["config"]["method_overrides"]
    for bad, message in (('datset = "digits"\n', "unknown key 'datset'"), ("dataset = \n", "not valid TOML")):
        config.write_text(bad)
        capsys.readouterr()
        assert main(["run", str(config)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_the_committed_grid_configs_parse(tmp_path):
    from pathlib import Path

    from dsvbench.options import build_parser, config_from_args, flags_from_toml
    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml")):
        argv, _ = flags_from_toml(str(path))
        args = build_parser().parse_args(argv)
        assert args.dataset and len(args.ipc) >= 2, path
    argv, _ = flags_from_toml(str(Path(__file__).resolve().parents[1] / "configs" / "digits-grid.toml"))
    config = config_from_args(build_parser().parse_args(argv + ["--out", str(tmp_path / "o")]))
    assert config.ipc_grid == (1, 10)


def test_list_methods_with_a_method_describes_every_recipe_field(capsys):
    import dataclasses

    from dsvbench.methods import METHODS
    code, out, _ = run_cli(capsys, "--list-methods", "dsvg")
    assert code == 0
    for field in dataclasses.fields(METHODS.get("dsvg").recipe):
        assert f"\n{field.name} " in out
    assert "presets: neurips:" in out and "hooks: retrain" in out and "``" not in out and ":func:" not in out
    assert "momentum of the sgd steps on x" in out            # the comment beside the field
    code, _, err = run_cli(capsys, "--list-methods", "dsvgg")
    assert code == 2 and "did you mean 'dsvg'" in err and len(err.strip().splitlines()) == 1
