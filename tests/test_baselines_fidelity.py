"""Baselines at their published protocols (issue 12): the DD audit and the reference rows.

DD: what DD's build sees, how its column is evaluated, where its step sizes go.

(a) the build reads the training split only — the test split never reaches it;
(b) evaluation retrains fresh networks with the column's ``dc`` recipe on hard labels and
    scores them on the full test split;
(c) the learned step sizes stay inside DD's build: the saved set carries them only as
    metadata (no per-image weights) and retraining uses the evaluation recipe's lr.
"""
from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch

import dsvbench.tasks as tasks
from dsvbench.baselines import dd as dd_module
from dsvbench.cli import main
from dsvbench.config import BenchConfig, DataConfig, eval_recipe, to_dict
from dsvbench.data import ImageDataset
from dsvbench.methods import METHODS, load_methods
from dsvbench.references import REFERENCES, reference_for, reference_rows

DD_SMOKE = {"epochs": 2, "batch_size": 16, "distill_epochs": 1}


def nan_test_dataset(per_class: int = 8, num_classes: int = 10) -> ImageDataset:
    """Finite training data, a test split of NaN pixels: anything that reads it turns NaN."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(num_classes).repeat(per_class)
    train_x = torch.randn(len(labels), 1, 8, 8, generator=generator)
    test_x = torch.full((20, 1, 8, 8), float("nan"))
    return ImageDataset("digits", train_x, labels, test_x, torch.arange(20) % num_classes,
                        (0.0,), (1.0,), [str(c) for c in range(num_classes)])


def dd_context(dataset: ImageDataset, seed: int = 0):
    load_methods()
    spec = METHODS.get("dd")
    config = BenchConfig(data=DataConfig("digits"), model="convnet_tiny", methods=("dd",))
    return spec, tasks.make_context(config, spec, seed, dataset, pretrained=None)


def test_dd_context_holds_the_training_split_and_nothing_of_the_test_split():
    dataset = nan_test_dataset()
    _, ctx = dd_context(dataset)
    assert torch.equal(ctx.train_images, dataset.train_x) and torch.equal(ctx.train_labels, dataset.train_y)
    tensors = [v for v in vars(ctx).values() if isinstance(v, torch.Tensor)]
    tensors += [t for v in vars(ctx).values() if isinstance(v, tuple) for t in v if isinstance(t, torch.Tensor)]
    assert all(torch.isfinite(t.float()).all() for t in tensors)     # no NaN test pixel anywhere


def test_dd_build_reads_only_training_images_and_stays_finite(monkeypatch):
    dataset = nan_test_dataset()
    spec, ctx = dd_context(dataset)
    seen = []
    original = dd_module.unrolled_loss

    def spy(net, start, groups, group_labels, step_sizes, real_images, real_labels):
        seen.append((real_images.detach().clone(), real_labels.clone()))
        return original(net, start, groups, group_labels, step_sizes, real_images, real_labels)

    monkeypatch.setattr(dd_module, "unrolled_loss", spy)
    condensed = spec.build(ctx, spec.make_recipe("digits", {k: str(v) for k, v in DD_SMOKE.items()}))
    assert torch.isfinite(condensed.images).all()
    train_rows = {row.numpy().tobytes(): int(label) for row, label in zip(dataset.train_x, dataset.train_y)}
    assert seen and sum(len(images) for images, _ in seen) == 2 * len(dataset.train_y)   # 2 epochs
    for images, labels in seen:   # every real batch is rows of the training split, with their labels
        assert [train_rows.get(row.numpy().tobytes()) for row in images] == labels.tolist()


@pytest.fixture(scope="module")
def dd_cli_run(tmp_path_factory):
    """One tiny CLI run on digits (dd: 1 epoch, retraining 2 epochs, 1 seed), spying on the retraining."""
    out = tmp_path_factory.mktemp("dd-run")
    calls = []
    original = tasks.retrain_population

    def spy(models, generators, items, test_images, test_labels, evaluation, *args, **kwargs):
        calls.append({"items": [(x.clone(), y.clone()) for x, y in items], "test_images": test_images.clone(),
                      "test_labels": test_labels.clone(), "evaluation": evaluation})
        return original(models, generators, items, test_images, test_labels, evaluation, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tasks, "retrain_population", spy)
        code = main(["--dataset", "digits", "--methods", "dd", "--set", "dd.epochs=1", "--eval-epochs", "2",
                     "--seeds", "1", "--jobs", "1", "--quiet", "--out", str(out),
                     "--cache-dir", str(out / "cache")])
    assert code == 0
    dataset = tasks.load_dataset(DataConfig("digits"), str(out / "cache"))
    return out, calls, dataset


def test_dd_column_is_retrained_with_the_dc_recipe(dd_cli_run):
    out, calls, _ = dd_cli_run
    expected = dataclasses.replace(eval_recipe("dc", "digits"), epochs=2)
    assert [call["evaluation"] for call in calls] == [expected]
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert {k: row[f"eval.{k}"] for k in to_dict(expected)} == pytest.approx(to_dict(expected))


def test_dd_set_has_hard_integer_labels_and_no_weights(dd_cli_run):
    out, calls, dataset = dd_cli_run
    state = torch.load(out / "sets" / "dd-seed0.pt", weights_only=True)
    assert state["labels"].dtype == torch.long and state["labels"].ndim == 1
    assert sorted(state["labels"].tolist()) == list(range(dataset.num_classes))
    assert state["weights"] is None                                 # (c) no per-image step sizes
    (images, labels), = calls[0]["items"]                           # what retraining was given
    assert torch.equal(images.cpu(), state["images"]) and torch.equal(labels.cpu(), state["labels"])


def test_dd_step_sizes_stay_in_the_metadata(dd_cli_run):
    out, calls, _ = dd_cli_run
    metadata = json.loads((out / "sets" / "dd-seed0.json").read_text())
    assert len(metadata["step_sizes"]) == 3 and all(s > 0 for s in metadata["step_sizes"])
    lr = calls[0]["evaluation"].lr
    assert lr == 0.01 and all(abs(s - lr) > 1e-9 for s in metadata["step_sizes"])
    assert pd.read_csv(out / "results.csv").iloc[0]["eval.lr"] == 0.01


def test_dd_is_scored_on_the_full_test_split(dd_cli_run):
    out, calls, dataset = dd_cli_run
    assert torch.equal(calls[0]["test_images"].cpu(), dataset.test_x)
    assert torch.equal(calls[0]["test_labels"].cpu(), dataset.test_y)
    assert len(dataset.test_y) == 599                               # digits: 1797 images, 1/3 test
    correct = pd.read_csv(out / "results.csv").iloc[0]["test_accuracy"] * len(dataset.test_y) / 100
    assert correct == pytest.approx(round(correct), abs=1e-3)


def test_reference_rows_dsv_table_1_first_then_the_dc_paper():
    rows = reference_rows("cifar10", 1)
    assert [label.split(" / ")[0] for label, _ in rows] == ["DSV Table 1", "DC Table 1", "DSV conf."]
    assert rows[0][1] == REFERENCES[("cifar10", 1)]                  # the DSV row as it was
    assert {m: ref[:2] for m, ref in rows[1][1].items()} == {
        "random": (14.4, 2.0), "herding": (21.5, 1.2), "forgetting": (13.5, 1.2), "dc": (28.3, 0.5)}
    assert reference_for("cifar10", 1, "herding") == (21.2, 1.2, "DSV Table 1")   # Δ still against DSV
    assert {m: ref[:2] for m, ref in rows[2][1].items()} == {   # the NeurIPS version's IPC-1 figures
        "random": (14.26, 0.99), "dsvs": (16.83, 0.29), "dsvg": (21.68, 0.80)}


def test_reference_rows_mnist_is_the_dc_paper():
    (label, figures), = reference_rows("mnist", 1)
    assert label == "DC Table 1 / DSA Table 1"   # DSA's cell is the dsa column's
    assert {m: ref[:2] for m, ref in figures.items()} == {
        "random": (64.9, 3.5), "herding": (89.2, 1.6), "forgetting": (35.5, 5.6), "dc": (91.7, 0.5),
        "dsa": (88.7, 0.6)}
    assert reference_rows("digits", 1) == []
