"""``--backend dask``: a real LocalCluster of worker processes gives a loky run's records, a worker
killed mid-run loses nothing finished, and a bad ``--scheduler`` is one line and exit 2."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

pytest.importorskip("distributed")

from dsvbench.cli import main  # noqa: E402
from dsvbench.setcache import set_digest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "digits", "--pretrain-epochs", "1", "--eval-epochs", "2", "--quiet"]

# ``random``'s draw under another name, found by every process (the workers too) through the entry
# point of a dist-info folder on PYTHONPATH.  At seed $KILL_AT_SEED, once a record is on disk, it copies
# the records present and SIGKILLs its own worker process — once per seed (a marker file says so).
PLUGIN = '''
import os, shutil, signal, time
from dataclasses import dataclass
from pathlib import Path
from dsvbench.baselines.random import RandomRecipe, build_random
from dsvbench.methods import register_method

@dataclass(frozen=True)
class KillableRecipe:
    pass

@register_method("killable", table_name="killable", group="selection", recipe=KillableRecipe,
                 eval_recipe="dc", needs_data=True)
def build_killable(ctx, recipe):
    seed, log = ctx.generator.initial_seed(), Path(os.environ["BUILD_LOG"])
    with open(log, "a") as handle:
        handle.write(f"{seed}\\n")
    if str(seed) == os.environ.get("KILL_AT_SEED") and not log.with_suffix(f".killed-{seed}").exists():
        records = Path(os.environ["RECORDS"])
        deadline = time.time() + 120
        while not list(records.glob("*.json")) and time.time() < deadline:
            time.sleep(0.05)
        shutil.copytree(records, log.with_suffix(f".at-kill-{seed}"), ignore=shutil.ignore_patterns("failed"))
        log.with_suffix(f".killed-{seed}").touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return build_random(ctx, RandomRecipe())
'''


def records(out: Path) -> dict[tuple[str, int, int], dict]:
    found = (json.loads(p.read_text()) for p in (out / "records").glob("*.json"))
    return {(r["method"], r["seed"], r["eval_index"]): r for r in found}


def outcome(out: Path, method: str, keys: bool = False) -> dict[int, tuple]:
    """Per seed of ``method``: what must not depend on where it ran (accuracies, the set's sha256 and,
    with ``keys``, its set and evaluation keys)."""
    return {seed: (r["test_accuracy"], r["set_train_accuracy"],
                   set_digest(torch.load(out / "sets" / f"{method}-seed{seed}.pt", weights_only=True)),
                   *((r["set_key"], r["eval_key"]) if keys else ()))
            for (name, seed, _), r in records(out).items() if name == method}


@pytest.fixture(scope="module")
def loky_run(tmp_path_factory) -> Path:
    """The uninterrupted reference: ``random`` and ``herding``, 4 seeds, 2 loky workers."""
    out = tmp_path_factory.mktemp("loky") / "run"
    assert main([*TINY, "--methods", "random", "herding", "--seeds", "4", "--jobs", "2", "--out", str(out),
                 "--cache-dir", str(out.parent / "cache")]) == 0
    return out


@pytest.mark.slow
def test_scheduler_of_a_local_cluster_gives_the_records_of_a_loky_run(loky_run, tmp_path, capsys):
    """``--scheduler`` of a real LocalCluster of two worker processes (``--jobs`` defaults to its 2
    threads, as in the loky run); herding reads θ* from the shared cache."""
    from distributed import LocalCluster
    theta = tmp_path / "cache" / "pretrained"
    theta.mkdir(parents=True)
    for checkpoint in (loky_run.parent / "cache" / "pretrained").glob("*.pt"):   # θ* only: every set is rebuilt
        shutil.copy(checkpoint, theta)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        assert main([*TINY, "--methods", "random", "herding", "--seeds", "4", "--backend", "dask",
                     "--scheduler", cluster.scheduler_address,
                     "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "[done]" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["jobs"] == 2
    assert len(list((tmp_path / "cache" / "sets").glob("*.pt"))) == 8      # built by the workers
    for method in ("random", "herding"):
        assert outcome(tmp_path / "run", method, keys=True) == outcome(loky_run, method, keys=True)


def run_killable(tmp_path: Path, kill_at: int, **dask_config: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, which starts a LocalCluster of 2 workers (they inherit PYTHONPATH)."""
    plugin = tmp_path / "plugin"
    if not plugin.exists():
        (plugin / "killable_plugin-0.1.dist-info").mkdir(parents=True)
        (plugin / "killable_plugin.py").write_text(PLUGIN)
        (plugin / "killable_plugin-0.1.dist-info" / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: killable-plugin\nVersion: 0.1\n")
        (plugin / "killable_plugin-0.1.dist-info" / "entry_points.txt").write_text(
            "[dsvbench.methods]\nkillable = killable_plugin\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), str(REPO)]),
           "BUILD_LOG": str(tmp_path / "builds.log"), "RECORDS": str(tmp_path / "run" / "records"),
           "KILL_AT_SEED": str(kill_at),
           **{f"DASK_DISTRIBUTED__SCHEDULER__{key.upper()}": value for key, value in dask_config.items()}}
    code = "import sys; from dsvbench.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *TINY, "--methods", "killable", "--seeds", "4", "--jobs", "2",
                           "--backend", "dask", "--out", str(tmp_path / "run"),
                           "--cache-dir", str(tmp_path / "cache")],
                          env=env, capture_output=True, text=True, timeout=180)


def assert_records_at_kill_intact(tmp_path: Path, seed: int) -> None:
    at_kill = {p.name: p.read_text() for p in (tmp_path / f"builds.at-kill-{seed}").glob("*.json")}
    assert at_kill, "the worker was killed before any record was on disk"
    assert all((tmp_path / "run" / "records" / name).read_text() == text for name, text in at_kill.items())


@pytest.mark.slow
def test_killed_worker_loses_nothing_finished(loky_run, tmp_path):
    """Tasks: seeds (0, 1) and (2, 3).  Run 1, no retries allowed: the worker building seed 2 is
    killed once a record of seeds 0, 1 is on disk; that task fails, the other's records stay.  Run 2,
    dask's default retries: the worker building seed 3 is killed; the scheduler runs the task again on
    a live worker (seed 2's set from the cache) and the run completes — equal to the uninterrupted run."""
    killed = run_killable(tmp_path, kill_at=2, allowed_failures="0")
    assert killed.returncode == 1, killed.stderr
    assert "[failed] killable seed 2, 3: KilledWorker" in killed.stderr
    assert sorted(records(tmp_path / "run")) == [("killable", 0, 0), ("killable", 1, 0)]
    assert sorted(p.name for p in (tmp_path / "run" / "records" / "failed").glob("*")) == \
        ["killable-seed2.json", "killable-seed3.json"]
    assert_records_at_kill_intact(tmp_path, 2)

    rerun = run_killable(tmp_path, kill_at=3)
    assert rerun.returncode == 0, rerun.stderr
    builds = Counter(map(int, (tmp_path / "builds.log").read_text().split()))
    assert builds == Counter({0: 1, 1: 1, 2: 2, 3: 2})      # 0 and 1 never again; 2 once per run
    assert_records_at_kill_intact(tmp_path, 2)
    assert_records_at_kill_intact(tmp_path, 3)
    assert not list((tmp_path / "run" / "records" / "failed").glob("*"))
    assert outcome(tmp_path / "run", "killable") == outcome(loky_run, "random")   # killable draws as random


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("argv, expected", [
    (["--scheduler", "tcp://127.0.0.1:8786"], "--scheduler applies to --backend dask only"),
    (["--backend", "dask", "--scheduler", "no-port-here"], "no dask scheduler reachable there"),
    (["--backend", "dask", "--scheduler", "tcp://127.0.0.1:{port}"], "no dask scheduler reachable there"),
])
def test_bad_scheduler_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, expected):
    monkeypatch.setattr("dsvbench.cluster.CONNECT_TIMEOUT", 1)
    argv = [arg.format(port=free_port()) for arg in argv]
    code = main(["--dataset", "digits", "--methods", "random", "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "records").exists()


@pytest.mark.parametrize("workers, gpus, expected", [
    ({"w0": ("a", 1), "w1": ("a", 1)}, {"w0": "0", "w1": "1"}, None),            # dask cuda worker
    ({"w0": ("a", 1), "w1": ("b", 1)}, {}, None),                                # one GPU per node
    ({"w0": ("a", 4)}, {"w0": "0"}, "runs 4 tasks at once on its GPU"),
    ({"w0": ("a", 1), "w1": ("a", 1)}, {}, "share GPU 0 of a"),                  # no CUDA_VISIBLE_DEVICES
])
def test_gpu_workers_must_each_have_their_own_gpu(workers, gpus, expected):
    from dsvbench.cluster import _check_one_task_per_gpu
    from dsvbench.registry import UserError
    info = {addr: {"host": host, "nthreads": threads} for addr, (host, threads) in workers.items()}
    if expected is None:
        _check_one_task_per_gpu("tcp://s:8786", info, gpus)
    else:
        with pytest.raises(UserError, match=expected):
            _check_one_task_per_gpu("tcp://s:8786", info, gpus)
