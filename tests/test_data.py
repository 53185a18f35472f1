"""Tests for aebnas.data: every loader reads small files written in the dataset's real
on-disk format, and the shared pipeline is checked with real numbers."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from aebnas.data import (
    ArraySplit,
    DatasetError,
    DataSplits,
    augment_batch,
    available_datasets,
    load_dataset,
    normalize,
)
from aebnas.data.config import KNOWN_KEYS
from tests.formats import images as _images
from tests.formats import write_cifar10, write_cifar100, write_svhn

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "aebnas" / "conf" / "dataset"
REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")


def _assert_one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def _all_rows(*splits: ArraySplit) -> np.ndarray:
    """Flattened images of several splits, sorted, to compare sets of samples."""
    rows = np.concatenate([s.x.reshape(len(s), -1).numpy() for s in splits])
    return rows[np.lexsort(rows.T[::-1])]


def _check_splits(d: DataSplits) -> None:
    """Invariants every DataSplits must satisfy."""
    for split in (d.train, d.val, d.test):
        assert split.x.dtype == torch.uint8 and split.y.dtype == torch.int64
        assert split.x.is_contiguous() and split.x.dim() == 4
        assert tuple(split.x.shape[1:]) == (d.in_channels, d.resolution, d.resolution)
        assert len(split) == split.x.shape[0] == split.y.shape[0] > 0
        assert int(split.y.min()) >= 0 and int(split.y.max()) < d.num_classes
    assert len(d.mean) == len(d.std) == d.in_channels
    assert all(0.0 <= m <= 1.0 for m in d.mean) and all(s > 0 for s in d.std)


# --------------------------------------------------------------------------- registry / config


def test_available_datasets_lists_every_family():
    assert available_datasets() == sorted(
        ["cifar10", "cifar100", "svhn", "fashion_mnist", "digits", "synthetic", "image_folder", "npz"]
    )


def test_unknown_name_is_a_one_line_error_listing_choices():
    with pytest.raises(DatasetError) as err:
        load_dataset({"name": "foo"})
    msg = _assert_one_line(err)
    assert msg.startswith("dataset.name: unknown dataset 'foo'") and "cifar10" in msg and "digits" in msg
    with pytest.raises(DatasetError, match=r"dataset\.name: required"):
        load_dataset({})


@pytest.mark.parametrize(
    "key, value",
    [("val_size", 0), ("val_size", 1.5), ("val_size", "big"), ("channels", 2), ("resolution", 0), ("download", "yes")],
)
def test_bad_option_values_name_the_field(key, value):
    with pytest.raises(DatasetError, match=rf"^dataset\.{key}: "):
        load_dataset({"name": "digits", key: value})


def test_val_size_larger_than_train_is_rejected():
    with pytest.raises(DatasetError, match=r"dataset\.val_size: 5000 is not smaller than the 1438"):
        load_dataset({"name": "digits", "val_size": 5000})


def test_unknown_keys_are_refused():
    with pytest.raises(DatasetError, match=r"dataset\.val_sise: unknown key"):
        load_dataset({"name": "digits", "val_sise": 3})


# --------------------------------------------------------------------------- conf/dataset/*.yaml

CONF_NAMES = ["digits", "synthetic", "fashion_mnist", "cifar10", "cifar100", "svhn", "image_folder", "npz"]


@pytest.mark.parametrize("name", CONF_NAMES)
def test_conf_file_lists_every_key(name):
    path = CONF_DIR / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith("# ") and len(text.splitlines()[0]) > 10
    cfg = _composed(name)  # the preset over the schema's defaults
    assert cfg["name"] == name
    assert set(cfg) == set(KNOWN_KEYS)


def _composed(name: str) -> dict:
    """The ``dataset`` section a run with ``dataset=<name>`` gets."""
    from omegaconf import OmegaConf

    from tests.conftest import compose_config

    return OmegaConf.to_container(compose_config([f"dataset={name}"]).dataset)


def test_conf_values_match_the_brief():
    digits = _composed("digits")
    assert (digits["resolution"], digits["val_size"], digits["test_size"]) == (16, 0.15, 0.2)
    fm = _composed("fashion_mnist")
    assert fm["data_dir"] == str(REAL_FASHION) and fm["resolution"] == 32 and fm["pad_to_resolution"] is True
    assert fm["channels"] == 1 and fm["val_size"] == 5000
    for name in ("cifar10", "cifar100", "svhn"):
        cfg = _composed(name)
        assert (cfg["val_size"], cfg["data_dir"], cfg["download"]) == (5000, "./data", False)


def test_digits_conf_loads_as_omegaconf_dictconfig():
    omegaconf = pytest.importorskip("omegaconf")
    from tests.conftest import compose_config

    cfg = compose_config(["dataset=digits"]).dataset
    assert isinstance(cfg, omegaconf.DictConfig)
    d = load_dataset(cfg)
    _check_splits(d)
    assert d.resolution == 16 and (len(d.train), len(d.val), len(d.test)) == (1222, 216, 359)


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_dataset(_composed("digits"))


def test_digits_shapes_and_sizes(digits):
    _check_splits(digits)
    assert digits.name == "digits" and digits.num_classes == 10 and digits.in_channels == 1
    assert digits.resolution == 16 and digits.train.x.shape[1:] == (1, 16, 16)
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert len(digits.test) == round(0.2 * 1797) and len(digits.val) == round(0.15 * (1797 - 359))
    assert digits.hflip is False and digits.class_names == [str(i) for i in range(10)]
    assert set(digits.train.y.tolist()) == set(range(10))


def test_digits_splits_partition_the_data_deterministically():
    from sklearn.datasets import load_digits

    native = load_dataset({"name": "digits", "test_size": 0.2, "val_size": 0.15})
    assert native.resolution == 8
    expected = np.rint(load_digits().images * (255 / 16)).astype(np.uint8).reshape(1797, -1)
    expected = expected[np.lexsort(expected.T[::-1])]
    # train + val + test is exactly the original multiset of images: disjoint and complete
    np.testing.assert_array_equal(_all_rows(native.train, native.val, native.test), expected)

    again = load_dataset({"name": "digits", "test_size": 0.2, "val_size": 0.15})
    for a, b in zip((native.train, native.val, native.test), (again.train, again.val, again.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    other = load_dataset({"name": "digits", "test_size": 0.2, "val_size": 0.15, "split_seed": 1})
    assert len(other.val) == len(native.val) and not torch.equal(other.val.x, native.val.x)
    assert not torch.equal(other.test.x, native.test.x)


def test_normalize_gives_zero_mean_unit_std_on_digits_train(digits):
    z = normalize(digits.train.x, digits.mean, digits.std)
    assert z.dtype == torch.float32 and z.shape == digits.train.x.shape
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std(unbiased=False)) - 1.0) < 1e-4
    assert digits.mean[0] == pytest.approx(float(digits.train.x.double().mean() / 255), rel=1e-9)


def test_channels_max_train_samples_and_hflip_override():
    d = load_dataset({"name": "digits", "channels": 3, "resolution": 12, "max_train_samples": 100, "hflip": True})
    _check_splits(d)
    assert d.in_channels == 3 and d.resolution == 12 and len(d.train) == 100 and d.hflip is True
    assert torch.equal(d.train.x[:, 0], d.train.x[:, 1]) and torch.equal(d.train.x[:, 0], d.train.x[:, 2])
    again = load_dataset({"name": "digits", "channels": 3, "resolution": 12, "max_train_samples": 100})
    assert torch.equal(d.train.x, again.train.x)
    full = load_dataset({"name": "digits", "channels": 3, "resolution": 12})
    assert torch.equal(full.val.x, d.val.x)  # subsetting train never changes val
    assert len(load_dataset({"name": "digits", "val_size": 100}).val) == 100


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_learnable():
    cfg = _composed("synthetic")
    d = load_dataset(cfg)
    _check_splits(d)
    assert (d.num_classes, d.in_channels, d.resolution) == (10, 3, 32)
    assert len(d.train) + len(d.val) + len(d.test) == 2000
    assert torch.equal(load_dataset(cfg).train.x, d.train.x)
    assert not torch.equal(load_dataset({**cfg, "seed": 1}).train.x, d.train.x)
    # nearest class mean on raw pixels: far above 10% chance, so a small CNN can learn it
    xf = d.train.x.float().flatten(1)
    centroids = torch.stack([xf[d.train.y == k].mean(0) for k in range(10)])
    pred = torch.cdist(d.test.x.float().flatten(1), centroids).argmin(1)
    assert float((pred == d.test.y).float().mean()) > 0.5
    small = load_dataset({"name": "synthetic", "num_classes": 4, "num_samples": 200, "resolution": 8, "channels": 1})
    assert (small.num_classes, small.in_channels, small.resolution, len(small.test)) == (4, 1, 8, 40)


# --------------------------------------------------------------------------- CIFAR


@pytest.fixture(scope="module")
def cifar10_dir(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("cifar10")
    train, test = write_cifar10(root)
    return root, train, test


def test_cifar10_reads_the_python_pickles(cifar10_dir):
    root, train, test = cifar10_dir
    d = load_dataset({"name": "cifar10", "data_dir": str(root), "val_size": 5})
    _check_splits(d)
    assert (len(d.train), len(d.val), len(d.test)) == (25, 5, 10)
    assert (d.num_classes, d.in_channels, d.resolution, d.hflip) == (10, 3, 32, True)
    assert d.class_names[0] == "airplane" and d.class_names[9] == "truck"
    assert torch.equal(d.test.x, torch.from_numpy(test)) and d.test.y.tolist() == list(range(10))
    for split in (d.train, d.val):  # each sample is the right image with the right label
        idx = split.x[:, 0, 0, 0].long()
        assert torch.equal(split.x, torch.from_numpy(train)[idx])
        assert torch.equal(split.y, idx % 10)
    expected_mean = tuple(float(v) for v in d.train.x.double().mean((0, 2, 3)) / 255)
    assert d.mean == pytest.approx(expected_mean, rel=1e-9)


def test_cifar10_fixture_matches_torchvision_reader(cifar10_dir, monkeypatch):
    """The generated files are the real format: torchvision (md5 check bypassed) reads the same pixels."""
    import torchvision.datasets
    import torchvision.datasets.cifar as tv_cifar

    root, train, test = cifar10_dir
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    tv = torchvision.datasets.CIFAR10(root=str(root), train=False, download=False)
    ours = load_dataset({"name": "cifar10", "data_dir": str(root), "val_size": 5})
    assert torch.equal(ours.test.x, torch.from_numpy(tv.data).permute(0, 3, 1, 2))
    assert ours.class_names == tv.classes


def test_cifar100_reads_fine_labels_and_meta(tmp_path):
    train, test, fine = write_cifar100(tmp_path)
    d = load_dataset({"name": "cifar100", "data_dir": str(tmp_path), "val_size": 0.25})
    _check_splits(d)
    assert (len(d.train), len(d.val), len(d.test)) == (15, 5, 6)
    assert d.num_classes == 100 and d.class_names[99] == "c99"  # from meta, though few classes occur
    idx = d.train.x[:, 0, 0, 0].long()
    assert torch.equal(d.train.y, torch.from_numpy(fine)[idx])
    assert d.test.y.tolist() == [0, 1, 2, 97, 98, 99]


def test_cifar_missing_or_corrupt_files_give_one_line_errors(tmp_path, cifar10_dir):
    with pytest.raises(DatasetError) as err:
        load_dataset({"name": "cifar10", "data_dir": str(tmp_path / "nowhere")})
    msg = _assert_one_line(err)
    assert msg.startswith("dataset.data_dir: CIFAR-10 not found under") and "cifar-10-batches-py/" in msg
    assert "does not exist" in msg and "dataset.download=true" in msg

    with pytest.raises(DatasetError, match=r"dataset\.data_dir: CIFAR-100 not found under '.*' \(expected cifar-100"):
        load_dataset({"name": "cifar100", "data_dir": str(tmp_path)})

    src = cifar10_dir[0] / "cifar-10-batches-py"
    broken = tmp_path / "broken" / "cifar-10-batches-py"
    broken.mkdir(parents=True)
    for f in src.iterdir():
        data = f.read_bytes()
        (broken / f.name).write_bytes(data[: len(data) // 2] if f.name == "data_batch_3" else data)
    with pytest.raises(DatasetError, match=r"dataset\.data_dir: cannot read CIFAR file '.*data_batch_3'"):
        load_dataset({"name": "cifar10", "data_dir": str(broken.parent)})


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    """Offline download: torchvision's exception becomes a single DatasetError naming dataset.download."""
    import torchvision.datasets

    class Offline:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("Error downloading cifar-10-python.tar.gz:\nTried https://..., got:\n<urlopen error>")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    with pytest.raises(DatasetError) as err:
        load_dataset({"name": "cifar10", "data_dir": str(tmp_path), "download": True})
    msg = _assert_one_line(err)
    assert msg.startswith("dataset.download: downloading CIFAR-10 into") and "RuntimeError" in msg


# --------------------------------------------------------------------------- SVHN


@pytest.fixture(scope="module")
def svhn_dir(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("svhn")
    train, test = write_svhn(root)
    return root, train, test


def test_svhn_reads_mat_files(svhn_dir, monkeypatch):
    import torchvision.datasets

    root, train, test = svhn_dir
    d = load_dataset(dict(_composed("svhn"), data_dir=str(root), val_size=4))
    _check_splits(d)
    assert (len(d.train), len(d.val), len(d.test)) == (20, 4, 8)
    assert (d.num_classes, d.in_channels, d.resolution, d.hflip) == (10, 3, 32, False)
    assert torch.equal(d.test.x, torch.from_numpy(test)) and d.test.y.tolist() == [i % 10 for i in range(8)]
    idx = d.train.x[:, 0, 0, 0].long()
    assert torch.equal(d.train.x, torch.from_numpy(train)[idx]) and torch.equal(d.train.y, idx % 10)
    # cross-check against torchvision's own reader (md5 check bypassed for generated files)
    monkeypatch.setattr(torchvision.datasets.SVHN, "_check_integrity", lambda self: True)
    tv = torchvision.datasets.SVHN(root=str(root), split="test", download=False)
    assert torch.equal(d.test.x, torch.from_numpy(tv.data)) and d.test.y.tolist() == tv.labels.tolist()


def test_svhn_missing_files(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset({"name": "svhn", "data_dir": str(tmp_path)})
    msg = _assert_one_line(err)
    assert msg.startswith("dataset.data_dir: SVHN not found under") and "train_32x32.mat" in msg


# --------------------------------------------------------------------------- Fashion-MNIST (idx)


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    payload = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _write_fashion(folder: Path, compress: bool) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    train, test = _images(40, 1, 28, 28, seed=7)[:, 0], _images(12, 1, 28, 28, seed=8)[:, 0]
    suffix = ".gz" if compress else ""
    _write_idx(folder / f"train-images-idx3-ubyte{suffix}", train, compress)
    _write_idx(folder / f"train-labels-idx1-ubyte{suffix}", np.arange(40) % 10, compress)
    _write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", test, compress)
    _write_idx(folder / f"t10k-labels-idx1-ubyte{suffix}", np.arange(12) % 10, compress)
    return train, test


def test_fashion_mnist_flat_gz_dir_padded_to_32(tmp_path):
    train, test = _write_fashion(tmp_path, compress=True)
    cfg = dict(_composed("fashion_mnist"), data_dir=str(tmp_path), val_size=8)
    d = load_dataset(cfg)
    _check_splits(d)
    assert (len(d.train), len(d.val), len(d.test)) == (32, 8, 12)
    assert (d.num_classes, d.in_channels, d.resolution, d.hflip) == (10, 1, 32, True)
    assert d.class_names[0] == "T-shirt/top" and d.class_names[9] == "Ankle boot"
    # zero padding of 2 pixels on every side, original pixels untouched in the middle
    assert torch.equal(d.test.x[:, 0, 2:30, 2:30], torch.from_numpy(test))
    border = d.test.x.clone()
    border[:, :, 2:30, 2:30] = 0
    assert int(border.sum()) == 0
    # without padding: bilinear resize to 32, and native size when resolution is null
    assert load_dataset({**cfg, "pad_to_resolution": False}).test.x.shape[-1] == 32
    assert load_dataset({**cfg, "resolution": None}).resolution == 28


def test_fashion_mnist_torchvision_layout_uncompressed(tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file

    raw = tmp_path / "FashionMNIST" / "raw"
    train, test = _write_fashion(raw, compress=False)
    d = load_dataset({"name": "fashion_mnist", "data_dir": str(tmp_path), "val_size": 0.25})
    assert (len(d.train), len(d.val), len(d.test)) == (30, 10, 12) and d.resolution == 28
    # torchvision's own idx reader agrees with ours on the generated files
    assert torch.equal(d.test.x[:, 0], read_image_file(str(raw / "t10k-images-idx3-ubyte")))
    assert torch.equal(d.test.y, read_label_file(str(raw / "t10k-labels-idx1-ubyte")))


@pytest.mark.parametrize(
    "damage, reason",
    [("truncate", "truncated"), ("magic", "bad magic number"), ("gzip", "BadGzipFile|EOFError|Error")],
)
def test_fashion_mnist_corrupt_idx_names_the_file(tmp_path, damage, reason):
    _write_fashion(tmp_path, compress=True)
    target = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(target, "rb") as f:
        payload = f.read()
    if damage == "truncate":
        with gzip.open(target, "wb") as f:
            f.write(payload[:-100])
    elif damage == "magic":
        with gzip.open(target, "wb") as f:
            f.write(b"\x00\x00\x0d\x03" + payload[4:])
    else:
        target.write_bytes(target.read_bytes()[:50])  # cut the gzip stream itself
    with pytest.raises(DatasetError) as err:
        load_dataset({"name": "fashion_mnist", "data_dir": str(tmp_path)})
    msg = _assert_one_line(err)
    assert msg.startswith(f"dataset.data_dir: corrupt idx file '{target}'")
    assert any(r in msg for r in reason.split("|"))


def test_fashion_mnist_missing_dir(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset({"name": "fashion_mnist", "data_dir": str(tmp_path / "absent")})
    msg = _assert_one_line(err)
    assert msg.startswith("dataset.data_dir: Fashion-MNIST not found under") and "train-images-idx3-ubyte.gz" in msg


@pytest.mark.skipif(not REAL_FASHION.is_dir(), reason=f"{REAL_FASHION} not installed")
def test_real_fashion_mnist_from_debian_package():
    d = load_dataset(_composed("fashion_mnist"))
    _check_splits(d)
    assert (len(d.train), len(d.val), len(d.test)) == (60000 - 5000, 5000, 10000)
    assert (d.num_classes, d.in_channels, d.resolution) == (10, 1, 32)
    assert int(d.train.x[:, :, :2].sum()) == 0 and int(d.test.x[:, :, :, 30:].sum()) == 0  # zero padding
    assert torch.bincount(d.test.y).tolist() == [1000] * 10
    # Fashion-MNIST's well-known statistics, diluted by the 28->32 zero padding
    assert d.mean[0] == pytest.approx(0.2860 * (28 * 28) / (32 * 32), abs=0.003)


# --------------------------------------------------------------------------- npz


def test_npz_layouts_and_float_input(tmp_path):
    x_train = _images(30, 3, 10, 10, seed=9)
    x_test = _images(6, 3, 10, 10, seed=10)
    y_train, y_test = np.arange(30) % 4, np.array([0, 1, 2, 3, 4, 0])  # class 4 only in test
    nhwc = tmp_path / "nhwc.npz"
    np.savez(nhwc, x_train=x_train.transpose(0, 2, 3, 1), y_train=y_train,
             x_test=x_test.transpose(0, 2, 3, 1), y_test=y_test)
    d = load_dataset({"name": "npz", "path": str(nhwc), "val_size": 6, "resolution": 8})
    _check_splits(d)
    assert (len(d.train), len(d.val), len(d.test)) == (24, 6, 6)
    assert (d.num_classes, d.in_channels, d.resolution, d.hflip, d.class_names) == (5, 3, 8, False, None)
    native = load_dataset({"name": "npz", "data_dir": str(nhwc), "val_size": 6})  # data_dir may name the file
    assert torch.equal(native.test.x, torch.from_numpy(x_test))

    nchw_float = tmp_path / "nchw.npz"
    np.savez(nchw_float, x_train=x_train.astype(np.float32) / 255, y_train=y_train,
             x_test=x_test.astype(np.float64) / 255, y_test=y_test.reshape(-1, 1))
    f = load_dataset({"name": "npz", "path": str(nchw_float), "val_size": 6})
    assert torch.equal(f.test.x, torch.from_numpy(x_test)) and f.test.y.tolist() == y_test.tolist()

    gray = tmp_path / "gray.npz"
    np.savez(gray, x_train=x_train[:, 0], y_train=y_train, x_test=x_test[:, 0], y_test=y_test)
    g = load_dataset({"name": "npz", "path": str(gray), "channels": 3})
    assert g.in_channels == 3 and torch.equal(g.test.x[:, 2], torch.from_numpy(x_test[:, 0]))


def test_npz_errors_name_the_problem(tmp_path):
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.zeros(4, np.int64),
             x_test=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(DatasetError, match=r"^dataset\.path: .* has no array 'y_test'"):
        load_dataset({"name": "npz", "path": str(partial)})
    with pytest.raises(DatasetError, match=r"^dataset\.path: file '.*missing\.npz' does not exist"):
        load_dataset({"name": "npz", "path": str(tmp_path / "missing.npz")})
    with pytest.raises(DatasetError, match=r"^dataset\.path: npz needs the path"):
        load_dataset({"name": "npz", "data_dir": str(tmp_path)})
    odd = tmp_path / "odd.npz"
    np.savez(odd, x_train=np.zeros((4, 5, 8, 7), np.uint8), y_train=np.zeros(4, np.int64),
             x_test=np.zeros((2, 5, 8, 7), np.uint8), y_test=np.zeros(2, np.int64))
    with pytest.raises(DatasetError, match=r"cannot tell the image layout of x_train"):
        load_dataset({"name": "npz", "path": str(odd)})


# --------------------------------------------------------------------------- image_folder


def _png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture()
def image_tree(tmp_path) -> Path:
    rng = np.random.default_rng(11)
    for split, count in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            for i in range(count):
                _png(tmp_path / split / cls / f"{i}.png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    _png(tmp_path / "train" / "dog" / "gray.png", rng.integers(0, 256, (12, 12), dtype=np.uint8))
    return tmp_path


def test_image_folder_with_test_dir(image_tree):
    d = load_dataset({"name": "image_folder", "data_dir": str(image_tree), "val_size": 3})
    _check_splits(d)
    assert (len(d.train), len(d.val), len(d.test)) == (10, 3, 4)
    assert (d.num_classes, d.in_channels, d.resolution, d.class_names) == (2, 3, 12, ["cat", "dog"])
    assert d.test.y.tolist() == [0, 0, 1, 1]
    from PIL import Image

    first = np.array(Image.open(image_tree / "test" / "cat" / "0.png"))
    assert torch.equal(d.test.x[0], torch.from_numpy(first).permute(2, 0, 1))
    gray = load_dataset({"name": "image_folder", "data_dir": str(image_tree), "channels": 1, "resolution": 8})
    assert (gray.in_channels, gray.resolution) == (1, 8)


def test_image_folder_without_test_dir_and_mixed_sizes(tmp_path):
    rng = np.random.default_rng(12)
    for cls in ("a", "b", "c"):
        for i in range(5):
            side = 10 if i else 14  # one image per class has a different size
            _png(tmp_path / "train" / cls / f"{i}.png", rng.integers(0, 256, (side, side), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"^dataset\.resolution: images under .* have different sizes"):
        load_dataset({"name": "image_folder", "data_dir": str(tmp_path)})
    d = load_dataset({"name": "image_folder", "data_dir": str(tmp_path), "resolution": 10, "val_size": 2})
    _check_splits(d)
    assert (d.in_channels, d.resolution, d.num_classes) == (1, 10, 3)  # all gray -> 1 channel
    assert (len(d.train), len(d.val), len(d.test)) == (10, 2, 3)  # test_size 0.2 of 15


def test_image_folder_missing_dir(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset({"name": "image_folder", "data_dir": str(tmp_path / "nope")})
    msg = _assert_one_line(err)
    assert msg.startswith("dataset.data_dir: image_folder expects") and "does not exist" in msg


# --------------------------------------------------------------------------- augment_batch / normalize


def test_augment_identity_and_shape():
    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(augment_batch(x, pad=0, hflip=False), x)
    out = augment_batch(x, pad=4, hflip=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    xf = x.float()
    assert augment_batch(xf, pad=2, hflip=False).dtype == torch.float32


def test_augment_crops_are_shifted_windows_of_the_zero_padded_image():
    x = torch.arange(1, 2 * 1 * 6 * 6 + 1, dtype=torch.float32).view(2, 1, 6, 6)  # all non-zero
    for seed in range(10):
        out = augment_batch(x, pad=2, hflip=False, generator=torch.Generator().manual_seed(seed))
        padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
        for n in range(2):
            windows = [padded[n, :, i : i + 6, j : j + 6] for i in range(5) for j in range(5)]
            assert any(torch.equal(out[n], w) for w in windows)


def test_augment_flip_only_and_reproducible():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    out = augment_batch(x, pad=0, hflip=True, generator=torch.Generator().manual_seed(3))
    flipped = torch.tensor([torch.equal(o, s.flip(-1)) and not torch.equal(o, s) for o, s in zip(out, x)])
    kept = torch.tensor([torch.equal(o, s) for o, s in zip(out, x)])
    assert bool((flipped | kept).all()) and 10 < int(flipped.sum()) < 54
    again = augment_batch(x, pad=0, hflip=True, generator=torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    twice = augment_batch(augment_batch(x, 0, True, torch.Generator().manual_seed(5)), 0, True,
                          torch.Generator().manual_seed(5))
    assert torch.equal(twice, x)  # the same flip decisions applied twice undo each other
    assert not torch.equal(augment_batch(x, 4, True, torch.Generator().manual_seed(4)), out)


def test_normalize_checks_channels_and_accepts_float():
    x = torch.full((2, 1, 4, 4), 255, dtype=torch.uint8)
    assert torch.allclose(normalize(x, (0.5,), (0.25,)), torch.full((2, 1, 4, 4), 2.0))
    assert torch.allclose(normalize(x.float() / 255, (0.5,), (0.25,)), torch.full((2, 1, 4, 4), 2.0))
    with pytest.raises(ValueError, match="channels"):
        normalize(x, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_augment_and_normalize_on_cuda():
    x = torch.randint(0, 256, (32, 3, 8, 8), dtype=torch.uint8)
    cpu = augment_batch(x, 2, True, torch.Generator().manual_seed(0))
    gpu = augment_batch(x.cuda(), 2, True, torch.Generator().manual_seed(0))  # CPU generator, CUDA data
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
    assert normalize(gpu, (0.5,) * 3, (0.2,) * 3).device.type == "cuda"


def test_array_split_validates_and_repr_is_short():
    s = ArraySplit(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    assert len(s) == 3 and repr(s) == "ArraySplit(x=uint8[3, 1, 4, 4], y=int64[3])"
    with pytest.raises(TypeError):
        ArraySplit(torch.zeros(3, 1, 4, 4), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError):
        ArraySplit(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
