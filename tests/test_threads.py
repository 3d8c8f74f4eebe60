"""--threads: the run's torch threads, shared by its workers, stored in run.json; a busy machine is said."""
import json
import os

import torch

from dsvbench import process
from dsvbench.cli import main
from dsvbench.options import build_parser, config_from_args


def test_workers_share_the_runs_threads_never_more():
    assert process.worker_threads(4, 2) == 2 and process.worker_threads(5, 2) == 2
    assert process.worker_threads(1, 2) == 1 and process.worker_threads(2, 8) == 1   # at least one each
    assert process.run_threads(3) == 3
    assert 1 <= process.run_threads(None) <= process.usable_cores()


def test_threads_flag_is_checked_and_stored(tmp_path, capsys):
    assert main(["--dataset", "digits", "--methods", "random", "--threads", "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--threads must be at least 1" in err and len(err.strip().splitlines()) == 1
    before = torch.get_num_threads()
    try:
        assert main(["--dataset", "digits", "--methods", "random", "--seeds", "1", "--eval-epochs", "1", "--quiet",
                     "--threads", "1", "--out", str(tmp_path / "run"), "--cache-dir", str(tmp_path / "cache")]) == 0
        info = json.loads((tmp_path / "run" / "run.json").read_text())
        assert info["config"]["threads"] == 1 and info["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_replay_may_change_the_threads(tmp_path):
    config = config_from_args(build_parser().parse_args(
        ["--dataset", "digits", "--methods", "random", "--threads", "2", "--out", str(tmp_path / "o")]))
    assert config.threads == 2
    from dsvbench.replay import ALLOWED
    assert "threads" in ALLOWED


def test_a_busy_machine_is_said_not_acted_on(monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))
    note = process.busy_note(2)
    assert note is not None and "--threads 1" in note
    assert process.busy_note(1) is None   # one thread already: nothing to advise
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert process.busy_note(2) is None


def test_loky_dask_and_the_full_data_pool_share_one_rule():
    import inspect

    from dsvbench import cluster, dispatch, fulldata
    for module in (dispatch, cluster, fulldata):
        source = inspect.getsource(module)
        assert "worker_threads(" in source and "get_num_threads() //" not in source
