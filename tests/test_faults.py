"""Fault injection: planted, corrupt and wrong inputs end in one line on stderr, never a traceback.

Each case plants one fault (a malicious pickle, a truncated cache file, a garbage record, a
bad flag) and checks three things: what the run did about it (refused, rebuilt, recomputed),
the exit code, and that the message is one line naming the file or the flag.
"""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dsvbench.cli import main

FAST = ["--dataset", "digits", "--methods", "random", "--seed-list", "0", "--eval-epochs", "1", "--quiet"]


class Planted:
    """Unpickling this runs ``touch <marker>``: what a malicious file would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:     # argparse's own errors exit instead of returning
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def lines_naming(err: str, path: Path) -> list[str]:
    return [line for line in err.splitlines() if str(path) in line]


def assert_one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert expected in err, err


# ---------------------------------------------------------------- 1. nothing planted runs

def test_malicious_cifar_pickle_is_refused_unrun(capsys, tmp_path):
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}))
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Planted(tmp_path / "pwned")}, protocol=2))
    code, _, err = run_cli(capsys, "--dataset", "cifar10", "--data-root", str(tmp_path / "data"),
                           "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"))
    assert not (tmp_path / "pwned").exists()
    assert_one_line_error(code, err, f"refusing to load {folder / 'data_batch_1'}")
    assert "posix.system" in err or "os.system" in err


def test_cifar_unpickler_reads_numpy_pickles_of_every_protocol(tmp_path):
    from dsvbench.data.formats import read_cifar_batch
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    for protocol in (2, 4, 5):
        path = tmp_path / f"batch{protocol}"
        path.write_bytes(pickle.dumps({"data": data, "labels": [np.int64(3), 1]}, protocol=protocol))
        images, labels = read_cifar_batch(path, "labels")
        assert images.shape == (2, 32, 32, 3) and labels.tolist() == [3, 1]


def set_cache_path(tmp_path: Path, cache: Path) -> Path:
    """The exact name the harness gives the set of ``FAST`` (random, seed 0) in ``cache``."""
    from dsvbench.options import build_parser, config_from_args
    from dsvbench.data import load_dataset
    from dsvbench.plan import method_recipe, set_key
    from dsvbench.methods import METHODS
    config = config_from_args(build_parser().parse_args([*FAST, "--out", str(tmp_path / "probe"),
                                                          "--cache-dir", str(cache)]))
    spec = METHODS.get("random")
    key = set_key(config, spec, method_recipe(config, spec, "digits"), load_dataset(config.data), None, 0)
    return cache / "sets" / f"random-{key}.pt"


@pytest.mark.parametrize("content", ["planted", "truncated"])
def test_planted_or_corrupt_cached_set_is_rebuilt_unrun(capsys, tmp_path, content):
    cache = tmp_path / "cache"
    path = set_cache_path(tmp_path, cache)
    path.parent.mkdir(parents=True)
    if content == "planted":
        torch.save({"set": Planted(tmp_path / "pwned"), "build_info": {}}, path)
    else:
        path.write_bytes(b"PK\x03\x04 not a whole zip")
    code, _, err = run_cli(capsys, *FAST, "--out", str(tmp_path / "out"), "--cache-dir", str(cache))
    assert code == 0 and not (tmp_path / "pwned").exists()
    assert "Traceback" not in err and len(lines_naming(err, path)) == 1, err
    assert "building it again" in lines_naming(err, path)[0]
    assert ("asks for posix.system" in err or "asks for os.system" in err) == (content == "planted")
    assert torch.load(path, weights_only=True)["set"]["labels"].numel() == 10    # rebuilt, now safe


def test_altered_but_well_formed_cached_set_is_rebuilt(capsys, tmp_path):
    # A cached set whose pixels were changed after it was written (still a valid file) must not be
    # used: the sha256 stored beside it no longer matches.
    cache = tmp_path / "cache"
    common = [*FAST, "--out", str(tmp_path / "out"), "--cache-dir", str(cache)]
    assert run_cli(capsys, *common)[0] == 0
    path = set_cache_path(tmp_path, cache)
    state = torch.load(path, weights_only=True)
    original = state["set"]["images"].clone()
    state["set"]["images"] = torch.zeros_like(original)
    torch.save(state, path)
    for record in (tmp_path / "out" / "records").glob("*.json"):
        record.unlink()
    code, _, err = run_cli(capsys, *common)
    assert code == 0 and len(lines_naming(err, path)) == 1, err
    assert "does not match the sha256" in lines_naming(err, path)[0]
    assert torch.equal(torch.load(path, weights_only=True)["set"]["images"], original)   # rebuilt


def test_every_method_set_round_trips_with_weights_only(tmp_path):
    """What the harness caches for each registered method loads with ``weights_only=True``."""
    import io
    from tests.test_registry_methods import METHODS, build
    for name in METHODS.names():
        buffer = io.BytesIO()
        torch.save({"set": build(name).state_dict(), "build_info": {"build_seconds": 1.0}}, buffer)
        buffer.seek(0)
        assert torch.load(buffer, weights_only=True)["set"]["labels"].numel() == 3, name


# ---------------------------------------------------------------- 2. caches you can trust

def test_fingerprint_hashes_every_pixel_once_per_object():
    from tests.conftest import make_tiny_dataset
    from dsvbench.pretrain import dataset_fingerprint
    dataset = make_tiny_dataset()
    before = dataset_fingerprint(dataset)
    memo = dataset._content_hash
    assert dataset_fingerprint(dataset) == before and dataset._content_hash is memo     # memoized
    dataset.train_x[0, 0, 0, 1] += 1e-3     # a pixel the old every-997th sample never looked at
    assert dataset_fingerprint(dataset) != before
    dataset.test_y[0] = 2                   # the test split counts too
    changed = dataset_fingerprint(dataset)
    assert dataset_fingerprint(dataset.to("cpu")) == changed


def test_fingerprint_of_an_mnist_sized_dataset_is_hashed_once(monkeypatch):
    """Its cost is measured in benchmarks, not here: every byte is hashed once per object, then memoized."""
    import hashlib
    from dsvbench.data import ImageDataset
    dataset = ImageDataset("mnist-sized", torch.zeros(60000, 1, 28, 28), torch.zeros(60000, dtype=torch.long),
                           torch.zeros(10000, 1, 28, 28), torch.zeros(10000, dtype=torch.long), (0.0,), (1.0,),
                           [str(c) for c in range(10)])
    fed = []
    real = hashlib.sha256

    class Counting:
        def __init__(self, *args):
            self.inner = real(*args)

        def update(self, data):
            fed.append(memoryview(data).nbytes)
            self.inner.update(data)

        def hexdigest(self):
            return self.inner.hexdigest()
    monkeypatch.setattr(hashlib, "sha256", Counting)
    first = dataset.content_hash()
    assert sum(fed) >= 4 * (60000 + 10000) * 28 * 28   # every pixel byte
    fed.clear()
    assert dataset.content_hash() == first and fed == []   # memoized


def write_image_folder(root: Path, classes: tuple[str, ...]) -> None:
    from PIL import Image
    for split, count in (("train", 3), ("test", 1)):
        for c, name in enumerate(classes):
            for i in range(count):
                (root / split / name).mkdir(parents=True, exist_ok=True)
                pixels = np.random.default_rng(10 * c + i).integers(0, 256, (4, 4, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")


def test_folder_that_gained_a_class_is_read_again(tmp_path):
    from dsvbench.config import DataConfig
    from dsvbench.data import load_dataset
    config = DataConfig("folder", str(tmp_path / "images"))
    write_image_folder(tmp_path / "images", ("cat", "dog"))
    assert load_dataset(config, tmp_path / "cache").num_classes == 2
    assert load_dataset(config, tmp_path / "cache").num_classes == 2          # from the cache
    write_image_folder(tmp_path / "images", ("cat", "dog", "emu"))
    assert load_dataset(config, tmp_path / "cache").num_classes == 3
    assert len(list((tmp_path / "cache" / "datasets").glob("*.pt"))) == 1       # the stale cache is gone


@pytest.mark.parametrize("damage", ["garbage", "tampered"])
def test_corrupt_dataset_cache_is_one_line_and_read_again(tmp_path, capsys, damage):
    from dsvbench.config import DataConfig
    from dsvbench.data import load_dataset
    config = DataConfig("folder", str(tmp_path / "images"))
    write_image_folder(tmp_path / "images", ("cat", "dog"))
    original = load_dataset(config, tmp_path / "cache")
    [path] = (tmp_path / "cache" / "datasets").glob("*.pt")
    if damage == "garbage":
        path.write_bytes(b"\x00garbage" * 10)
    else:
        state = torch.load(path, weights_only=True)
        state["raw"]["train_images"].view(-1)[0] ^= 0x55          # sha256 stays the old one
        torch.save(state, path)
    capsys.readouterr()
    again = load_dataset(config, tmp_path / "cache")
    err = capsys.readouterr().err
    assert torch.equal(again.train_x, original.train_x)
    assert len(err.strip().splitlines()) == 1 and str(path) in err and "Traceback" not in err
    assert ("sha256" in err) == (damage == "tampered")
    assert torch.load(path, weights_only=True)["sha256"] == original.content_hash()   # rewritten


@pytest.mark.parametrize("damage", ["truncated", "planted"])
def test_corrupt_pretrained_checkpoint_is_one_line_and_retrained(tiny_dataset, tmp_path, capsys, damage):
    from dsvbench.config import PretrainRecipe
    from dsvbench.pretrain import load_or_pretrain
    recipe = PretrainRecipe(epochs=2, batch_size=16, augment="crop", polish_steps=0)
    first = load_or_pretrain(tiny_dataset, "convnet_tiny", recipe, tmp_path, "cpu", progress=False)
    if damage == "truncated":
        first.path.write_bytes(first.path.read_bytes()[:200])
    else:
        torch.save({"model": Planted(tmp_path / "pwned")}, first.path)
    capsys.readouterr()
    again = load_or_pretrain(tiny_dataset, "convnet_tiny", recipe, tmp_path, "cpu", progress=False)
    err = capsys.readouterr().err
    assert lines_naming(err, first.path) == err.strip().splitlines() and len(err.strip().splitlines()) == 1
    assert "pretraining it again" in err and not (tmp_path / "pwned").exists()
    assert again.dynamics.shape == (2, len(tiny_dataset.train_y))
    assert torch.load(first.path, weights_only=True)["dynamics"].shape == (2, len(tiny_dataset.train_y))


def test_garbage_record_is_recomputed_and_the_table_survives(capsys, tmp_path):
    common = [*FAST, "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert run_cli(capsys, *common)[0] == 0
    [record] = (tmp_path / "out" / "records").glob("*.json")
    record.write_text('{"method": "random", "seed": 0, "test_acc')               # cut off mid-write
    code, out, err = run_cli(capsys, "--from", str(tmp_path / "out"), "--out", str(tmp_path / "rendered"))
    assert code == 2 and lines_naming(err, record) and "Traceback" not in err  # nothing left to render
    code, out, err = run_cli(capsys, *common)
    assert code == 0 and "Traceback" not in err and len(lines_naming(err, record)) == 1, err
    assert "computing it again" in err and "digits IPC=1: ours" in out
    assert json.loads(record.read_text())["test_accuracy"] > 0                    # recomputed
    assert (tmp_path / "out" / "records" / "unreadable" / record.name).exists()


# ---------------------------------------------------------------- 3. bad input: one line, exit code 2, no work

@pytest.mark.parametrize("argv, expected", [
    (["--eval-epochs", "0"], "--eval-epochs must be at least 1, got 0"),
    (["--pretrain-epochs", "0"], "--pretrain-epochs must be at least 1, got 0"),   # was: silently the default
    (["--set", "dc.nope=1"], "method 'dc' has no recipe field 'nope'"),            # dc is not in the run
    (["--set", "dc.iterations=many"], "--set dc.iterations='many': expected int"),
    (["--set", "nosuch.x=1"], "unknown method 'nosuch'"),
    (["--reference-dataset", "nosuch"], "--reference-dataset 'nosuch' is not a known dataset"),
    (["--reference-dataset", "cifar"], "did you mean 'cifar10'?"),
    (["--backend", "nonsense"], "--backend 'nonsense' is not a joblib backend; known: dask, loky"),
    (["--device", "meta"], "dsvbench runs on cpu, cuda[:N], mps or xpu, not meta"),
    (["--seeds", "x"], "argument --seeds: invalid int value: 'x'"),
    (["--set", "dsvg.steps=-5"], "dsvg.steps must be >= 1, got -5"),        # was: IndexError inside the job
    (["--set", "dsvg.steps=0"], "dsvg.steps must be >= 1, got 0"),          # was: scored 3.7 %
    (["--set", "dsvs.params=nope"], "params='nope' is not valid"),          # KKT recipes are checked too
    (["--set", "dsvg.lowres_steps=9000"], "dsvg.lowres_steps must be in [0, steps=4000]"),
    (["--set", "dsvg.theta_model=convnet_dsv", "--set", "dsvg.theta_polish=conv"], "theta_polish='conv' is not valid"),
    (["--set", "dsvs.theta_polish=all"], "theta_polish / theta_polish_steps set the method's own θ*"),
    (["--set", "dsvs.theta_model=convnet_dsv", "--set", "dsvs.theta_polish_steps=-1"],
     "theta_polish_steps must be >= 0, got -1"),
])
def test_bad_input_is_one_line_exit_2_before_any_work(capsys, tmp_path, argv, expected):
    code, _, err = run_cli(capsys, *FAST, "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"),
                           *argv)
    assert_one_line_error(code, err, expected)
    assert not (tmp_path / "out" / "records").exists() and not (tmp_path / "cache" / "sets").exists()


@pytest.mark.parametrize("device", ["mps", "xpu", "cuda:7"])
def test_unavailable_accelerator_is_refused_early(capsys, tmp_path, device):
    kind = device.split(":")[0]
    available = {"mps": torch.backends.mps.is_available(), "xpu": hasattr(torch, "xpu") and torch.xpu.is_available(),
                 "cuda": torch.cuda.device_count() > 7}[kind]
    if available:
        pytest.skip(f"this machine has {device}")
    code, _, err = run_cli(capsys, *FAST, "--out", str(tmp_path / "out"), "--device", device)
    assert_one_line_error(code, err, f"--device {device}")


@pytest.mark.parametrize("flag", ["--out", "--cache-dir"])
def test_out_or_cache_dir_that_is_a_file_is_refused(capsys, tmp_path, flag):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    folders = {"--out": str(tmp_path / "out"), "--cache-dir": str(tmp_path / "cache"), flag: str(blocker)}
    code, _, err = run_cli(capsys, *FAST, *(a for item in folders.items() for a in item))
    assert_one_line_error(code, err, f"{flag} {blocker} is a file, not a folder")


def test_unwritable_cache_dir_is_refused(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, *FAST, "--out", str(tmp_path / "out"), "--cache-dir", str(blocker / "cache"))
    assert_one_line_error(code, err, f"--cache-dir {blocker / 'cache'}: cannot write there")


def test_jobs_are_capped_by_cores_and_tasks():
    from dsvbench.options import build_parser, config_from_args
    config = config_from_args(build_parser().parse_args(
        ["--dataset", "digits", "--methods", "random", "herding", "--seeds", "3", "--jobs", "1000"]))
    assert 1 <= config.jobs <= min(os.cpu_count(), 6)


def test_set_for_a_method_outside_the_run_is_validated_but_not_noted():
    from dsvbench.options import build_parser, config_from_args
    from dsvbench.runinfo import budget_notes
    config = config_from_args(build_parser().parse_args(
        ["--dataset", "digits", "--methods", "random", "--set", "dc.iterations=5"]))
    assert not any("dc.iterations" in note for note in budget_notes(config))


def test_ctrl_c_is_one_line_with_the_finished_count_and_exit_130(capsys, tmp_path, monkeypatch):
    import dsvbench.api as api
    common = [*FAST, "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    assert run_cli(capsys, *common)[0] == 0

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(api, "run_all", interrupted)
    code, _, err = run_cli(capsys, *common, "--seed-list", "0", "1")
    assert code == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "interrupted; 1 records finished" in err and "rerun to resume" in err


@pytest.mark.slow
def test_real_sigint_during_retraining_ends_in_one_line_and_130(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, str(repo / "run_bench.py"), *FAST, "--eval-epochs", "3000", "--out", str(tmp_path / "out"),
         "--cache-dir", str(tmp_path / "cache")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # shells start children ignoring it
    assert proc.stdout.readline().startswith("dsvbench ")                  # the config is printed: it runs
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "interrupted; 0 records finished" in err


def test_garbage_run_json_does_not_stop_from(capsys, tmp_path):
    assert run_cli(capsys, *FAST, "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"))[0] == 0
    (tmp_path / "out" / "run.json").write_text("{ not json")
    code, out, err = run_cli(capsys, "--from", str(tmp_path / "out"), "--out", str(tmp_path / "rendered"))
    assert code == 0 and "digits IPC=1: ours" in out
    assert len(err.strip().splitlines()) == 1 and "run.json is unreadable" in err


# ---------------------------------------------------------------- 4. provenance

def test_provenance_names_this_checkout_once_per_process(monkeypatch):
    import subprocess
    import dsvbench.provenance as prov
    monkeypatch.setattr(prov, "_PROVENANCE", {})
    first = prov.provenance()
    assert set(first) == {"dsvbench_version", "git_commit", "git_dirty"}
    if (Path(prov.__file__).resolve().parents[1] / ".git").exists():
        assert len(first["git_commit"]) == 40 and isinstance(first["git_dirty"], bool)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("git asked twice"))
    assert prov.provenance() == first


def test_provenance_outside_a_git_checkout_is_none(tmp_path):
    from dsvbench.provenance import _git_state
    (tmp_path / "dsvbench").mkdir()
    assert _git_state(tmp_path / "dsvbench") == {"git_commit": None, "git_dirty": None}


def test_code_versions_note_flags_mixed_code():
    from dsvbench.records import code_versions
    clean = {"dsvbench_version": "0.1.0", "git_commit": "a" * 40, "git_dirty": False}
    assert code_versions([{}]) == []
    assert code_versions([clean, clean]) == ["code: dsvbench 0.1.0 at aaaaaaaaaaaa"]
    mixed = code_versions([clean, {**clean, "git_dirty": True}])
    assert len(mixed) == 1 and "MIXED" in mixed[0] and "uncommitted changes" in mixed[0]


def test_run_json_carries_commit_and_dirty_flag(capsys, tmp_path):
    assert run_cli(capsys, *FAST, "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"))[0] == 0
    info = json.loads((tmp_path / "out" / "run.json").read_text())
    assert {"git_commit", "git_dirty"} <= set(info) and info["versions"]["dsvbench"]


def test_corrupt_per_model_cache_is_one_line_and_recomputed(capsys, tmp_path):
    # herding's embeddings / dsvs's predictions (methods.base.cached_for_model): garbage on disk is
    # recomputed with one line naming the file, not a failed job.
    import dataclasses
    from dsvbench.methods.base import cached_for_model
    from tests.conftest import make_context, make_tiny_dataset
    ctx = dataclasses.replace(make_context(make_tiny_dataset()), cache_dir=tmp_path)
    (tmp_path / "embeddings.pt").write_bytes(b"garbage")
    value = cached_for_model(ctx, "embeddings", lambda: torch.ones(len(ctx.train_labels)))
    err = capsys.readouterr().err
    assert torch.equal(value, torch.ones(len(ctx.train_labels)))
    assert len(lines_naming(err, tmp_path / "embeddings.pt")) == 1 and "computing it again" in err
    again = cached_for_model(ctx, "embeddings", lambda: torch.zeros(len(ctx.train_labels)))
    assert torch.equal(again, value)                                   # the rewritten file is used


@pytest.mark.slow
def test_workers_end_when_the_run_is_killed(tmp_path):
    # kill -9 of the main process with --jobs 2: its loky workers must not go on as orphans.
    import os
    import signal
    import subprocess
    import sys
    import time
    repo = Path(__file__).resolve().parents[1]
    run = subprocess.Popen([sys.executable, str(repo / "run_bench.py"), "--dataset", "digits", "--methods", "dc",
                            "--seeds", "2", "--jobs", "2", "--quiet", "--out", str(tmp_path / "out"),
                            "--cache-dir", str(tmp_path / "cache")], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.time() + 120
    while time.time() < deadline and len(workers) < 2:
        time.sleep(0.5)
        children = Path(f"/proc/{run.pid}/task/{run.pid}/children")
        if children.exists():
            workers = {int(p) for p in children.read_text().split()
                       if "loky" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")}
    if len(workers) < 2:
        run.kill()
        pytest.skip("no loky workers seen (platform without /proc children)")
    time.sleep(3)                                  # the workers are inside their DC builds now
    os.kill(run.pid, signal.SIGKILL)
    killed_at = time.time()
    run.wait()

    def alive() -> list[int]:
        return [p for p in workers if Path(f"/proc/{p}").exists()
                and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]]
    # A worker watches its run once a second, or ends on its first task when it was still importing
    # torch: on a busy machine that can take a while, so wait for the end instead of a fixed sleep.
    # An orphan that works on runs for minutes (its DC build); 60 s tells the two apart on any load.
    deadline = time.time() + 60
    while alive() and time.time() < deadline:
        time.sleep(0.5)
    left = alive()
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived the killed run by 60 s"
    late = [r.name for r in (tmp_path / "out" / "records").glob("*.json") if r.stat().st_mtime > killed_at]
    assert late == [], f"records {late} were written by orphaned workers after the run was killed"


@pytest.mark.slow
def test_a_worker_whose_run_died_before_it_started_ends_at_once():
    # A loky worker still importing torch when its run is killed is re-parented before it can
    # watch its parent: it must end on its first task, not run it as an orphan.
    import socket
    import subprocess
    import sys
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    probe = "import sys; from dsvbench.dispatch import _exit_with_run; _exit_with_run({!r}, {}); print('ran')"
    host = socket.gethostname()
    orphan = subprocess.run([sys.executable, "-c", probe.format(host, dead.pid)], capture_output=True, text=True)
    assert (orphan.returncode, orphan.stdout) == (1, "")
    # a live run that is not the parent (a ray worker's case), or a run on another host: go on
    import os
    for run in ((host, os.getpid()), ("another-host", dead.pid)):
        alive = subprocess.run([sys.executable, "-c", probe.format(*run)], capture_output=True, text=True)
        assert (alive.returncode, alive.stdout.strip()) == (0, "ran")
