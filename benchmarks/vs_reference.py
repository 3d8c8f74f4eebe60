"""Side by side with the authors' code: DC, DSA and DM builds and their evaluation, same configuration, one thread.

    python benchmarks/vs_reference.py --reference path/to/DatasetCondensation --data-root ../shared/datasets/mnist \\
        --methods dc dsa dm --repeats 2 --out results/vs-reference-mnist-cpu

The reference is VICO-UoE/DatasetCondensation (``main.py`` for DC / DSA, ``main_DM.py`` for DM): fetch it
yourself (``git clone https://github.com/VICO-UoE/DatasetCondensation``); nothing of it is vendored here.
Its four files are copied into a scratch folder and patched there (``PATCHES``, printed and stored in
``run.json``): the final set is the one evaluated, the command line sets the retraining epochs, no download.
``benchmarks/reference_shim`` stands in for torchvision, which does not import beside the torch the suite pins.

Each method runs three configurations on each side, one process each, the sides alternating (A B A B ...):
``short`` (n updates, 1 retraining epoch), ``long`` (m updates, 1 epoch) and ``eval`` (n updates, E epochs).
The differences give the CPU seconds per update ((long − short) / (m − n)) and per retraining epoch
((eval − short) / (E − 1)); start-up and data loading cancel.  CPU time and peak RSS are each process's own
(``os.wait4``); the accuracy is the ``eval`` run's, after the same number of updates on both sides.  Both
sides run with OMP_NUM_THREADS=1, ours with ``--threads 1``; ours reads its dataset cache (warmed once,
untimed), the reference parses the IDX files in every run, as each does on a second run.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

from tabulate import tabulate

HERE = Path(__file__).resolve().parent
SHIM = HERE / "reference_shim"
FILES = ("main.py", "main_DM.py", "utils.py", "networks.py")
# (file, text, replacement, why): exact substrings of the reference files (tested at commit 306245d0)
PATCHES = [
    ("main.py", "np.arange(0, args.Iteration+1, 500).tolist() if args.eval_mode == 'S' or args.eval_mode == 'SS' "
                "else [args.Iteration]", "[args.Iteration]",
     "evaluate only the set after the last update (as ours does), not also the initial one"),
    ("main.py", "args.epoch_eval_train = 1000", "pass",
     "the command line's --epoch_eval_train sets the retraining epochs (main.py overwrote it with 1000 / 300)"),
    ("main.py", "args.epoch_eval_train = 300", "pass", "(same)"),
    ("main_DM.py", "np.arange(0, args.Iteration+1, 2000).tolist() if args.eval_mode == 'S' or args.eval_mode == 'SS' "
                   "else [args.Iteration]", "[args.Iteration]",
     "evaluate only the set after the last update (as ours does)"),
    ("utils.py", "download=True", "download=False", "no download (the shim reads local files only)"),
] + [("utils.py", f"{name}[:] = {name}[0]", f"{name}[:] = {name}[0].clone()",
      "DSA's Siamese draws: newer torch refuses a copy from an overlapping view (same values)")
     for name in ("theta", "randf", "randb", "rands", "randc", "translation_x", "translation_y", "offset_x", "offset_y")
] + [("networks.py", "out = out.view(out.size(0), -1)", "out = out.reshape(out.size(0), -1)",
      "newer torch returns a non-contiguous map after DSA's rotation, which .view refuses (same values)")]
# method -> (reference script and its flags, our method id, our iterations field, n, m)
METHODS = {
    "dc": ("main.py", ["--method", "DC"], "dc", 1, 6),
    "dsa": ("main.py", ["--method", "DSA", "--dsa_strategy", "color_crop_cutout_scale_rotate"], "dsa", 1, 6),
    "dm": ("main_DM.py", ["--dsa_strategy", "color_crop_cutout_flip_scale_rotate"], "dm", 1, 11),
}
REF_DATASET = {"mnist": "MNIST", "fashion": "FashionMNIST"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--reference", required=True, type=Path, help="a checkout of VICO-UoE/DatasetCondensation")
    add("--reference-commit", default="", help="its commit, when the folder is not a git checkout")
    add("--data-root", required=True, type=Path, help="folder holding MNIST/raw (torchvision layout)")
    add("--dataset", default="mnist", choices=sorted(REF_DATASET))
    add("--methods", nargs="+", default=["dc"], choices=sorted(METHODS))
    add("--ipc", type=int, default=1)
    add("--eval-epochs", type=int, default=300, help="E of the eval configuration")
    add("--repeats", type=int, default=2)
    add("--also-system", action="store_true",
        help="a third side: ours with DSVBENCH_MALLOC=system (the C library's allocator, less memory, more page faults)")
    add("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    missing = [f for f in FILES if not (args.reference / f).is_file()]
    if missing:
        parser.exit(2, f"vs_reference.py: error: {args.reference} lacks {', '.join(missing)} (a DatasetCondensation checkout?)\n")
    if not (args.data_root / REF_DATASET[args.dataset] / "raw").is_dir():
        parser.exit(2, f"vs_reference.py: error: no {REF_DATASET[args.dataset]}/raw under {args.data_root}\n")
    if args.eval_epochs < 2 or args.repeats < 1:
        parser.exit(2, "vs_reference.py: error: --eval-epochs must be at least 2 and --repeats at least 1\n")
    return args


def mnist_reference_args(argv, description: str, script: str, files, what: str) -> argparse.Namespace:
    """The arguments of a one-method side-by-side script (``vs_reference_mtt.py``, ``vs_reference_dd.py``): a
    reference checkout holding ``files``, the MNIST folder, repeats, the output folder; bad input exits 2."""
    parser = argparse.ArgumentParser(description=description)
    add = parser.add_argument
    add("--reference", required=True, type=Path, help=f"a checkout of {what}")
    add("--reference-commit", default="", help="its commit, when the folder is not a git checkout")
    add("--data-root", required=True, type=Path, help="folder holding MNIST/raw (torchvision layout)")
    add("--repeats", type=int, default=1)
    add("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    missing = [f for f in files if not (args.reference / f).is_file()]
    if missing:
        parser.exit(2, f"{script}: error: {args.reference} lacks {', '.join(missing[:3])} (a {what} checkout?)\n")
    if not (args.data_root / "MNIST" / "raw").is_dir():
        parser.exit(2, f"{script}: error: no MNIST/raw under {args.data_root}\n")
    if args.repeats < 1:
        parser.exit(2, f"{script}: error: --repeats must be at least 1\n")
    return args


def warm_dataset_cache(args, scratch: Path, env: dict[str, str], dataset: str = "mnist") -> Path:
    """Our dataset cache, built once untimed (a one-epoch random run) at ``scratch/warm-cache``."""
    warm = scratch / "warm-cache"
    print("warming our dataset cache (untimed) ...", flush=True)
    subprocess.run([sys.executable, str(HERE.parent / "run_bench.py"), "--dataset", dataset, "--data-root",
                    str(args.data_root.resolve()), "--methods", "random", "--seeds", "1", "--eval-epochs", "1",
                    "--threads", "1", "--quiet", "--out", str(scratch / "warm-out"), "--cache-dir", str(warm)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return warm


ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


class Scratch(NamedTuple):
    """What every timed run of a side-by-side script shares: a scratch folder, the patched reference copy in it,
    our warm dataset cache and the one-thread environment."""
    folder: Path
    reference: Path
    warm: Path
    env: dict[str, str]


@contextmanager
def prepared(args, prefix: str, files=FILES, patches=PATCHES, dataset: str = "mnist") -> Iterator[Scratch]:
    """``args.out`` made, then a temporary :class:`Scratch` (removed afterwards): ``files`` of ``args.reference``
    copied and patched, our dataset cache warmed (untimed), ``ONE_THREAD`` over this process's environment."""
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **ONE_THREAD}
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        folder = Path(name)
        reference = patched_reference(args.reference, folder, files, patches)
        yield Scratch(folder, reference, warm_dataset_cache(args, folder, env, dataset), env)


def linked_cache(warm: Path, cache: Path, only: tuple[str, ...] | None = None) -> Path:
    """A fresh cache folder for one timed run of ours: links to the warm cache's entries (``only`` those,
    when given), never its sets, so every run builds its own set."""
    cache.mkdir()
    for entry in warm.iterdir():
        if entry.name != "sets" and (only is None or entry.name in only):
            (cache / entry.name).symlink_to(entry)
    return cache


def patched_reference(reference: Path, scratch: Path, files=FILES, patches=PATCHES) -> Path:
    """The reference ``files`` copied into ``scratch/reference`` with ``patches`` applied (each must match once or more)."""
    target = scratch / "reference"
    target.mkdir()
    texts = {name: (reference / name).read_bytes().decode() for name in files}
    for name, old, new, _ in patches:
        if old not in texts[name]:
            raise SystemExit(f"{Path(sys.argv[0]).name}: error: {name} no longer contains {old!r}; update PATCHES")
        texts[name] = texts[name].replace(old, new)
    for name, text in texts.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)   # nested files (DD's datasets/, utils/)
        (target / name).write_bytes(text.encode())
    return target


def measured(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> dict:
    """Run ``command``; its wall time, CPU seconds (user + system) and peak RSS from the kernel."""
    start = time.perf_counter()
    with open(log, "w") as sink:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log.read_text().splitlines()[-5:]
        raise SystemExit(f"vs_reference.py: error: {' '.join(command[:3])} ... exited {process.returncode}: {tail}")
    return {"wall_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime,
            "user_s": usage.ru_utime, "system_s": usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def reference_run(args, method: str, updates: int, epochs: int, reference: Path, scratch: Path, env, log: Path) -> dict:
    script, flags, *_ = METHODS[method]
    result = scratch / f"ref-result-{log.stem}"
    command = [sys.executable, script, *flags, "--dataset", REF_DATASET[args.dataset], "--model", "ConvNet",
               "--ipc", str(args.ipc), "--init", "real", "--num_exp", "1", "--num_eval", "1",
               "--Iteration", str(updates), "--epoch_eval_train", str(epochs),
               "--data_path", str(args.data_root.resolve()), "--save_path", str(result)]
    row = measured(command, reference, {**env, "PYTHONPATH": str(SHIM)}, log)
    found = re.findall(r"Evaluate 1 random ConvNet, mean = ([0-9.]+)", log.read_text())
    row["accuracy"] = 100 * float(found[-1]) if found else float("nan")
    shutil.rmtree(result, ignore_errors=True)
    return row


def our_run(args, method: str, updates: int, epochs: int, warm: Path, scratch: Path, env, log: Path) -> dict:
    _, _, ours, *_ = METHODS[method]
    out, cache = scratch / f"ours-{log.stem}", linked_cache(warm, scratch / f"cache-{log.stem}")
    command = [sys.executable, str(HERE.parent / "run_bench.py"), "--dataset", args.dataset,
               "--data-root", str(args.data_root.resolve()), "--methods", ours, "--ipc", str(args.ipc),
               "--seeds", "1", "--set", f"{ours}.iterations={updates}", "--eval-epochs", str(epochs),
               "--threads", "1", "--jobs", "1", "--quiet", "--out", str(out), "--cache-dir", str(cache)]
    row = measured(command, scratch, env, log)
    with open(out / "results.csv") as handle:
        row["accuracy"] = float(next(csv.DictReader(handle))["test_accuracy"])
    shutil.rmtree(out)
    shutil.rmtree(cache)
    return row


def derived(rows: list[dict], method: str, side: str, epochs: int) -> dict:
    """CPU s per update and per retraining epoch, fixed cost, peak RSS, accuracy: medians over repeats."""
    _, _, _, n, m = METHODS[method]

    def cpu(config):
        return [r["cpu_s"] for r in rows if r["method"] == method and r["side"] == side and r["config"] == config]

    short, long, evaluation = (statistics.median(cpu(c)) for c in ("short", "long", "eval"))
    own = [r for r in rows if r["method"] == method and r["side"] == side]
    return {"per_update_s": (long - short) / (m - n), "per_epoch_s": (evaluation - short) / (epochs - 1),
            "short_s": short, "peak_rss_mb": max(r["peak_rss_mb"] for r in own),
            "accuracy": [round(r["accuracy"], 2) for r in own if r["config"] == "eval"]}


def fingerprint(reference: Path, commit: str, files=FILES) -> dict:
    try:
        commit = commit or subprocess.run(["git", "-C", str(reference), "rev-parse", "HEAD"], capture_output=True,
                                          text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return {"commit": commit or "unknown",
            "sha256": {f: hashlib.sha256((reference / f).read_bytes()).hexdigest() for f in files}}


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = []
    with prepared(args, "vs-reference-", dataset=args.dataset) as (scratch, reference, warm, env):
        sides = ["reference", "ours"] + (["ours-system"] if args.also_system else [])
        for repeat in range(args.repeats):
            for method in args.methods:
                n, m = METHODS[method][3:]
                for config, updates, epochs in (("short", n, 1), ("long", m, 1), ("eval", n, args.eval_epochs)):
                    for side in sides:
                        log = scratch / f"{method}-{config}-{side}-{repeat}.log"
                        if side == "reference":
                            row = reference_run(args, method, updates, epochs, reference, scratch, env, log)
                        else:
                            malloc = {"DSVBENCH_MALLOC": "system"} if side == "ours-system" else {}
                            row = our_run(args, method, updates, epochs, warm, scratch, {**env, **malloc}, log)
                        rows.append({"method": method, "config": config, "side": side, "repeat": repeat,
                                     "updates": updates, "epochs": epochs, **row})
                        print(f"{method} {config:5} {side:9} #{repeat}: wall {row['wall_s']:.1f} s, CPU {row['cpu_s']:.1f} s, "
                              f"peak {row['peak_rss_mb']:.0f} MB, accuracy {row['accuracy']:.2f}", flush=True)
    table = []
    for method in args.methods:
        ref, *ours = (derived(rows, method, side, args.eval_epochs) for side in sides)
        for what, key in (("CPU s per update", "per_update_s"), ("CPU s per retraining epoch", "per_epoch_s"),
                          ("CPU s of the short run", "short_s"), ("peak RSS MB", "peak_rss_mb")):
            table.append([method, what, f"{ref[key]:.3f}"] + [f"{o[key]:.3f} ({o[key] / ref[key]:.2f}×)" for o in ours])
        table.append([method, f"accuracy after {METHODS[method][3]} update(s), {args.eval_epochs} epochs",
                      " ".join(map(str, ref["accuracy"]))] + [" ".join(map(str, o["accuracy"])) for o in ours])
    headers = ["method", "measure (median over repeats)", "reference"] + [
        {"ours": "dsvbench (÷ reference)", "ours-system": "dsvbench, DSVBENCH_MALLOC=system"}[s] for s in sides[1:]]
    text = tabulate(table, headers, tablefmt="github")
    print(text)
    info = {"reference": fingerprint(args.reference, args.reference_commit),
            "shim": "benchmarks/reference_shim (torchvision.datasets.MNIST / FashionMNIST, transforms, save_image)",
            "configs": {k: v[3:] for k, v in METHODS.items()},
            "budget": f"REDUCED: n / m updates as in 'configs', {args.eval_epochs} retraining epochs, one model; "
                      "timings only, not accuracies to quote"}
    write_outputs(args, text, info, PATCHES, rows)
    return 0


def write_outputs(args, text: str, info: dict, patches: list, rows: list[dict]) -> None:
    """``table.md`` (the table and the budget line), ``run.json`` (``info`` with this code's commit, the
    patches, the arguments and the machine) and ``runs.csv`` (every run) under ``args.out``."""
    ours = subprocess.run(["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"], capture_output=True, text=True)
    info = {**info, "dsvbench": ours.stdout.strip() or "unknown",
            "patches": [{"file": f, "from": a, "to": b, "why": w} for f, a, b, w in patches],
            "config": {k: str(v) for k, v in vars(args).items()},
            "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                        "load_at_end": os.getloadavg()}}
    (args.out / "table.md").write_text(f"{text}\n\n{info['budget']}\n")
    (args.out / "run.json").write_text(json.dumps(info, indent=1) + "\n")
    with open(args.out / "runs.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    sys.exit(main())
