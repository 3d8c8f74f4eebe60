"""Nothing silently wrong, nothing written outside --out, no number accepted that cannot run.

Each case is one observed failure of a careless or hostile user's probe: a cached artefact that
belongs to another key, a value that cannot run, a hand-edited run.json, a symlink in --out, a
full disk.  Each checks what the run did (rebuilt, refused), the exit code and the one line.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from dsvbench import atomic
from tests.test_faults import FAST, assert_one_line_error, lines_naming, run_cli, write_image_folder

ROOT = Path(__file__).resolve().parents[1]
TWO_SEEDS = ["--dataset", "digits", "--methods", "random", "--seed-list", "0", "1", "--eval-epochs", "1", "--quiet"]


def set_paths(cache: Path) -> list[Path]:
    return sorted((cache / "sets").glob("random-*.pt"))


def accuracies(out: Path) -> dict[int, float]:
    return {r["seed"]: r["test_accuracy"] for r in
            (json.loads(p.read_text()) for p in (out / "records").glob("*.json"))}


# ---------------------------------------------------------------- cached artefacts bound to their keys

def test_swapped_cached_sets_are_refused_and_rebuilt(capsys, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    assert run_cli(capsys, *TWO_SEEDS, "--out", str(out), "--cache-dir", str(cache))[0] == 0
    before = accuracies(out)
    first, second = set_paths(cache)
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)                       # each file well formed, its sha256 consistent
    shutil.rmtree(out)
    code, _, err = run_cli(capsys, *TWO_SEEDS, "--out", str(out), "--cache-dir", str(cache))
    assert code == 0 and "Traceback" not in err
    for path in (first, second):
        assert len(lines_naming(err, path)) == 1 and "belongs to another set" in lines_naming(err, path)[0], err
    assert accuracies(out) == before            # rebuilt: the same numbers under the same keys


@pytest.mark.parametrize("damage", ["shape", "labels", "nan"])
def test_cached_set_that_cannot_be_this_set_is_rebuilt(capsys, tmp_path, damage):
    from dsvbench.setcache import set_digest
    cache, out = tmp_path / "cache", tmp_path / "out"
    common = [*FAST, "--out", str(out), "--cache-dir", str(cache)]
    assert run_cli(capsys, *common)[0] == 0
    [path] = set_paths(cache)
    state = torch.load(path, weights_only=True)
    images, labels = state["set"]["images"], state["set"]["labels"]
    if damage == "shape":
        state["set"]["images"] = torch.zeros(len(labels), 1, 5, 5)
    elif damage == "labels":
        state["set"]["labels"] = labels + 100
    else:
        images = images.clone()
        images[0] = float("nan")
        state["set"]["images"] = images
    state["sha256"] = set_digest(state["set"], state["claims"])      # a consistent digest: still refused
    torch.save(state, path)
    shutil.rmtree(out)
    code, _, err = run_cli(capsys, *common)
    assert code == 0 and "Traceback" not in err and len(lines_naming(err, path)) == 1, err
    assert {"shape": "shape", "labels": "labels outside", "nan": "NaN"}[damage] in err
    assert torch.isfinite(torch.load(path, weights_only=True)["set"]["images"]).all()


def pretrain(dataset, cache: Path, epochs: int):
    from dsvbench.config import PretrainRecipe
    from dsvbench.pretrain import load_or_pretrain
    return load_or_pretrain(dataset, "convnet_tiny", PretrainRecipe(epochs=epochs, batch_size=16, augment="crop",
                                                                    polish_steps=0), cache, "cpu", progress=False)


@pytest.mark.parametrize("damage", ["other-epochs", "nan", "dynamics"])
def test_cached_theta_that_is_not_this_theta_is_retrained(tiny_dataset, tmp_path, capsys, damage):
    four = pretrain(tiny_dataset, tmp_path, 4)
    state = torch.load(four.path, weights_only=True)
    if damage == "other-epochs":
        three = pretrain(tiny_dataset, tmp_path / "other", 3)
        shutil.copy(three.path, four.path)          # a 3-epoch θ* under the 4-epoch key
    elif damage == "nan":
        first = next(iter(state["model"]))
        state["model"][first] = torch.full_like(state["model"][first], float("nan"))
        torch.save(state, four.path)
    else:
        state["dynamics"] = state["dynamics"][:, :5]
        torch.save(state, four.path)
    capsys.readouterr()
    again = pretrain(tiny_dataset, tmp_path, 4)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(four.path) in err and "pretraining it again" in err, err
    assert {"other-epochs": "belongs to another θ*", "nan": "non-finite", "dynamics": "dynamics of shape"}[damage] in err
    assert again.dynamics.shape == (4, len(tiny_dataset.train_y))
    assert all(torch.isfinite(p).all() for p in again.model.parameters())


def test_dataset_cache_with_nan_and_a_consistent_sha256_is_read_again(tmp_path, capsys):
    from dsvbench.config import DataConfig
    from dsvbench.data import RawSplits, load_dataset
    from dsvbench.data.dataset import standardize
    config = DataConfig("folder", str(tmp_path / "images"))
    write_image_folder(tmp_path / "images", ("cat", "dog"))
    original = load_dataset(config, tmp_path / "cache")
    [path] = (tmp_path / "cache" / "datasets").glob("*.pt")
    state = torch.load(path, weights_only=True)
    state["std"] = [0.0] * len(state["std"])     # standardizes to nan / inf; the sha256 made to match
    stored = state["raw"]
    raw = RawSplits(*(stored[k].numpy() for k in ("train_images", "train_labels", "test_images", "test_labels")),
                    list(stored["class_names"]))
    state["sha256"] = standardize(raw, state["name"], torch.tensor(state["mean"]), torch.tensor(state["std"])).content_hash()
    torch.save(state, path)
    capsys.readouterr()
    again = load_dataset(config, tmp_path / "cache")
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "non-finite" in err and str(path) in err
    assert torch.equal(again.train_x, original.train_x)


def test_images_rewritten_in_place_with_same_names_sizes_and_mtimes_are_read_again(tmp_path):
    from PIL import Image

    from dsvbench.config import DataConfig
    from dsvbench.data import load_dataset
    root = tmp_path / "images"
    config = DataConfig("folder", str(root))
    write_image_folder(root, ("cat", "dog"))
    original = load_dataset(config, tmp_path / "cache")
    for png in root.rglob("*.png"):             # invert every image, keep size and mtime
        stat = png.stat()
        pixels = np.asarray(Image.open(png))
        Image.fromarray(255 - pixels).save(png)
        os.utime(png, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    again = load_dataset(config, tmp_path / "cache")
    assert not torch.equal(again.train_x, original.train_x)


# ---------------------------------------------------------------- records and replay

def test_record_with_nan_accuracy_is_named_left_out_and_exit_1(capsys, tmp_path):
    out = tmp_path / "out"
    assert run_cli(capsys, *TWO_SEEDS, "--out", str(out), "--cache-dir", str(tmp_path / "cache"))[0] == 0
    path = sorted((out / "records").glob("*.json"))[0]
    record = json.loads(path.read_text())
    record["test_accuracy"] = float("nan")
    path.write_text(json.dumps(record))
    code, _, err = run_cli(capsys, "--from", str(out), "--out", str(tmp_path / "rendered"))
    assert code == 1 and "Traceback" not in err
    assert len(lines_naming(err, path)) == 1 and "test_accuracy" in lines_naming(err, path)[0]
    assert "| 1 (1)" in (tmp_path / "rendered" / "table.md").read_text()       # the other seed only


@pytest.mark.parametrize("field, value, expected", [
    ("eval_epochs", -5, "config.eval_epochs=-5"), ("ipc", "1", "config.ipc='1'"),
    ("methods", None, "config.methods=None"), ("seeds", "ab", "config.seeds='ab'"),
    ("pretrain.epochs", -3, "config.pretrain.epochs=-3"), ("eval_precision", "fp64", "'fp64' is unknown"),
    ("seeds", [99999999999999999999999], "must be in [0, 2^63)"),
])
def test_hand_edited_run_json_is_one_line_and_exit_2_before_any_work(capsys, tmp_path, field, value, expected):
    out = tmp_path / "out"
    assert run_cli(capsys, *FAST, "--out", str(out), "--cache-dir", str(tmp_path / "cache"))[0] == 0
    info = json.loads((out / "run.json").read_text())
    target, name = (info["config"]["pretrain"], "epochs") if field == "pretrain.epochs" else (info["config"], field)
    target[name] = value
    (tmp_path / "edited.json").write_text(json.dumps(info))
    code, _, err = run_cli(capsys, "--replay", str(tmp_path / "edited.json"), "--out", str(tmp_path / "again"))
    assert_one_line_error(code, err, expected)
    assert not (tmp_path / "again").exists()


# ---------------------------------------------------------------- values that cannot run

@pytest.mark.parametrize("argv, expected", [
    (["--methods", "dc", "--set", "dc.lr_img=-1"], "dc.lr_img=-1: must be > 0"),
    (["--methods", "dc", "--set", "dc.lr_img=inf"], "dc.lr_img=inf: must be finite"),
    (["--methods", "dd", "--set", "dd.beta1=2"], "dd.beta1=2: must be in [0, 1)"),
    (["--methods", "dsvg", "--set", "dsvg.momentum=1"], "dsvg.momentum must be in [0, 1)"),
    (["--methods", "dc", "--set", "dc.batch_real=0"], "dc.batch_real must be >= 1"),
    (["--seeds", "1000000000"], "bound 10000); pass --force"),
    (["--seed-list", "99999999999999999999999"], "must be in [0, 2^63)"),
    (["--evals-per-set", "1000000000"], "bound 1000); pass --force"),
    (["--methods", "herding", "--pretrain-epochs", "1000000000"], "bound 10000); pass --force"),
    (["--methods", "dsvg", "--set", "dsvg.steps=100000000"], "pass --force"),
])
def test_value_out_of_range_is_one_line_and_exit_2_before_any_work(capsys, tmp_path, monkeypatch, argv, expected):
    import dsvbench.cli as cli

    def no_work(*args, **kwargs):
        raise AssertionError("work started before the input was checked")
    monkeypatch.setattr(cli, "execute", no_work)
    code, _, err = run_cli(capsys, "--dataset", "digits", *argv, "--out", str(tmp_path / "out"),
                           "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(code, err, expected)
    assert not (tmp_path / "out").exists()


def test_force_lifts_a_work_bound_but_never_a_range():
    from dsvbench.options import build_parser, config_from_args
    from dsvbench.registry import UserError
    parse = lambda *a: config_from_args(build_parser().parse_args(["--dataset", "digits", *a]))  # noqa: E731
    assert parse("--methods", "dsvg", "--set", "dsvg.steps=100000000", "--force").force
    with pytest.raises(UserError, match="must be > 0"):
        parse("--methods", "dc", "--set", "dc.lr_img=-1", "--force")


def test_every_method_declares_ranges_that_its_defaults_meet():
    from dsvbench.methods import METHODS, load_methods
    from dsvbench.ranges import check_recipe
    load_methods()
    for name in METHODS.names():
        spec = METHODS.get(name)
        for dataset in ("digits", "mnist", "cifar10"):
            check_recipe(spec.make_recipe(dataset), name)          # raises if a default is out of range


def test_one_class_folder_is_refused(capsys, tmp_path):
    write_image_folder(tmp_path / "images", ("cat",))
    code, _, err = run_cli(capsys, "--dataset", "folder", "--data-root", str(tmp_path / "images"), "--methods",
                           "random", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(code, err, "needs at least 2")


def test_truncated_svhn_mat_is_one_line(capsys, tmp_path):
    (tmp_path / "svhn").mkdir()
    for name in ("train_32x32.mat", "test_32x32.mat"):
        (tmp_path / "svhn" / name).write_bytes(b"")
    code, _, err = run_cli(capsys, "--dataset", "svhn", "--data-root", str(tmp_path / "svhn"), "--methods", "random",
                           "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(code, err, "cannot read")


@pytest.mark.slow
def test_scheduler_that_is_not_dask_is_one_line_within_seconds(capsys, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    import dsvbench.cluster as cluster
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 0.5)   # the bound is the code's, not a wall-clock assertion
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()   # says nothing
    code, _, err = run_cli(capsys, *FAST, "--backend", "dask", "--scheduler",
                           f"tcp://127.0.0.1:{server.getsockname()[1]}", "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "no dask scheduler reachable")
    assert "sent no dask handshake within 0.5 s" in err
    server.close()


# ---------------------------------------------------------------- writes stay inside --out and --cache-dir

def test_out_inside_the_data_root_is_refused(capsys, tmp_path):
    write_image_folder(tmp_path / "images", ("cat", "dog"))
    for out in (tmp_path / "images" / "train", tmp_path):
        code, _, err = run_cli(capsys, "--dataset", "folder", "--data-root", str(tmp_path / "images"), "--methods",
                               "random", "--out", str(out), "--cache-dir", str(tmp_path / "cache"))
        assert_one_line_error(code, err, "the data root")
    assert not (tmp_path / "images" / "train" / "records").exists()


def test_a_link_at_an_output_name_is_replaced_not_written_through(capsys, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    out = tmp_path / "out"
    (out / "sets").mkdir(parents=True)
    (out / "sets" / "random-seed0.png").symlink_to(victim)
    (out / "sets" / ".random-seed0.png.tmp").symlink_to(victim)   # the old fixed temporary name
    code, _, err = run_cli(capsys, *FAST, "--out", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    assert victim.read_text() == "keep me"
    assert not (out / "sets" / "random-seed0.png").is_symlink()


def test_a_symlinked_folder_in_out_cannot_redirect_writes(capsys, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "sets").symlink_to(elsewhere)
    code, _, err = run_cli(capsys, *FAST, "--out", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert code == 1 and "Traceback" not in err and "outside --out" in err, err
    assert list(elsewhere.iterdir()) == []


def test_concurrent_writes_to_one_name_use_unique_temporary_files(tmp_path):
    target, errors = tmp_path / "sets" / "x.png", []

    def write(i: int) -> None:
        try:
            for _ in range(50):
                atomic.atomic_write_bytes(target, bytes([i]) * 1000)
        except OSError as error:
            errors.append(error)
    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(set(target.read_bytes())) == 1
    assert [p.name for p in target.parent.iterdir()] == ["x.png"]        # no temporary left behind


# ---------------------------------------------------------------- a full disk

def test_full_disk_while_writing_outputs_is_one_line_exit_1_and_no_complete_looking_table(capsys, tmp_path, monkeypatch):
    out = tmp_path / "out"
    common = [*TWO_SEEDS, "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    assert run_cli(capsys, *common)[0] == 0
    (out / "records" / sorted(os.listdir(out / "records"))[0]).unlink()    # one job left to redo
    real = atomic.atomic_write_text

    def full(path, text):
        if Path(path).name == "table.tex":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, text)
    monkeypatch.setattr("dsvbench.results.atomic_write_text", full)
    code, _, err = run_cli(capsys, *common)
    errors = [line for line in err.splitlines() if line.startswith("dsvbench:")]
    assert code == 1 and "Traceback" not in err and len(errors) == 1, err
    assert "No space left on device" in errors[0] and "rerun to complete" in errors[0]
    assert not (out / "table.md").exists() and not (out / "run.json").exists()
    assert len(list((out / "records").glob("*.json"))) == 2                 # finished records stay valid
    monkeypatch.setattr("dsvbench.results.atomic_write_text", real)
    assert run_cli(capsys, *common)[0] == 0 and (out / "table.md").exists()  # a rerun completes


@pytest.mark.slow
def test_full_tmpfs_is_one_line_exit_1(tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        result = subprocess.run([sys.executable, str(ROOT / "run_bench.py"), *FAST, "--out", str(mount / "out"),
                                 "--cache-dir", str(tmp_path / "cache")], capture_output=True, text=True, timeout=300)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "No space left on device" in result.stderr
        assert not (mount / "out" / "run.json").exists()
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_forgetting_with_one_pretraining_epoch_is_refused_before_any_work(capsys, tmp_path):
    """Forgetting counts forgetting events between two presentations: θ* trained for one epoch has none.
    Said at once (exit 2), not after θ* was trained and the other columns were retrained."""
    code, _, err = run_cli(capsys, "--dataset", "digits", "--methods", "random", "forgetting", "--pretrain-epochs",
                           "1", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(code, err, "--pretrain-epochs 1: forgetting reads θ*'s training dynamics")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
