"""dsvbench evaluate: sets made elsewhere, scored like a run's; a run's own sets give its accuracies exactly."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dsvbench.cli import main

DIGITS = ["--dataset", "digits", "--eval-epochs", "2", "--quiet"]


def records(folder: Path, method: str) -> dict[tuple[int, int], float]:
    found = {}
    for path in (folder / "records").glob(f"{method}-seed*.json"):
        record = json.loads(path.read_text())
        found[(record["seed"], record["eval_index"])] = record["test_accuracy"]
    return found


def evaluate(capsys, *argv):
    code = main(["evaluate", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_runs_own_sets_give_exactly_its_accuracies(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--methods", "random", "--seeds", "2", *DIGITS, "--out", str(run),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    code, out, _ = evaluate(capsys, run, "--method", "random", "--name", "again", *DIGITS, "--no-random",
                            "--out", tmp_path / "eval", "--cache-dir", tmp_path / "cache2")
    assert code == 0, out
    assert "read as already normalized" in out
    assert records(tmp_path / "eval", "again") == records(run, "random") and len(records(run, "random")) == 2
    table = (tmp_path / "eval" / "table.md").read_text()
    assert "again" in table and "EVALUATED SETS again" in table and "REDUCED/CHANGED BUDGET" in table


def test_an_npz_of_bytes_is_normalized_said_and_scored_beside_random(tmp_path, capsys):
    from sklearn.datasets import load_digits
    digits = load_digits()
    picks = [int(np.flatnonzero(digits.target == c)[0]) for c in range(10)]
    images = (digits.images[picks] * 255 / 16).round().astype(np.uint8)        # 0–255 bytes, N×H×W
    np.savez(tmp_path / "mine.npz", images=images, labels=digits.target[picks])
    code, out, err = evaluate(capsys, tmp_path / "mine.npz", *DIGITS, "--seeds", "2", "--out", tmp_path / "eval",
                              "--cache-dir", tmp_path / "cache", "--retrain-engine", "plain")
    assert code == 0, err
    assert "read as 0–255 pixel values, normalized" in out
    run = json.loads((tmp_path / "eval" / "run.json").read_text())
    assert run["config"]["retrain_engine"] == "plain"
    assert {json.loads(f.read_text())["retrain_engine"] for f in (tmp_path / "eval" / "records").glob("*.json")} == {"plain"}
    mine = records(tmp_path / "eval", "external")
    assert set(mine) == {(0, 0), (1, 0)} and all(0 <= a <= 100 for a in mine.values())
    assert len(records(tmp_path / "eval", "random")) == 2                   # the IOR row's reference
    assert "IOR" in (tmp_path / "eval" / "table.md").read_text()


def test_a_folder_of_class_pngs(tmp_path, capsys):
    for c in range(10):
        (tmp_path / "set" / str(c)).mkdir(parents=True)
        Image.fromarray(np.full((8, 8), 16 * c, dtype=np.uint8)).save(tmp_path / "set" / str(c) / "a.png")
    code, out, err = evaluate(capsys, tmp_path / "set", *DIGITS, "--no-random", "--out", tmp_path / "eval",
                              "--cache-dir", tmp_path / "cache")
    assert code == 0, err
    assert "10 images (1 per class)" in out and len(records(tmp_path / "eval", "external")) == 1


def _npz(path, images, labels):
    np.savez(path, images=images, labels=labels)
    return path


@pytest.mark.parametrize("case, message", [
    ("shape", "images of shape"), ("labels", "labels must lie in"), ("per-class", "images per class differ"),
    ("nan", "NaN"), ("float-labels", "labels must be integers")])
def test_bad_sets_are_one_line_and_exit_2_before_any_work(tmp_path, capsys, case, message):
    images = np.zeros((20, 8, 8), dtype=np.float32)
    labels = np.repeat(np.arange(10), 2)
    if case == "shape":
        images = np.zeros((20, 7, 8), dtype=np.float32)
    elif case == "labels":
        labels = labels + 1
    elif case == "per-class":
        labels = labels.copy()
        labels[0] = 1
    elif case == "nan":
        images[3, 2, 2] = np.nan
    elif case == "float-labels":
        labels = labels + 0.5
    path = _npz(tmp_path / "bad.npz", images, labels)
    code, out, err = evaluate(capsys, path, *DIGITS, "--out", tmp_path / "eval", "--cache-dir", tmp_path / "cache")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "eval").exists()


class _Planted:
    def __reduce__(self):
        return (Path.touch, (Path(PLANTED),))


PLANTED = ""


def test_no_pickle_is_executed(tmp_path, capsys):
    global PLANTED
    PLANTED = str(tmp_path / "pwned")
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"images": _Planted(), "labels": torch.zeros(1)}, handle, protocol=2)
    code, _, err = evaluate(capsys, tmp_path / "evil.pt", *DIGITS, "--out", tmp_path / "eval",
                            "--cache-dir", tmp_path / "cache")
    assert code == 2 and "without executing pickle" in err
    assert not Path(PLANTED).exists()


def test_the_python_call_is_the_command(tmp_path):
    import dsvbench
    run = tmp_path / "run"
    assert main(["--methods", "random", "--seeds", "2", *DIGITS, "--out", str(run),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    results = dsvbench.evaluate([run], dataset="digits", method="random", name="again", eval_epochs=2,
                                no_random=True, out=str(tmp_path / "eval"), cache_dir=str(tmp_path / "c2"))
    assert {(r["seed"], r["eval_index"]): r["test_accuracy"] for r in results.records} == records(run, "random")
    assert list(results.summary["method"]) == ["again"]
    with pytest.raises(dsvbench.UserError, match="unknown option"):
        dsvbench.evaluate([run], dataset="digits", nmae="x")


def test_the_evaluated_column_is_not_left_in_the_registry(tmp_path, capsys):
    from dsvbench.methods import METHODS
    path = _npz(tmp_path / "set.npz", np.zeros((10, 8, 8), dtype=np.float32), np.arange(10))
    assert evaluate(capsys, path, *DIGITS, "--name", "passing", "--no-random", "--out", tmp_path / "e",
                    "--cache-dir", tmp_path / "c")[0] == 0
    bad = _npz(tmp_path / "bad.npz", np.zeros((10, 7, 8), dtype=np.float32), np.arange(10))
    assert evaluate(capsys, bad, *DIGITS, "--name", "failing", "--out", tmp_path / "f")[0] == 2
    assert "passing" not in METHODS and "failing" not in METHODS


def test_soft_labels_and_a_learned_rate_are_read_used_and_said(tmp_path, capsys):
    """An .npz with soft_labels and lr: --soft-labels retrains on the distributions (a changed recipe,
    marked), --eval-recipe mtt at the set's rate; a file without soft labels is refused for --soft-labels."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    picks = [int(np.flatnonzero(digits.target == c)[0]) for c in range(10)]
    images, labels = (digits.images[picks] * 255 / 16).round().astype(np.uint8), digits.target[picks]
    soft = np.full((10, 10), 0.02, dtype=np.float32)
    soft[np.arange(10), labels] = 0.82
    np.savez(tmp_path / "soft.npz", images=images, labels=labels, soft_labels=soft, lr=np.float32(0.03))
    np.savez(tmp_path / "hard.npz", images=images, labels=labels)
    code, out, _ = evaluate(capsys, tmp_path / "soft.npz", *DIGITS, "--soft-labels", "--eval-recipe", "mtt",
                            "--no-random", "--out", tmp_path / "eval", "--cache-dir", tmp_path / "cache")
    assert code == 0, out
    assert "with soft labels" in out and "learned learning rate 0.03" in out
    record = json.loads(next((tmp_path / "eval" / "records").glob("external-seed0-*.json")).read_text())
    assert record["retrain_soft_labels"] is True and record["retrain_lr_from"] == "set"
    assert record["retrain_lr"] == pytest.approx(0.03) and record["eval.soft_labels"] is True
    assert "retraining soft_labels=True (default False)" in (tmp_path / "eval" / "table.md").read_text()
    code, out, err = evaluate(capsys, tmp_path / "hard.npz", *DIGITS, "--soft-labels", "--out", tmp_path / "e2",
                              "--cache-dir", tmp_path / "cache")
    assert code == 2 and "holds no soft_labels array" in err and not (tmp_path / "e2").exists()
