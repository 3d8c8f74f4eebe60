"""Side by side with MTT's authors' code: expert training and trajectory-matching updates, same configuration, one thread.

    python benchmarks/vs_reference_mtt.py --reference path/to/mtt-distillation --data-root ../shared/datasets/mnist \\
        --repeats 1 --out results/vs-reference-mnist-cpu/mtt

The reference is GeorgeCazenavette/mtt-distillation (``buffer.py`` trains the experts, ``distill.py`` matches
trajectories): fetch it yourself; nothing of it is vendored here.  Its files are copied into a scratch folder
and patched there (``PATCHES``, printed and stored in ``run.json``).  ``benchmarks/reference_shim`` stands in
for torchvision, ``wandb`` (offline, logs nothing) and ``kornia`` (ZCA only, unused without ``--zca``).

The configuration is ``mtt``'s defaults on MNIST, IPC 1 (20 student steps on the whole set of 10 images,
lr_img 1000, lr_lr 1e-5, α₀ 0.01, DSA, noise init), except the experts: one expert, one epoch, and so
``max_start_epoch`` 1 and ``expert_epochs`` 1 (the cost of an update does not depend on which epochs it
matches).  Each side trains its own expert and distills from it.  Four configurations per side, one process
each, the sides alternating:

* ``experts``: ours builds with no expert cached (it trains one, then n + 1 updates); the reference runs
  ``buffer.py --train_epochs 1``;
* ``data``: the same without the expert's epoch (ours: the expert cached; the reference: ``--train_epochs 0``);
* ``short`` / ``long``: n + 1 and m + 1 updates from the cached expert (``distill.py --Iteration n``).

CPU s per expert epoch = experts − data; per update = (long − short) / (m − n).  No accuracy is compared:
the reference evaluates during distillation only (patched out: its evaluation and image saving call
``.cuda()``), and one expert epoch makes no set worth retraining.
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

FILES = ("buffer.py", "distill.py", "utils.py", "networks.py", "reparam_module.py")
MNIST_BRANCH = """    elif dataset == 'MNIST':
        channel = 1
        im_size = (28, 28)
        num_classes = 10
        mean = [0.1307]
        std = [0.3081]
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=mean, std=std)])
        dst_train = datasets.MNIST(data_path, train=True, download=False, transform=transform)
        dst_test = datasets.MNIST(data_path, train=False, download=False, transform=transform)
        class_names = [str(c) for c in range(num_classes)]
        class_map = {x: x for x in range(num_classes)}

"""
# (file, text, replacement, why): exact substrings of the reference files (tested at commit 0c424937)
PATCHES = [
    ("utils.py", "    elif dataset == 'Tiny':", MNIST_BRANCH + "    elif dataset == 'Tiny':",
     "an MNIST branch in get_dataset (the reference reads CIFAR, Tiny ImageNet and ImageNet), as "
     "DatasetCondensation's utils.py loads it: ToTensor, Normalize(0.1307, 0.3081), class_map the identity"),
    ("buffer.py", 'test_loss, test_acc = epoch("test", dataloader=testloader, net=teacher_net, optimizer=None,\n'
                  '                                        criterion=criterion, args=args, aug=False)',
     "test_loss, test_acc = float('nan'), float('nan')",
     "the expert is not tested after each epoch (ours are not), so experts − data is the training alone"),
    ("distill.py", "eval_it_pool = np.arange(0, args.Iteration + 1, args.eval_it).tolist()", "eval_it_pool = []",
     "no evaluation during distillation: timing only (the evaluation's image saving calls .cuda())"),
    ("networks.py", "out = out.view(out.size(0), -1)", "out = out.reshape(out.size(0), -1)",
     "newer torch returns a non-contiguous map after DSA's rotation, which .view refuses (same values)"),
]
N, M = 1, 6   # updates of the short and long configurations (each runs one more, as both loops do)


def parse_args(argv=None) -> argparse.Namespace:
    return mnist_reference_args(argv, __doc__.splitlines()[0], "vs_reference_mtt.py", FILES, "GeorgeCazenavette/mtt-distillation")


def reference_run(args, config: str, reference: Path, buffers: Path, env, log: Path) -> dict:
    common = ["--dataset", "MNIST", "--model", "ConvNet", "--data_path", str(args.data_root.resolve()),
              "--buffer_path", str(buffers)]
    if config in ("experts", "data"):
        epochs = "1" if config == "experts" else "0"
        command = [sys.executable, "buffer.py", *common, "--num_experts", "1", "--train_epochs", epochs,
                   "--save_interval", "1"]
    else:
        command = [sys.executable, "distill.py", *common, "--ipc", "1", "--Iteration", str(N if config == "short" else M),
                   "--syn_steps", "20", "--expert_epochs", "1", "--max_start_epoch", "1", "--lr_img", "1000",
                   "--lr_lr", "1e-05", "--lr_teacher", "0.01", "--pix_init", "noise"]
    row = measured(command, reference, {**env, "PYTHONPATH": str(SHIM)}, log)
    if config == "data":   # its expert has no epochs: keep the one trained by the 'experts' run for distill.py
        for found in (buffers / "MNIST" / "ConvNet").glob("replay_buffer_*.pt"):
            if found.name != "replay_buffer_0.pt":
                found.unlink()
    return row


def our_run(args, config: str, warm: Path, scratch: Path, env, log: Path) -> dict:
    # the dataset cache always; the expert except in 'experts' (which trains it)
    out = scratch / f"ours-{log.stem}"
    cache = linked_cache(warm, scratch / f"cache-{log.stem}", only=("datasets",) if config == "experts" else None)
    updates = M if config == "long" else N
    command = [sys.executable, str(HERE.parent / "run_bench.py"), "--dataset", "mnist",
               "--data-root", str(args.data_root.resolve()), "--methods", "mtt", "--ipc", "1", "--seeds", "1",
               "--set", f"mtt.iterations={updates}", "--set", "mtt.num_experts=1", "--set", "mtt.max_start_epoch=1",
               "--set", "mtt.expert_epochs=1", "--eval-epochs", "1", "--threads", "1", "--jobs", "1", "--quiet",
               "--out", str(out), "--cache-dir", str(cache)]
    row = measured(command, scratch, env, log)
    if config == "experts":   # keep what it trained (not the dataset link) for the runs that read it
        for entry in cache.iterdir():
            if not entry.is_symlink() and entry.name != "sets" and not (warm / entry.name).exists():
                shutil.move(str(entry), warm / entry.name)
    shutil.rmtree(out)
    shutil.rmtree(cache)
    return row


def derived(rows: list[dict], side: str) -> dict:
    """CPU s per expert epoch and per update, the data run's cost, peak RSS: medians over repeats."""
    def cpu(config):
        return statistics.median(r["cpu_s"] for r in rows if r["side"] == side and r["config"] == config)

    own = [r for r in rows if r["side"] == side]
    return {"per_expert_epoch_s": cpu("experts") - cpu("data"), "per_update_s": (cpu("long") - cpu("short")) / (M - N),
            "data_s": cpu("data"), "peak_rss_mb": max(r["peak_rss_mb"] for r in own),
            "peak_rss_distill_mb": max(r["peak_rss_mb"] for r in own if r["config"] in ("short", "long"))}


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = []
    with prepared(args, "vs-reference-mtt-", FILES, PATCHES) as (scratch, reference, warm, env):
        buffers = scratch / "buffers"
        for repeat in range(args.repeats):
            for config in ("experts", "data", "short", "long"):
                for side in ("reference", "ours"):
                    log = scratch / f"mtt-{config}-{side}-{repeat}.log"
                    if side == "reference":
                        row = reference_run(args, config, reference, buffers, env, log)
                    else:
                        row = our_run(args, config, warm, scratch, env, log)
                    rows.append({"side": side, "config": config, "repeat": repeat, **row})
                    print(f"mtt {config:7} {side:9} #{repeat}: wall {row['wall_s']:.1f} s, CPU {row['cpu_s']:.1f} s, "
                          f"peak {row['peak_rss_mb']:.0f} MB", flush=True)
            if repeat + 1 < args.repeats:   # the next repeat trains its experts again
                shutil.rmtree(buffers)
                for entry in warm.iterdir():
                    if entry.name not in ("datasets", "sets"):
                        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    ref, ours = derived(rows, "reference"), derived(rows, "ours")
    table = [[what, f"{ref[key]:.3f}", f"{ours[key]:.3f} ({ours[key] / ref[key]:.2f}×)"]
             for what, key in (("CPU s per expert epoch (60 000 images, DSA)", "per_expert_epoch_s"),
                               ("CPU s per update (20 student steps, unrolled)", "per_update_s"),
                               ("CPU s of the data run", "data_s"),
                               ("peak RSS MB, distillation runs", "peak_rss_distill_mb"),
                               ("peak RSS MB, every run", "peak_rss_mb"))]
    text = tabulate(table, ["measure (median over repeats)", "reference", "dsvbench (÷ reference)"], tablefmt="github")
    print(text)
    info = {"reference": fingerprint(args.reference, args.reference_commit, FILES),
            "shim": "benchmarks/reference_shim (torchvision.datasets.MNIST, transforms; wandb offline; kornia absent)",
            "updates": {"short": N + 1, "long": M + 1},
            "recipe": "mtt defaults on MNIST IPC 1 except num_experts 1, max_start_epoch 1, expert_epochs 1",
            "budget": "REDUCED: one expert of one epoch, n / m updates as in 'updates'; timings only, no accuracy"}
    write_outputs(args, text, info, PATCHES, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
