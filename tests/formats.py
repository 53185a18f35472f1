"""Small dataset files in each dataset's real on-disk format (torchvision's layout), shared by the tests.

The CIFAR pickles and SVHN .mat files are read by our loaders and, with the
md5 check bypassed, by torchvision's own readers (tests/test_data.py).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def images(n: int, c: int, h: int, w: int, seed: int) -> np.ndarray:
    """Random uint8 NCHW images whose first pixel encodes the sample index (to track samples)."""
    img = np.random.default_rng(seed).integers(0, 256, size=(n, c, h, w), dtype=np.uint8)
    img[:, 0, 0, 0] = np.arange(n, dtype=np.uint8)
    return img


def write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


def write_cifar10(root: Path, per_batch: int = 6, n_test: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``root/cifar-10-batches-py``: five training batches, the test batch and meta; label = index % 10."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    n = 5 * per_batch
    train = images(n, 3, 32, 32, seed=1)
    labels = np.arange(n) % 10
    for b in range(5):
        sl = slice(per_batch * b, per_batch * (b + 1))
        entry = {"batch_label": f"training batch {b + 1} of 5", "data": train[sl].reshape(per_batch, -1),
                 "labels": labels[sl].tolist(), "filenames": [f"img{i}.png" for i in range(per_batch)]}
        if b == 0:  # Python-2 style pickle with byte keys, as in some re-packaged copies
            entry = {k.encode(): v for k, v in entry.items()}
        write_pickle(folder / f"data_batch_{b + 1}", entry)
    test = images(n_test, 3, 32, 32, seed=2)
    write_pickle(folder / "test_batch", {"data": test.reshape(n_test, -1), "labels": [i % 10 for i in range(n_test)]})
    write_pickle(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_batch,
                                           "num_vis": 3072})
    return train, test


def write_cifar100(root: Path, n_train: int = 20, test_labels: tuple[int, ...] = (0, 1, 2, 97, 98, 99)
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``root/cifar-100-python``: train, test and meta; fine label of training image i is 7 i mod 100."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train, test = images(n_train, 3, 32, 32, seed=3), images(len(test_labels), 3, 32, 32, seed=4)
    fine = (np.arange(n_train) * 7) % 100
    write_pickle(folder / "train", {"data": train.reshape(n_train, -1), "fine_labels": fine.tolist(),
                                    "coarse_labels": (fine // 5).tolist()})
    write_pickle(folder / "test", {"data": test.reshape(len(test_labels), -1), "fine_labels": list(test_labels),
                                   "coarse_labels": [0] * len(test_labels)})
    write_pickle(folder / "meta", {"fine_label_names": [f"c{i}" for i in range(100)],
                                   "coarse_label_names": [f"s{i}" for i in range(20)]})
    return train, test, fine


def write_svhn(root: Path, n_train: int = 24, n_test: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``root/{train,test}_32x32.mat`` as scipy.io writes them: X is [H, W, C, N], digit 0 stored as 10."""
    import scipy.io

    root.mkdir(parents=True, exist_ok=True)
    train, test = images(n_train, 3, 32, 32, seed=5), images(n_test, 3, 32, 32, seed=6)
    for name, img in (("train_32x32.mat", train), ("test_32x32.mat", test)):
        digits = np.arange(len(img)) % 10
        y = np.where(digits == 0, 10, digits).reshape(-1, 1).astype(np.uint8)
        scipy.io.savemat(root / name, {"X": img.transpose(2, 3, 1, 0), "y": y})
    return train, test
