"""Side by side with DD's authors' code: dataset distillation epochs, same configuration, one thread.

    python benchmarks/vs_reference_dd.py --reference path/to/dataset-distillation --data-root ../shared/datasets/mnist \\
        --repeats 1 --out results/vs-reference-mnist-cpu/dd

The reference is ssnl/dataset-distillation (Wang, Zhu, Torralba & Efros 2018; ``main.py --mode distill_basic``):
fetch it yourself; nothing of it is vendored here.  Its files are copied into a scratch folder and patched there
(``PATCHES``, printed and stored in ``run.json``); ``benchmarks/reference_shim`` stands in for torchvision.

The configuration is the reference's MNIST one: LeNet, random initialisation per iteration, 10 steps of one
image per class, 3 passes over them (30 unrolled steps), real batches of 1024, Adam 0.01 — ``dd`` at IPC 10
with ``--model lenet`` (``DDRecipe``'s defaults are the reference's).  The two LeNets are the same network
(both first convolutions pad 28 × 28 inputs by 2; 416 k multiply-adds per image; checked by
``tests/test_vs_reference.py``).  Two configurations per side, one process each, the sides
alternating: 1 and 2 epochs of 59 iterations; CPU s per epoch = the difference, in which start-up, data
loading, the final evaluation and the image saving of epoch 0 cancel.  No accuracy is compared: one epoch
of 400 makes no set worth quoting.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

from tabulate import tabulate

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from vs_reference import (SHIM, fingerprint, linked_cache, measured, mnist_reference_args,  # noqa: E402
                          prepared, write_outputs)

FILES = ("base_options.py", "basics.py", "main.py", "train_distilled_image.py", "test_train_distilled_image.py",
         "datasets/__init__.py", "datasets/caltech_ucsd_birds.py", "datasets/pascal_voc.py", "datasets/usps.py",
         "networks/__init__.py", "networks/networks.py", "networks/utils.py",
         "utils/__init__.py", "utils/baselines.py", "utils/distributed.py", "utils/io.py", "utils/logging.py",
         "utils/multiprocessing.py", "utils/utils.py")
# (file, text, replacement, why): exact substrings of the reference files (tested at commit c2886183)
PATCHES = [
    ("basics.py", "loss.backward(lr)", "loss.backward(lr.squeeze())",
     "newer torch refuses a [1]-shaped gradient for a 0-dim loss (the fix upstream made later, same values)"),
    ("train_distilled_image.py", "gw, = torch.autograd.grad(loss, w, lr, create_graph=True)",
     "gw, = torch.autograd.grad(loss, w, lr.squeeze(), create_graph=True)", "(same, in autograd.grad)"),
    ("train_distilled_image.py", "self.optimizer.zero_grad()", "self.optimizer.zero_grad(set_to_none=False)",
     "torch 2 sets .grad to None on zero_grad, which the reference's gradient accumulation then adds to"),
    ("base_options.py", "old_yaml = yaml.load(f)  # this is a dict",
     "old_yaml = yaml.load(f, Loader=yaml.Loader)  # this is a dict", "PyYAML 6 requires a Loader"),
]
CONFIGS = {"one": 1, "two": 2}   # epochs of each configuration


def parse_args(argv=None) -> argparse.Namespace:
    return mnist_reference_args(argv, __doc__.splitlines()[0], "vs_reference_dd.py", FILES, "ssnl/dataset-distillation")


def reference_run(args, epochs: int, reference: Path, scratch: Path, env, log: Path) -> dict:
    results = scratch / f"ref-results-{log.stem}"
    command = [sys.executable, "main.py", "--mode", "distill_basic", "--dataset", "MNIST", "--arch", "LeNet",
               "--device_id", "-1", "--num_workers", "0", "--dataset_root", str(args.data_root.resolve()),
               "--results_dir", str(results), "--epochs", str(epochs), "--distill_lr", "0.02", "--decay_epochs", "40"]
    row = measured(command, reference, {**env, "PYTHONPATH": str(SHIM)}, log)
    shutil.rmtree(results, ignore_errors=True)
    return row


def our_run(args, epochs: int, warm: Path, scratch: Path, env, log: Path) -> dict:
    out, cache = scratch / f"ours-{log.stem}", linked_cache(warm, scratch / f"cache-{log.stem}", only=("datasets",))
    command = [sys.executable, str(HERE.parent / "run_bench.py"), "--dataset", "mnist",
               "--data-root", str(args.data_root.resolve()), "--methods", "dd", "--model", "lenet", "--ipc", "10",
               "--seeds", "1", "--set", f"dd.epochs={epochs}", "--eval-epochs", "1", "--threads", "1", "--jobs", "1",
               "--quiet", "--out", str(out), "--cache-dir", str(cache)]
    row = measured(command, scratch, env, log)
    shutil.rmtree(out)
    shutil.rmtree(cache)
    return row


def derived(rows: list[dict], side: str) -> dict:
    def cpu(config):
        return statistics.median(r["cpu_s"] for r in rows if r["side"] == side and r["config"] == config)

    return {"per_epoch_s": cpu("two") - cpu("one"), "one_s": cpu("one"),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rows if r["side"] == side)}


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = []
    with prepared(args, "vs-reference-dd-", FILES, PATCHES) as (scratch, reference, warm, env):
        for repeat in range(args.repeats):
            for config, epochs in CONFIGS.items():
                for side in ("reference", "ours"):
                    log = scratch / f"dd-{config}-{side}-{repeat}.log"
                    row = (reference_run(args, epochs, reference, scratch, env, log) if side == "reference"
                           else our_run(args, epochs, warm, scratch, env, log))
                    rows.append({"side": side, "config": config, "epochs": epochs, "repeat": repeat, **row})
                    print(f"dd {config:3} {side:9} #{repeat}: wall {row['wall_s']:.1f} s, CPU {row['cpu_s']:.1f} s, "
                          f"peak {row['peak_rss_mb']:.0f} MB", flush=True)
    ref, ours = derived(rows, "reference"), derived(rows, "ours")
    table = [[what, f"{ref[key]:.3f}", f"{ours[key]:.3f} ({ours[key] / ref[key]:.2f}×)"]
             for what, key in (("CPU s per DD epoch (59 iterations of 1024 real images, 30 unrolled steps)", "per_epoch_s"),
                               ("CPU s of the 1-epoch run", "one_s"), ("peak RSS MB", "peak_rss_mb"))]
    text = tabulate(table, ["measure (median over repeats)", "reference", "dsvbench (÷ reference)"], tablefmt="github")
    print(text)
    info = {"reference": fingerprint(args.reference, args.reference_commit, FILES),
            "shim": "benchmarks/reference_shim (torchvision.datasets.MNIST, transforms)",
            "configs": CONFIGS, "recipe": "the reference's MNIST defaults (LeNet, 10 steps x 3 epochs, 1 image per "
                                          "class per step, batch 1024); ours: dd at IPC 10, --model lenet",
            "budget": "REDUCED: 1 and 2 of 400 epochs; timings only, no accuracy"}
    write_outputs(args, text, info, PATCHES, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
