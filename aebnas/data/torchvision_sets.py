"""CIFAR-10, CIFAR-100 and SVHN in torchvision's on-disk layout.

Design choice: torchvision is used only to *download* (``dataset.download=true``),
and the files are always *read* by the small readers below. torchvision's dataset
classes refuse any file whose md5 differs from the official archive, which rejects
legitimate user-provided copies (re-pickled, subset, or generated test files) and
hides the cause behind "Dataset not found or corrupted". Reading the same formats
directly keeps the real download path for users, accepts any file in the correct
format, reports missing or corrupt files by name, and means the code path the tests
exercise is the one users run. The md5 check still happens on download, inside
torchvision. Note: CIFAR files are Python pickles, which (as with torchvision) must
only be loaded from trusted sources.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import numpy as np

from .config import DataSettings
from .errors import DatasetError
from .files import download_with, missing_files, not_found
from .splits import RawDataset
from .transforms import as_labels, as_uint8_images

__all__ = ["load_cifar10", "load_cifar100", "load_svhn"]


def _unpickle(path: str) -> dict[str, Any]:
    """Load one CIFAR pickle, normalising byte keys (Python 2 pickles) to str."""
    try:
        with open(path, "rb") as handle:
            obj = pickle.load(handle, encoding="latin1")
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt pickles raise many types
        raise DatasetError(
            f"dataset.data_dir: cannot read CIFAR file '{path}' ({type(exc).__name__}: {exc}); "
            "replace it with an intact copy"
        ) from exc
    if not isinstance(obj, dict):
        raise DatasetError(f"dataset.data_dir: CIFAR file '{path}' does not hold a dict; replace it with an intact copy")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(entry: dict[str, Any], key: str, path: str) -> Any:
    if key not in entry:
        raise DatasetError(f"dataset.data_dir: CIFAR file '{path}' has no '{key}' entry; replace it with an intact copy")
    return entry[key]


def _read_cifar_batches(folder: str, files: list[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in files:
        path = os.path.join(folder, name)
        entry = _unpickle(path)
        data = np.asarray(_field(entry, "data", path))
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DatasetError(
                f"dataset.data_dir: CIFAR file '{path}' has data of shape {data.shape}, expected [N, 3072]"
            )
        batch_labels = np.asarray(_field(entry, label_key, path))
        if batch_labels.shape[0] != data.shape[0]:
            raise DatasetError(
                f"dataset.data_dir: CIFAR file '{path}' has {data.shape[0]} images but {batch_labels.shape[0]} labels"
            )
        images.append(data.reshape(-1, 3, 32, 32))  # stored channel-major: already NCHW
        labels.append(batch_labels)
    return np.concatenate(images), np.concatenate(labels)


def _load_cifar(
    cfg: DataSettings,
    title: str,
    base_folder: str,
    train_files: list[str],
    test_files: list[str],
    meta_file: str,
    label_key: str,
    names_key: str,
    torchvision_class: str,
) -> RawDataset:
    folder = os.path.join(cfg.data_dir, base_folder)
    needed = train_files + test_files + [meta_file]
    if missing_files(folder, needed):
        if not cfg.download:
            raise not_found(title, cfg.data_dir, f"{base_folder}/ with {', '.join(needed)}")
        import torchvision.datasets as tvd

        cls = getattr(tvd, torchvision_class)
        download_with(title, cfg.data_dir, lambda: cls(root=cfg.data_dir, train=True, download=True))
        still = missing_files(folder, needed)
        if still:
            raise not_found(title, cfg.data_dir, f"{base_folder}/{still[0]} even after downloading")

    train_x, train_y = _read_cifar_batches(folder, train_files, label_key)
    test_x, test_y = _read_cifar_batches(folder, test_files, label_key)
    meta_path = os.path.join(folder, meta_file)
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in _field(_unpickle(meta_path), names_key, meta_path)]
    where = f"dataset.data_dir: {title} in '{folder}'"
    return RawDataset(
        train_x=as_uint8_images(train_x, "NCHW", where),
        train_y=as_labels(train_y, where),
        test_x=as_uint8_images(test_x, "NCHW", where),
        test_y=as_labels(test_y, where),
        class_names=names,
    )


def load_cifar10(cfg: DataSettings) -> RawDataset:
    """CIFAR-10 from ``<data_dir>/cifar-10-batches-py/`` (50k train, 10k test, 32x32 RGB)."""
    return _load_cifar(
        cfg,
        title="CIFAR-10",
        base_folder="cifar-10-batches-py",
        train_files=[f"data_batch_{i}" for i in range(1, 6)],
        test_files=["test_batch"],
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        torchvision_class="CIFAR10",
    )


def load_cifar100(cfg: DataSettings) -> RawDataset:
    """CIFAR-100 (fine labels) from ``<data_dir>/cifar-100-python/``."""
    return _load_cifar(
        cfg,
        title="CIFAR-100",
        base_folder="cifar-100-python",
        train_files=["train"],
        test_files=["test"],
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        torchvision_class="CIFAR100",
    )


_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def _read_svhn(path: str) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as exc:  # noqa: BLE001 - scipy raises several types for bad files
        raise DatasetError(
            f"dataset.data_dir: cannot read SVHN file '{path}' ({type(exc).__name__}: {exc}); "
            "replace it with an intact copy"
        ) from exc
    for key in ("X", "y"):
        if key not in mat:
            raise DatasetError(f"dataset.data_dir: SVHN file '{path}' has no '{key}' array; replace it with an intact copy")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[2] not in (1, 3) or x.shape[3] != y.shape[0]:
        raise DatasetError(
            f"dataset.data_dir: SVHN file '{path}' has X of shape {x.shape} and {y.shape[0]} labels; "
            "expected X [H, W, 3, N] with N labels"
        )
    y = y.astype(np.int64)
    y[y == 10] = 0  # SVHN stores digit 0 as class 10
    return np.transpose(x, (3, 2, 0, 1)), y  # [H, W, C, N] -> [N, C, H, W]


def load_svhn(cfg: DataSettings) -> RawDataset:
    """SVHN cropped digits (train/test ``.mat`` files directly in ``data_dir``); no 'extra' split."""
    if missing_files(cfg.data_dir, list(_SVHN_FILES.values())):
        if not cfg.download:
            raise not_found("SVHN", cfg.data_dir, ", ".join(_SVHN_FILES.values()))
        import torchvision.datasets as tvd

        for split, name in _SVHN_FILES.items():
            if missing_files(cfg.data_dir, [name]):
                download_with("SVHN", cfg.data_dir, lambda s=split: tvd.SVHN(root=cfg.data_dir, split=s, download=True))
    tensors = {}
    for split, name in _SVHN_FILES.items():
        path = os.path.join(cfg.data_dir, name)
        x, y = _read_svhn(path)
        where = f"dataset.data_dir: SVHN file '{path}'"
        tensors[split] = (as_uint8_images(x, "NCHW", where), as_labels(y, where))
    return RawDataset(
        train_x=tensors["train"][0],
        train_y=tensors["train"][1],
        test_x=tensors["test"][0],
        test_y=tensors["test"][1],
        class_names=[str(d) for d in range(10)],
    )
