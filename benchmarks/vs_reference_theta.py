"""Side by side with the authors' training loop: θ* pretraining steps and its test pass, same configuration, one thread.

    python benchmarks/vs_reference_theta.py --reference path/to/DatasetCondensation --data-root ../shared/datasets/mnist \\
        --repeats 2 --out results/vs-reference-mnist-cpu/theta

θ* (DeepKKT's pretrained network) has no code of the DSV authors.  The public loop closest to it trains the
same ConvNet on the whole training set: VICO-UoE/DatasetCondensation's ``utils.epoch('train', ...)`` over a
``DataLoader`` of the real images, as its ``main.py`` loads them (``get_dataset``, then ``images_all``) —
fetch it yourself; its files are copied into a scratch folder and patched as ``vs_reference.py`` patches them.
Each side runs in its own process from a short driver (``--child``): the reference's ``get_dataset``,
``get_network('ConvNet')`` and ``epoch``; ours :func:`dsvbench.pretrain.adam_stage` with the bookkeeping of
θ*'s training dynamics, on the dataset cache (warmed once, untimed).  Both train with Adam (θ*'s lr 1e-3,
weight decay 5e-3), batches of 256, **no augmentation** (θ* on MNIST crops; the reference's crop is a Python
loop per image, so the comparison is of the arithmetic both share).

Three configurations per side, the sides alternating: ``short`` (10 steps, then one pass over the 10 000 test
images), ``long`` (60 steps, then the test pass) and ``notest`` (10 steps).  CPU s per step = (long − short) / 50,
CPU s of the test pass = short − notest; start-up and data loading cancel.  No accuracy is compared: 60 steps
make no θ*.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from tabulate import tabulate

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from vs_reference import (FILES, PATCHES, SHIM, fingerprint, measured, mnist_reference_args,  # noqa: E402
                          prepared, write_outputs)

BATCH, LR, WEIGHT_DECAY = 256, 1e-3, 5e-3
CONFIGS = {"short": (10, True), "long": (60, True), "notest": (10, False)}   # (steps, test pass)


def parse_args(argv=None) -> argparse.Namespace:
    return mnist_reference_args(argv, __doc__.splitlines()[0], "vs_reference_theta.py", FILES,
                                "VICO-UoE/DatasetCondensation")


def reference_child(folder: str, data_root: str, steps: int, test: bool) -> None:
    """The reference's loop: its data loading, its ConvNet, ``epoch('train')`` over ``steps`` batches, ``epoch('test')``."""
    import types

    import torch
    sys.path.insert(0, folder)
    import utils   # the patched reference copy
    torch.set_num_threads(1)
    channel, im_size, num_classes, _, _, _, dst_train, _, testloader = utils.get_dataset("MNIST", data_root)
    images_all = torch.cat([torch.unsqueeze(dst_train[i][0], dim=0) for i in range(len(dst_train))], dim=0)
    labels_all = torch.tensor([dst_train[i][1] for i in range(len(dst_train))], dtype=torch.long)
    net = utils.get_network("ConvNet", channel, num_classes, im_size)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    criterion = torch.nn.CrossEntropyLoss()
    args = types.SimpleNamespace(device="cpu", dsa=False, dc_aug_param=None)
    subset = torch.utils.data.TensorDataset(images_all[:steps * BATCH], labels_all[:steps * BATCH])
    loader = torch.utils.data.DataLoader(subset, batch_size=BATCH, shuffle=True, num_workers=0)
    utils.epoch("train", loader, net, optimizer, criterion, args, aug=False)
    if test:
        print("test accuracy", utils.epoch("test", testloader, net, optimizer, criterion, args, aug=False)[1])


def our_child(cache_dir: str, data_root: str, steps: int, test: bool) -> None:
    """Ours: θ*'s Adam stage (``pretrain.adam_stage``, with ``_pretrain``'s dynamics bookkeeping) over ``steps``
    batches of the cached dataset, then ``training.accuracy`` on the test split."""
    import torch

    from dsvbench.config import DataConfig, PretrainRecipe
    from dsvbench.data.load import load_dataset
    from dsvbench.models import create_model
    from dsvbench.pretrain import adam_stage
    from dsvbench.training import accuracy
    torch.set_num_threads(1)
    dataset = load_dataset(DataConfig("mnist", root=data_root), cache_dir)
    recipe = PretrainRecipe.for_dataset("mnist", epochs=1, augment="none", lr=LR, weight_decay=WEIGHT_DECAY,
                                        batch_size=BATCH)
    generator = torch.Generator().manual_seed(recipe.seed)
    model = create_model("convnet", dataset.shape, generator)
    x, y = dataset.train_x[:steps * BATCH], dataset.train_y[:steps * BATCH]
    correct = torch.zeros(len(y), dtype=torch.bool)

    def on_batch(epoch: int, batch: torch.Tensor, logits: torch.Tensor) -> None:
        correct[batch] = logits.argmax(1) == y[batch]

    adam_stage(model, x, y, recipe, generator, on_batch)
    if test:
        print("test accuracy", accuracy(model.eval(), dataset.test_x, dataset.test_y))


def child_command(side: str, args, steps: int, test: bool, target: Path) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--child", side, str(target),
            str(args.data_root.resolve()), str(steps), str(int(test))]


def derived(rows: list[dict], side: str) -> dict:
    def cpu(config):
        return statistics.median(r["cpu_s"] for r in rows if r["side"] == side and r["config"] == config)

    steps = CONFIGS["long"][0] - CONFIGS["short"][0]
    return {"per_step_s": (cpu("long") - cpu("short")) / steps, "test_pass_s": cpu("short") - cpu("notest"),
            "short_s": cpu("short"), "peak_rss_mb": max(r["peak_rss_mb"] for r in rows if r["side"] == side)}


def main(argv=None) -> int:
    if argv is None and sys.argv[1:2] == ["--child"]:
        side, target, data_root, steps, test = sys.argv[2:7]
        (reference_child if side == "reference" else our_child)(target, data_root, int(steps), test == "1")
        return 0
    args = parse_args(argv)
    rows = []
    with prepared(args, "vs-reference-theta-") as (scratch, reference, warm, env):
        for repeat in range(args.repeats):
            for config, (steps, test) in CONFIGS.items():
                for side in ("reference", "ours"):
                    log = scratch / f"theta-{config}-{side}-{repeat}.log"
                    target = reference if side == "reference" else warm
                    extra = {"PYTHONPATH": str(SHIM)} if side == "reference" else {}
                    row = measured(child_command(side, args, steps, test, target), scratch, {**env, **extra}, log)
                    rows.append({"side": side, "config": config, "steps": steps, "test": test, "repeat": repeat, **row})
                    print(f"theta {config:6} {side:9} #{repeat}: wall {row['wall_s']:.1f} s, CPU {row['cpu_s']:.1f} s, "
                          f"peak {row['peak_rss_mb']:.0f} MB", flush=True)
    ref, ours = derived(rows, "reference"), derived(rows, "ours")
    table = [[what, f"{ref[key]:.3f}", f"{ours[key]:.3f} ({ours[key] / ref[key]:.2f}×)"]
             for what, key in (("CPU s per θ* step (Adam, 256 images, no augmentation)", "per_step_s"),
                               ("CPU s of the test pass (10 000 images)", "test_pass_s"),
                               ("CPU s of the short run (start-up, data, 10 steps, test pass)", "short_s"),
                               ("peak RSS MB", "peak_rss_mb"))]
    text = tabulate(table, ["measure (median over repeats)", "reference", "dsvbench (÷ reference)"], tablefmt="github")
    print(text)
    info = {"reference": fingerprint(args.reference, args.reference_commit),
            "shim": "benchmarks/reference_shim (torchvision.datasets.MNIST, transforms)",
            "configs": {k: {"steps": s, "test_pass": t} for k, (s, t) in CONFIGS.items()},
            "recipe": f"ConvNet width 128 on MNIST, Adam lr {LR} weight decay {WEIGHT_DECAY}, batches of {BATCH}, "
                      "no augmentation; reference: utils.epoch('train') of DatasetCondensation; ours: pretrain.adam_stage",
            "budget": "REDUCED: 10 and 60 of θ*'s 4 700 steps (20 epochs of 235); timings only, no accuracy"}
    write_outputs(args, text, info, PATCHES, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
