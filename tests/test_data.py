"""Dataset readers: each format is written here, in its real layout, by code independent of ours."""
from __future__ import annotations

import gzip
import io
import pickle
import struct
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dsvbench.config import DataConfig
from dsvbench.data import DATASETS, DatasetMissing, load_dataset
from dsvbench.data.prepare import extract_image_folder, main as prepare_main
from dsvbench.registry import UserError

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def read(name: str, root: Path, download: bool = False):
    return DATASETS.get(name)(DataConfig(name, str(root), download))


def random_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


# ---------------------------------------------------------------- IDX (MNIST, Fashion-MNIST)

def write_idx(path: Path, array: np.ndarray) -> None:
    """LeCun's format: 00 00 08 ndim, big-endian uint32 sizes, bytes; gzipped if the name says so."""
    data = bytes((0, 0, 8, array.ndim)) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_idx_dataset(folder: Path, gz: bool, n_train: int = 30, n_test: int = 10) -> dict[str, np.ndarray]:
    arrays = {"train-images-idx3-ubyte": random_images(n_train, (28, 28), 0),
              "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
              "t10k-images-idx3-ubyte": random_images(n_test, (28, 28), 1),
              "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10}
    for name, array in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), array)
    return arrays


def test_mnist_reads_gzipped_idx_in_torchvision_layout(tmp_path):
    arrays = write_idx_dataset(tmp_path / "MNIST" / "raw", gz=True)
    raw = read("mnist", tmp_path)
    assert raw.train_images.shape == (30, 28, 28) and raw.train_images.dtype == np.uint8
    np.testing.assert_array_equal(raw.train_images, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(raw.test_labels, arrays["t10k-labels-idx1-ubyte"])
    assert raw.class_names == [str(i) for i in range(10)]


def test_fashion_mnist_reads_raw_idx_in_root(tmp_path):
    arrays = write_idx_dataset(tmp_path, gz=False)
    raw = read("fashion-mnist", tmp_path)
    np.testing.assert_array_equal(raw.test_images, arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(raw.train_labels, arrays["train-labels-idx1-ubyte"])
    assert raw.class_names[0] == "T-shirt/top" and raw.class_names[9] == "Ankle boot"


def test_fashion_mnist_prefers_its_own_folder_over_root(tmp_path):
    write_idx_dataset(tmp_path, gz=False, n_train=30)  # e.g. MNIST files lying in the root
    write_idx_dataset(tmp_path / "FashionMNIST" / "raw", gz=True, n_train=20)
    assert len(read("fashion-mnist", tmp_path).train_images) == 20


def test_idx_with_wrong_magic_is_a_one_line_error(tmp_path):
    write_idx_dataset(tmp_path, gz=False)
    write_idx(tmp_path / "train-images-idx3-ubyte", random_images(30, (28,), 2))  # 2-D: magic 00000802
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte is not an IDX file .*magic 00000802") as info:
        read("mnist", tmp_path)
    assert "\n" not in str(info.value)


def test_truncated_idx_is_an_error(tmp_path):
    write_idx_dataset(tmp_path, gz=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(UserError, match="truncated"):
        read("mnist", tmp_path)


def test_corrupt_gzip_is_an_error(tmp_path):
    write_idx_dataset(tmp_path, gz=True)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="cannot read .*train-labels-idx1-ubyte.gz"):
        read("mnist", tmp_path)


def test_idx_image_and_label_counts_must_agree(tmp_path):
    write_idx_dataset(tmp_path, gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(29, dtype=np.uint8))
    with pytest.raises(UserError, match="30 images but .* 29 labels"):
        read("mnist", tmp_path)


# ---------------------------------------------------------------- CIFAR pickles

def write_cifar_pickle(path: Path, content: dict) -> None:
    """Like the originals: a Python-2-era pickle whose keys are bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """N×32×32×3 -> N×3072 rows: the 1024 red, then green, then blue values, row-major."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def test_cifar10_reads_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    batches = [random_images(4, (32, 32, 3), seed) for seed in range(6)]
    batches[0][0] = 0
    batches[0][0, :, :, 0] = 255  # first image pure red
    for i, images in enumerate(batches[:5], start=1):
        write_cifar_pickle(folder / f"data_batch_{i}", {b"batch_label": b"x", b"data": cifar_rows(images),
                                                        b"labels": [i, 0, 1, 2], b"filenames": [b"a"] * 4})
    write_cifar_pickle(folder / "test_batch", {b"data": cifar_rows(batches[5]), b"labels": [9, 8, 7, 6]})
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    write_cifar_pickle(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    raw = read("cifar10", tmp_path)
    assert raw.train_images.shape == (20, 32, 32, 3) and raw.test_images.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(raw.train_images, np.concatenate(batches[:5]))
    assert raw.train_images[0, 5, 7].tolist() == [255, 0, 0]
    assert raw.train_labels[:4].tolist() == [1, 0, 1, 2] and raw.test_labels.tolist() == [9, 8, 7, 6]
    assert raw.class_names[0] == "airplane" and raw.class_names[9] == "truck"
    assert len(read("cifar10", folder).train_images) == 20  # the root may be the folder itself


def write_cifar100(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    train, test = random_images(6, (32, 32, 3), 0), random_images(3, (32, 32, 3), 1)
    write_cifar_pickle(folder / "train", {b"data": cifar_rows(train), b"fine_labels": [0, 99, 5, 5, 1, 2],
                                          b"coarse_labels": [0, 19, 1, 1, 0, 0]})
    write_cifar_pickle(folder / "test", {b"data": cifar_rows(test), b"fine_labels": [3, 4, 99],
                                         b"coarse_labels": [0, 0, 19]})
    write_cifar_pickle(folder / "meta", {b"fine_label_names": [f"class{i}".encode() for i in range(100)],
                                         b"coarse_label_names": [f"super{i}".encode() for i in range(20)]})
    return train, test


def test_cifar100_reads_fine_labels(tmp_path):
    train, test = write_cifar100(tmp_path / "cifar-100-python")
    raw = read("cifar100", tmp_path)
    np.testing.assert_array_equal(raw.test_images, test)
    assert raw.train_labels.tolist() == [0, 99, 5, 5, 1, 2]
    assert len(raw.class_names) == 100 and raw.class_names[99] == "class99"


def test_cifar_pickle_without_data_is_an_error(tmp_path):
    write_cifar100(tmp_path)
    write_cifar_pickle(tmp_path / "test", {b"fine_labels": [1]})
    with pytest.raises(UserError, match="has no 'data' entry"):
        read("cifar100", tmp_path)


# ---------------------------------------------------------------- SVHN .mat

def test_svhn_reads_mat_files_and_maps_10_to_0(tmp_path):
    from scipy.io import savemat

    train = random_images(5, (32, 32, 3), 0)
    train[2] = 0
    train[2, 1, 3, 2] = 200  # one blue pixel at row 1, column 3
    savemat(tmp_path / "train_32x32.mat", {"X": train.transpose(1, 2, 3, 0),
                                           "y": np.array([[1], [10], [3], [10], [9]], dtype=np.uint8)})
    savemat(tmp_path / "test_32x32.mat", {"X": random_images(2, (32, 32, 3), 1).transpose(1, 2, 3, 0),
                                          "y": np.array([[10], [2]], dtype=np.uint8)})
    raw = read("svhn", tmp_path)
    assert raw.train_images.shape == (5, 32, 32, 3) and raw.test_images.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(raw.train_images, train)
    assert raw.train_images[2].sum() == 200 and raw.train_images[2, 1, 3, 2] == 200
    assert raw.train_labels.tolist() == [1, 0, 3, 0, 9] and raw.test_labels.tolist() == [0, 2]


# ---------------------------------------------------------------- image folders

def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_folder(root: Path, classes=("b_dog", "a_cat"), per_class: int = 3, shape=(6, 5, 3)) -> None:
    for split, count in (("train", per_class), ("test", 1)):
        for c, name in enumerate(classes):
            for i in range(count):
                write_png(root / split / name / f"{i:03d}.png", random_images(1, shape, 10 * c + i)[0])


def test_folder_reads_rgb_pngs_with_sorted_classes(tmp_path):
    write_folder(tmp_path)
    (tmp_path / "train" / "a_cat" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    raw = read("folder", tmp_path)
    assert raw.class_names == ["a_cat", "b_dog"]
    assert raw.train_images.shape == (6, 6, 5, 3) and raw.test_images.shape == (2, 6, 5, 3)
    assert raw.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(raw.train_images[0], random_images(1, (6, 5, 3), 10)[0])  # a_cat/000.png


def test_folder_reads_grayscale_as_nhw(tmp_path):
    write_folder(tmp_path, shape=(4, 4))
    raw = read("folder", tmp_path)
    assert raw.train_images.shape == (6, 4, 4) and raw.test_images.shape == (2, 4, 4)


def test_folder_images_of_different_sizes_are_an_error(tmp_path):
    write_folder(tmp_path)
    write_png(tmp_path / "test" / "b_dog" / "big.png", random_images(1, (7, 5, 3), 0)[0])
    with pytest.raises(UserError, match=r"big.png is RGB 5×7 .* first image is RGB 5×6"):
        read("folder", tmp_path)


def test_folder_rgba_is_an_error(tmp_path):
    write_folder(tmp_path, shape=(4, 4, 4))
    with pytest.raises(UserError, match="mode RGBA; image folders must be RGB or L"):
        read("folder", tmp_path)


def test_folder_train_and_test_classes_must_match(tmp_path):
    write_folder(tmp_path)
    write_png(tmp_path / "test" / "c_cow" / "0.png", random_images(1, (6, 5, 3), 0)[0])
    with pytest.raises(UserError, match=r"only in test \['c_cow'\]"):
        read("folder", tmp_path)


def test_folder_empty_class_is_an_error(tmp_path):
    write_folder(tmp_path)
    (tmp_path / "train" / "c_cow").mkdir()
    with pytest.raises(UserError, match="c_cow holds no"):
        read("folder", tmp_path)


# ---------------------------------------------------------------- normalization, missing files, --download

def test_load_dataset_normalizes_with_train_statistics(tmp_path):
    write_folder(tmp_path, per_class=20)
    dataset = load_dataset(DataConfig("folder", str(tmp_path)))
    assert dataset.train_x.shape == (40, 3, 6, 5) and dataset.num_classes == 2
    torch_mean = dataset.train_x.mean(dim=(0, 2, 3))
    torch_std = dataset.train_x.std(dim=(0, 2, 3))
    assert torch_mean.abs().max() < 1e-5 and (torch_std - 1).abs().max() < 1e-5
    raw_train = read("folder", tmp_path).train_images / 255.0
    np.testing.assert_allclose(dataset.mean, raw_train.mean(axis=(0, 1, 2)), atol=1e-5)


@pytest.mark.parametrize("name", [n for n in DATASETS.names() if n != "digits"])
def test_missing_files_name_the_path_and_the_ways_out(tmp_path, name):
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(DatasetMissing) as info:
        read(name, root)
    message = str(info.value)
    assert str(root) in message and "--dataset digits" in message and "--download" in message
    assert "\n" not in message


def test_download_without_torchvision_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    with pytest.raises(UserError, match=r"--download needs torchvision.*cifar-10-python.tar.gz") as info:
        read("cifar10", tmp_path, download=True)
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)


def fake_torchvision(calls: list) -> types.ModuleType:
    """Stands in for torchvision: its MNIST 'downloads' by writing IDX files where the real one does."""
    datasets = types.ModuleType("torchvision.datasets")

    def mnist(root, train=True, download=False):
        calls.append((root, train, download))
        write_idx_dataset(Path(root) / "MNIST" / "raw", gz=True, n_train=20)

    datasets.MNIST = mnist
    module = types.ModuleType("torchvision")
    module.datasets = datasets
    return module


def test_download_fetches_through_torchvision_then_reads(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "torchvision", fake_torchvision(calls))
    raw = read("mnist", tmp_path / "new", download=True)
    assert len(raw.train_images) == 20
    assert calls == [(str(tmp_path / "new"), True, True), (str(tmp_path / "new"), False, True)]


def test_download_is_skipped_when_files_are_there(tmp_path, monkeypatch):
    write_idx_dataset(tmp_path, gz=True)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # would fail if a download were tried
    assert len(read("mnist", tmp_path, download=True).train_images) == 30


# ---------------------------------------------------------------- prepare (archives -> folders)

def make_tarball(path: Path) -> None:
    with tarfile.open(path, "w:gz") as archive:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

        for split in ("train", "test"):
            for c in ("cat", "dog"):
                for i in range(3):
                    png = io.BytesIO()
                    Image.fromarray(random_images(1, (4, 4, 3), i)[0]).save(png, format="PNG")
                    add(f"{split}/{c}/{i}.png", png.getvalue())
        add("../escape.png", b"x")
        add("train/cat/../../escape2.png", b"x")
        link = tarfile.TarInfo("train/cat/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)


def test_prepare_extracts_only_image_folder_members(tmp_path):
    make_tarball(tmp_path / "set.tar.gz")
    counts = extract_image_folder(tmp_path / "set.tar.gz", tmp_path / "out" / "set", per_class=2)
    assert counts == {"train": 4, "test": 4}
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert files == [f"set/{s}/{c}/{i}.png" for s in ("test", "train") for c in ("cat", "dog") for i in (0, 1)]
    assert not (tmp_path / "escape.png").exists()
    assert read("folder", tmp_path / "out" / "set").train_images.shape == (4, 4, 4, 3)


def test_prepare_command_line(tmp_path, capsys):
    make_tarball(tmp_path / "set.tar.gz")
    assert prepare_main(["cifar10-jpeg", str(tmp_path / "set.tar.gz"), str(tmp_path / "out")]) == 0
    assert "6 train and 6 test images" in capsys.readouterr().out
    assert prepare_main(["cifar10-jpeg", str(tmp_path / "missing.tar.gz"), str(tmp_path / "other")]) == 2


# ---------------------------------------------------------------- the real data in shared/datasets

@pytest.mark.skipif(not (SHARED_DATASETS / "mnist").is_dir(), reason="shared MNIST copy not present")
def test_real_mnist_has_the_published_class_counts():
    raw = read("mnist", SHARED_DATASETS / "mnist")
    assert raw.train_images.shape == (60000, 28, 28) and raw.test_images.shape == (10000, 28, 28)
    assert np.bincount(raw.train_labels).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(raw.test_labels).tolist() == MNIST_TEST_COUNTS


CIFAR10_JPEG = SHARED_DATASETS / "cifar10" / "cifar10-jpeg.tar.gz"


@pytest.mark.skipif(not CIFAR10_JPEG.is_file(), reason="shared CIFAR-10 JPEG copy not present")
def test_cifar10_jpeg_subset_reads_as_a_folder(tmp_path):
    extract_image_folder(CIFAR10_JPEG, tmp_path / "cifar10", per_class=20)
    raw = read("folder", tmp_path / "cifar10")
    assert raw.class_names == ["airplane", "automobile", "bird", "cat", "deer",
                               "dog", "frog", "horse", "ship", "truck"]
    assert raw.train_images.shape == (200, 32, 32, 3) and raw.test_images.shape == (200, 32, 32, 3)
    assert np.bincount(raw.train_labels).tolist() == [20] * 10


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR10_JPEG.is_file(), reason="shared CIFAR-10 JPEG copy not present")
def test_cifar10_jpeg_full_copy_matches_its_readme(tmp_path):
    """All 60 000 images; channel means as the shared README states (the original's to 1e-4)."""
    counts = extract_image_folder(CIFAR10_JPEG, tmp_path / "cifar10")
    assert counts == {"train": 50000, "test": 10000}
    raw = read("folder", tmp_path / "cifar10")
    assert np.bincount(raw.train_labels).tolist() == [5000] * 10
    assert np.bincount(raw.test_labels).tolist() == [1000] * 10
    means = raw.train_images.reshape(-1, 3).mean(axis=0) / 255.0
    np.testing.assert_allclose(means, [0.4914, 0.4822, 0.4465], atol=5e-4)


def test_normalization_does_not_depend_on_the_thread_count():
    """Workers run with fewer torch threads than the main process; the cache keys must agree."""
    from dsvbench.pretrain import dataset_fingerprint
    threads = torch.get_num_threads()
    prints = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            prints.append(dataset_fingerprint(load_dataset(DataConfig(name="digits"), None)))
    finally:
        torch.set_num_threads(threads)
    assert len(set(prints)) == 1


def test_dataset_cache_stores_the_readers_bytes_and_loads_the_same_tensors(tmp_path):
    """uint8 on disk (a quarter of float32), standardized once on load: equal to a fresh read bit for bit."""
    root = tmp_path / "images"
    for label in ("cat", "dog"):
        for split in ("train", "test"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.random.default_rng(i + len(label)).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(
                    folder / f"{i}.png")
    config = DataConfig("folder", str(root))
    fresh = load_dataset(config, tmp_path / "cache")
    [path] = (tmp_path / "cache" / "datasets").glob("*.pt")
    state = torch.load(path, weights_only=True)
    assert state["raw"]["train_images"].dtype == torch.uint8 and "dataset" not in state
    cached = load_dataset(config, tmp_path / "cache")
    assert cached is not fresh and cached.content_hash() == fresh.content_hash()
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(cached, name), getattr(fresh, name))
    assert cached.mean == fresh.mean and cached.std == fresh.std and cached.name == fresh.name
