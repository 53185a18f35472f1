"""Fashion-MNIST from idx files, with a small self-contained idx reader.

The reader handles the four standard files either gzipped or plain, in a flat
directory (e.g. Debian's ``/usr/share/datasets/fashion-mnist``) or in torchvision's
``<data_dir>/FashionMNIST/raw`` layout. Parsing idx directly (rather than through
torchvision) lets us check the header and length and name the broken file.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib

import numpy as np

from .config import DataSettings
from .errors import DatasetError
from .files import download_with, not_found
from .splits import RawDataset
from .transforms import as_labels, as_uint8_images

__all__ = ["read_idx", "find_idx_file", "load_fashion_mnist", "FASHION_MNIST_CLASSES"]

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip

_UBYTE = 0x08  # idx type code for unsigned bytes, the only type MNIST-style sets use

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _corrupt(path: str, why: str) -> DatasetError:
    return DatasetError(f"dataset.data_dir: corrupt idx file '{path}' ({why}); replace it with an intact copy")


def read_idx(path: str, ndim: int) -> np.ndarray:
    """Read an unsigned-byte idx file (optionally gzipped) with exactly ``ndim`` dimensions.

    Checks the magic number, the big-endian dimension header and that the payload
    has exactly the announced number of bytes.
    """
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                raw = handle.read()
        else:
            with open(path, "rb") as handle:
                raw = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise _corrupt(path, f"{type(exc).__name__}: {exc}") from exc
    if len(raw) < 4:
        raise _corrupt(path, f"only {len(raw)} bytes, too short for a header")
    zero, type_code, file_ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or type_code != _UBYTE:
        raise _corrupt(path, f"bad magic number 0x{raw[:4].hex()}, expected 0x0000080{ndim}")
    if file_ndim != ndim:
        raise _corrupt(path, f"has {file_ndim} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise _corrupt(path, "truncated header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    found = len(raw) - header
    if found != expected:
        state = "truncated" if found < expected else "trailing bytes"
        raise _corrupt(path, f"{state}: header says {'x'.join(map(str, dims))} = {expected} bytes, found {found}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_idx_file(folder: str, stem: str) -> str | None:
    """Path of ``stem`` or ``stem.gz`` in ``folder`` (gzipped preferred), else None."""
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def _find_all(folder: str) -> dict[str, str] | None:
    found = {key: find_idx_file(folder, stem) for key, stem in _FILES.items()}
    return found if all(found.values()) else None  # type: ignore[return-value]


def _locate(cfg: DataSettings) -> dict[str, str]:
    """Flat directory first, then torchvision's layout, then (if allowed) download."""
    torchvision_raw = os.path.join(cfg.data_dir, "FashionMNIST", "raw")
    for folder in (cfg.data_dir, torchvision_raw):
        found = _find_all(folder)
        if found:
            return found
    expected = f"{', '.join(s + '.gz' for s in _FILES.values())} directly or in FashionMNIST/raw/"
    if not cfg.download:
        raise not_found("Fashion-MNIST", cfg.data_dir, expected)
    import torchvision.datasets as tvd

    download_with("Fashion-MNIST", cfg.data_dir, lambda: tvd.FashionMNIST(root=cfg.data_dir, train=True, download=True))
    found = _find_all(torchvision_raw)
    if not found:
        raise not_found("Fashion-MNIST", cfg.data_dir, expected + " even after downloading")
    return found


def load_fashion_mnist(cfg: DataSettings) -> RawDataset:
    """Fashion-MNIST: 60k train / 10k test 28x28 grayscale (pad to 32 via config)."""
    paths = _locate(cfg)
    arrays = {
        key: read_idx(path, 3 if key.endswith("images") else 1) for key, path in paths.items()
    }
    for split in ("train", "test"):
        n_img, n_lab = arrays[f"{split}_images"].shape[0], arrays[f"{split}_labels"].shape[0]
        if n_img != n_lab:
            raise DatasetError(
                f"dataset.data_dir: '{paths[split + '_images']}' has {n_img} images but "
                f"'{paths[split + '_labels']}' has {n_lab} labels; the files do not belong together"
            )
    where = f"dataset.data_dir: Fashion-MNIST in '{cfg.data_dir}'"
    return RawDataset(
        train_x=as_uint8_images(arrays["train_images"], "NHW", where),
        train_y=as_labels(arrays["train_labels"], where),
        test_x=as_uint8_images(arrays["test_images"], "NHW", where),
        test_y=as_labels(arrays["test_labels"], where),
        class_names=list(FASHION_MNIST_CLASSES),
    )
