"""Fault injection: planted, corrupt and wrong inputs end in one line on stderr, never a traceback.

Each case plants one fault (a malicious pickle, a truncated cache file, a garbage record, a
bad flag) and checks three things: what the run did about it (refused, rebuilt, recomputed),
the exit code, and that the message is one line naming the file or the flag.
"""
from __future__ import annotations

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
    code = main(list(argv))
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
    from dsvbench.cli import build_parser, config_from_args
    from dsvbench.data import load_dataset
    from dsvbench.harness import method_recipe, set_key
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
    assert torch.load(path, weights_only=True)["set"]["labels"].numel() == 10    # rebuilt, now safe


def test_every_method_set_round_trips_with_weights_only(tmp_path):
    """What the harness caches for each registered method loads with ``weights_only=True``."""
    import io
    from tests.test_registry_methods import METHODS, build
    for name in METHODS.names():
        buffer = io.BytesIO()
        torch.save({"set": build(name).state_dict(), "build_info": {"build_seconds": 1.0}}, buffer)
        buffer.seek(0)
        assert torch.load(buffer, weights_only=True)["set"]["labels"].numel() == 3, name
