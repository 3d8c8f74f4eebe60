"""benchmarks/vs_reference.py without the reference code: its torchvision stand-in, its patches, its arithmetic."""
from __future__ import annotations

import gzip
import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _benchmark(name: str):
    """The benchmark script ``benchmarks/<name>.py`` as a module (its folder on sys.path while in use)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.pop(0)


@pytest.fixture(scope="module")
def script():
    yield from _benchmark("vs_reference")


@pytest.fixture()
def shim():
    sys.path.insert(0, str(ROOT / "benchmarks" / "reference_shim"))
    saved = {k: v for k, v in sys.modules.items() if k == "torchvision" or k.startswith("torchvision.")}
    for name in saved:
        del sys.modules[name]
    try:
        yield importlib.import_module("torchvision")
    finally:
        sys.path.pop(0)
        for name in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules.update(saved)


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def test_the_shim_hands_out_what_torchvision_would(tmp_path, shim):
    """MNIST items from IDX files (plain and gzipped): a 1×28×28 float tensor, (byte / 255 − mean) / std."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = rng.integers(0, 256, (5, 28, 28)), np.array([3, 1, 4, 1, 5])
    _write_idx(raw / "train-images-idx3-ubyte", images, compress=True)
    _write_idx(raw / "train-labels-idx1-ubyte", labels, compress=False)
    transform = shim.transforms.Compose([shim.transforms.ToTensor(), shim.transforms.Normalize([0.1307], [0.3081])])
    dataset = shim.datasets.MNIST(str(tmp_path), train=True, download=True, transform=transform)
    assert len(dataset) == 5 and dataset.targets.tolist() == labels.tolist()
    image, label = dataset[2]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and label == 4
    expected = (torch.from_numpy(images[2]).float() / 255 - 0.1307) / 0.3081
    assert torch.equal(image[0], expected)
    shim.utils.save_image(image.clamp(0, 1).unsqueeze(0).repeat(3, 1, 1, 1), tmp_path / "grid.png", nrow=2)
    assert (tmp_path / "grid.png").stat().st_size > 0


def _fake_reference(folder: Path, script, eol: str = "\r\n") -> Path:
    """A checkout of ``script``'s reference in miniature: each of its FILES (nested folders too), holding
    the texts its PATCHES replace, one per line, with ``eol`` line ends (DatasetCondensation's are CRLF)."""
    for name in script.FILES:
        olds = [old for file, old, _, _ in script.PATCHES if file == name]
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"x = 1{eol}" + "".join(f"y = {old}{eol}" for old in olds), newline="")
    return folder


def test_the_patches_are_applied_to_a_copy_and_a_moved_line_is_one_error(tmp_path, script):
    reference = _fake_reference(tmp_path / "ref", script)
    before = {name: (reference / name).read_bytes() for name in script.FILES}
    (tmp_path / "scratch").mkdir()
    patched = script.patched_reference(reference, tmp_path / "scratch")
    assert {name: (reference / name).read_bytes() for name in script.FILES} == before   # the checkout is untouched
    main = (patched / "main.py").read_text()
    assert "[args.Iteration]" in main and "epoch_eval_train = 1000" not in main
    assert b"\r\n" in (patched / "main.py").read_bytes()   # line endings kept
    assert "download=False" in (patched / "utils.py").read_text()
    (reference / "utils.py").write_text("nothing to patch\n")
    (tmp_path / "scratch2").mkdir()
    with pytest.raises(SystemExit, match="utils.py no longer contains 'download=True'"):
        script.patched_reference(reference, tmp_path / "scratch2")


def test_a_folder_that_is_not_the_reference_is_refused_with_exit_2(tmp_path, script, capsys):
    with pytest.raises(SystemExit) as exit_:
        script.parse_args(["--reference", str(tmp_path), "--data-root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    assert "lacks main.py" in capsys.readouterr().err


def test_per_update_and_per_epoch_costs_are_differences_of_the_configurations(script):
    n, m = script.METHODS["dc"][3:]
    rows = [{"method": "dc", "side": "ours", "config": config, "cpu_s": cpu, "peak_rss_mb": peak, "accuracy": 50.0}
            for config, cpu, peak in (("short", 10.0, 900), ("long", 10.0 + 4.0 * (m - n), 950), ("eval", 40.0, 1000))]
    derived = script.derived(rows, "dc", "ours", epochs=31)
    assert derived["per_update_s"] == pytest.approx(4.0) and derived["per_epoch_s"] == pytest.approx(1.0)
    assert derived["peak_rss_mb"] == 1000 and derived["accuracy"] == [50.0]


@pytest.fixture(scope="module")
def mtt_script():
    yield from _benchmark("vs_reference_mtt")


def test_the_mtt_patches_give_the_reference_an_mnist_branch_on_a_copy(tmp_path, script, mtt_script):
    reference = _fake_reference(tmp_path / "ref", mtt_script, eol="\n")
    before = {name: (reference / name).read_bytes() for name in mtt_script.FILES}
    (tmp_path / "scratch").mkdir()
    patched = script.patched_reference(reference, tmp_path / "scratch", mtt_script.FILES, mtt_script.PATCHES)
    assert {name: (reference / name).read_bytes() for name in mtt_script.FILES} == before
    utils = (patched / "utils.py").read_text()
    assert utils.index("elif dataset == 'MNIST'") < utils.index("elif dataset == 'Tiny'")
    assert "datasets.MNIST(data_path, train=True, download=False" in utils
    assert "eval_it_pool = []" in (patched / "distill.py").read_text()
    assert 'epoch("test"' not in (patched / "buffer.py").read_text()
    (reference / "distill.py").write_text("moved\n")
    (tmp_path / "scratch2").mkdir()
    with pytest.raises(SystemExit, match="distill.py no longer contains 'eval_it_pool"):
        script.patched_reference(reference, tmp_path / "scratch2", mtt_script.FILES, mtt_script.PATCHES)


def test_a_folder_that_is_not_the_mtt_reference_is_refused_with_exit_2(tmp_path, mtt_script, capsys):
    with pytest.raises(SystemExit) as exit_:
        mtt_script.parse_args(["--reference", str(tmp_path), "--data-root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2
    assert "lacks buffer.py" in capsys.readouterr().err


def test_mtt_costs_are_differences_of_the_configurations(mtt_script):
    n, m = mtt_script.N, mtt_script.M
    rows = [{"side": "ours", "config": config, "cpu_s": cpu, "peak_rss_mb": peak}
            for config, cpu, peak in (("experts", 130.0, 1200), ("data", 30.0, 800), ("short", 35.0, 900),
                                      ("long", 35.0 + 2.5 * (m - n), 950))]
    derived = mtt_script.derived(rows, "ours")
    assert derived["per_expert_epoch_s"] == pytest.approx(100.0) and derived["per_update_s"] == pytest.approx(2.5)
    assert derived["peak_rss_mb"] == 1200 and derived["peak_rss_distill_mb"] == 950


def test_the_wandb_stand_in_hands_back_the_arguments_and_kornia_refuses(shim):
    import argparse   # the shim fixture has put benchmarks/reference_shim first on sys.path
    saved = {k: sys.modules.pop(k) for k in ("wandb", "kornia") if k in sys.modules}
    try:
        wandb, kornia = importlib.import_module("wandb"), importlib.import_module("kornia")
        wandb.init(project="p", config=argparse.Namespace(ipc=1, lr_img=1000.0))
        assert wandb.config._items == {"ipc": 1, "lr_img": 1000.0}
        assert wandb.log({"x": 1}, step=0) is None
        with pytest.raises(NotImplementedError, match="without --zca"):
            kornia.enhance
    finally:
        for name in ("wandb", "kornia"):
            sys.modules.pop(name, None)
        sys.modules.update(saved)


@pytest.fixture(scope="module")
def dd_script():
    yield from _benchmark("vs_reference_dd")


def test_the_dd_patches_apply_to_a_copy_of_nested_files(tmp_path, script, dd_script):
    reference = _fake_reference(tmp_path / "ref", dd_script, eol="\n")
    (tmp_path / "scratch").mkdir()
    patched = script.patched_reference(reference, tmp_path / "scratch", dd_script.FILES, dd_script.PATCHES)
    assert "zero_grad(set_to_none=False)" in (patched / "train_distilled_image.py").read_text()
    assert (patched / "utils" / "io.py").read_text() == "x = 1\n"          # unpatched files are copied as they are
    assert "Loader=yaml.Loader" not in (reference / "base_options.py").read_text()   # the checkout is untouched


def test_a_folder_that_is_not_the_dd_reference_is_refused_with_exit_2(tmp_path, dd_script, capsys):
    with pytest.raises(SystemExit) as exit_:
        dd_script.parse_args(["--reference", str(tmp_path), "--data-root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2 and "lacks base_options.py" in capsys.readouterr().err


def test_dd_cost_per_epoch_is_the_difference_of_the_two_runs(dd_script):
    rows = [{"side": "ours", "config": c, "cpu_s": cpu, "peak_rss_mb": peak}
            for c, cpu, peak in (("one", 40.0, 700), ("two", 58.5, 720))]
    derived = dd_script.derived(rows, "ours")
    assert derived["per_epoch_s"] == pytest.approx(18.5) and derived["peak_rss_mb"] == 720


@pytest.fixture(scope="module")
def theta_script():
    yield from _benchmark("vs_reference_theta")


def test_theta_costs_are_differences_of_the_configurations(theta_script):
    steps = theta_script.CONFIGS["long"][0] - theta_script.CONFIGS["short"][0]
    rows = [{"side": "ours", "config": c, "cpu_s": cpu, "peak_rss_mb": peak}
            for c, cpu, peak in (("short", 20.0, 1100), ("long", 20.0 + 1.5 * steps, 1150), ("notest", 14.0, 1000))]
    derived = theta_script.derived(rows, "ours")
    assert derived["per_step_s"] == pytest.approx(1.5) and derived["test_pass_s"] == pytest.approx(6.0)
    assert derived["peak_rss_mb"] == 1150


def test_a_folder_that_is_not_the_theta_reference_is_refused_with_exit_2(tmp_path, theta_script, capsys):
    with pytest.raises(SystemExit) as exit_:
        theta_script.parse_args(["--reference", str(tmp_path), "--data-root", str(tmp_path), "--out", str(tmp_path / "o")])
    assert exit_.value.code == 2 and "lacks main.py" in capsys.readouterr().err


def test_our_lenet_is_the_dd_references_network_on_mnist():
    """ssnl/dataset-distillation's LeNet on 28 × 28: conv 6@5×5 padded by 2, max-pool, conv 16@5×5, max-pool,
    linear 400 → 120 → 84 → 10; the same maps give the same 416 520 multiply-adds per image."""
    from torch import nn

    from dsvbench.models import InputShape, create_model
    model, macs = create_model("lenet", InputShape(1, 28, 10)), []

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            macs.append(output[0].numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1])
        elif isinstance(module, nn.Linear):
            macs.append(module.in_features * module.out_features)
    for module in model.modules():
        module.register_forward_hook(count)
    model(torch.zeros(1, 1, 28, 28))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.padding for c in convs] == [(2, 2), (0, 0)]
    assert [m.in_features for m in model.modules() if isinstance(m, nn.Linear)] == [400, 120, 84]
    assert sum(macs) == 28 * 28 * 6 * 25 + 10 * 10 * 16 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10 == 416_520


def test_prepared_makes_the_output_folder_a_patched_copy_and_a_one_thread_environment(tmp_path, script, monkeypatch):
    """The shared set-up of every side-by-side script: the out folder, the patched copy and the warm cache in a
    scratch folder that is removed afterwards, OMP_NUM_THREADS=1 in the runs' environment."""
    import argparse
    reference = _fake_reference(tmp_path / "ref", script)
    warmed = []
    monkeypatch.setattr(script, "warm_dataset_cache",
                        lambda args, scratch, env, dataset="mnist": warmed.append((env, dataset)) or scratch / "warm")
    args = argparse.Namespace(reference=reference, out=tmp_path / "out")
    with script.prepared(args, "t-", dataset="fashion") as (scratch, patched, warm, env):
        assert scratch.is_dir() and patched == scratch / "reference" and warm == scratch / "warm"
        assert all((patched / name).is_file() for name in script.FILES)
        assert env["OMP_NUM_THREADS"] == "1" and warmed == [(env, "fashion")]
    assert (tmp_path / "out").is_dir() and not scratch.exists()
