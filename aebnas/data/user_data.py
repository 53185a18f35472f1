"""The user's own data: an ImageFolder tree or a single ``.npz`` file.

Shapes, channels and class counts are always read from the files, never assumed.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .config import DataSettings
from .errors import DatasetError
from .splits import RawDataset
from .transforms import as_labels, as_uint8_images, resize

__all__ = ["load_image_folder", "load_npz"]

_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _scan(folder: str, class_to_idx: dict[str, int] | None) -> tuple[list[str], list[tuple[str, int]]]:
    """List (path, class index) pairs under ``folder`` using torchvision's ImageFolder rules."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, found_map = find_classes(folder)
    except FileNotFoundError as exc:
        raise DatasetError(
            f"dataset.data_dir: no class folders in '{folder}'; expected '{folder}/<class_name>/<image>'"
        ) from exc
    if class_to_idx is None:
        class_to_idx = found_map
    else:
        extra = sorted(set(classes) - set(class_to_idx))
        if extra:
            raise DatasetError(
                f"dataset.data_dir: '{folder}' has class folder(s) {', '.join(extra)} that are not in train/; "
                "test classes must be a subset of the train classes"
            )
        class_to_idx = {c: class_to_idx[c] for c in classes}
    try:
        samples = make_dataset(folder, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=False)
    except FileNotFoundError as exc:
        raise DatasetError(
            f"dataset.data_dir: empty class folder under '{folder}' ({exc}); add images or remove the folder"
        ) from exc
    return classes, samples


def _read_images(samples: list[tuple[str, int]], mode: str | None) -> list[tuple[np.ndarray, int]]:
    """Open each image with PIL, converting to ``mode`` ('L'/'RGB') or, if None, keeping gray vs colour."""
    from PIL import Image

    out = []
    for path, label in samples:
        try:
            with Image.open(path) as img:
                target = mode or ("L" if img.mode in _GRAY_MODES else "RGB")
                array = np.array(img.convert(target), dtype=np.uint8)  # writable copy
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad images
            raise DatasetError(
                f"dataset.data_dir: cannot read image '{path}' ({type(exc).__name__}: {exc}); remove or replace it"
            ) from exc
        out.append((array, label))
    return out


def _to_tensors(images: list[tuple[np.ndarray, int]], channels: int) -> list[torch.Tensor]:
    """Decoded HW/HWC arrays -> uint8 [1, C, H, W] tensors with ``channels`` channels."""
    tensors = []
    for array, _ in images:
        if array.ndim == 2:
            array = array[:, :, None]
        if array.shape[2] == 1 and channels == 3:  # gray image in a colour set
            array = np.repeat(array, 3, axis=2)
        tensors.append(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0))
    return tensors


def _stack(tensors: list[torch.Tensor], images: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.cat(tensors).contiguous()
    y = torch.tensor([label for _, label in images], dtype=torch.int64)
    return x, y


def load_image_folder(cfg: DataSettings) -> RawDataset:
    """Images in ``<data_dir>/train/<class>/*`` and optionally ``<data_dir>/test/<class>/*``.

    Channels default to RGB if any image is colour, else grayscale; ``dataset.channels``
    overrides. Images of different sizes need ``dataset.resolution`` and are resized
    one by one; same-size images are left for the common pipeline to resize or pad.
    Without a ``test/`` folder the pipeline carves a test split with ``dataset.test_size``.
    """
    train_dir = os.path.join(cfg.data_dir, "train")
    test_dir = os.path.join(cfg.data_dir, "test")
    if not os.path.isdir(train_dir):
        where = "" if os.path.isdir(cfg.data_dir) else " (the directory does not exist)"
        raise DatasetError(
            f"dataset.data_dir: image_folder expects '{train_dir}/<class_name>/<image>' but there is no train/ "
            f"folder under '{cfg.data_dir}'{where}; point dataset.data_dir at the folder holding train/ (and test/)"
        )
    classes, train_samples = _scan(train_dir, None)
    class_to_idx = {c: i for i, c in enumerate(classes)}
    test_samples = _scan(test_dir, class_to_idx)[1] if os.path.isdir(test_dir) else []

    mode = {1: "L", 3: "RGB"}.get(cfg.channels) if cfg.channels is not None else None
    train_images = _read_images(train_samples, mode)
    test_images = _read_images(test_samples, mode)
    every = train_images + test_images
    channels = cfg.channels or (3 if any(a.ndim == 3 for a, _ in every) else 1)
    tensors = _to_tensors(every, channels)

    sizes = sorted({tuple(t.shape[-2:]) for t in tensors})
    if len(sizes) > 1:
        if cfg.resolution is None:
            (h1, w1), (h2, w2) = sizes[0], sizes[-1]
            raise DatasetError(
                f"dataset.resolution: images under '{cfg.data_dir}' have different sizes (e.g. {h1}x{w1} and "
                f"{h2}x{w2}); set dataset.resolution to resize them all"
            )
        tensors = [resize(t, cfg.resolution) for t in tensors]

    n_train = len(train_images)
    train_x, train_y = _stack(tensors[:n_train], train_images)
    test_x = test_y = None
    if os.path.isdir(test_dir):
        test_x, test_y = _stack(tensors[n_train:], test_images)
    return RawDataset(train_x, train_y, test_x, test_y, class_names=list(classes))


_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _npz_layout(shape: tuple[int, ...], key: str, path: str) -> str:
    """Detect where the channel axis is: the small axis of size 1 or 3 next to H, W."""
    if len(shape) == 3:
        return "NHW"
    if len(shape) == 4:
        first, last = shape[1] in (1, 3), shape[3] in (1, 3)
        if first and not last:
            return "NCHW"
        if last and not first:
            return "NHWC"
    raise DatasetError(
        f"dataset.path: cannot tell the image layout of {key} with shape {shape} in '{path}'; "
        "store images as [N, H, W], [N, H, W, C] or [N, C, H, W] with C = 1 or 3"
    )


def load_npz(cfg: DataSettings) -> RawDataset:
    """Arrays ``x_train``, ``y_train``, ``x_test``, ``y_test`` from ``dataset.path``.

    ``dataset.data_dir`` may point at the ``.npz`` file instead. Images may be uint8
    0..255 or float in [0, 1], in NHW, NHWC or NCHW layout.
    """
    path = cfg.path
    if path is None:
        if cfg.data_dir.endswith(".npz"):
            path = cfg.data_dir
        else:
            raise DatasetError(
                "dataset.path: npz needs the path of a .npz file holding x_train, y_train, x_test, y_test; "
                "set dataset.path (or point dataset.data_dir at the file)"
            )
    if not os.path.isfile(path):
        raise DatasetError(f"dataset.path: file '{path}' does not exist; set dataset.path to your .npz file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in _NPZ_KEYS if k not in archive.files]
            if missing:
                raise DatasetError(
                    f"dataset.path: '{path}' has no array {missing[0]!r} (found: {', '.join(archive.files) or 'none'}); "
                    f"save it with np.savez(path, {', '.join(k + '=...' for k in _NPZ_KEYS)})"
                )
            arrays = {k: archive[k] for k in _NPZ_KEYS}
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - zipfile/pickle/ValueError for bad archives
        raise DatasetError(f"dataset.path: cannot read '{path}' ({type(exc).__name__}: {exc}); check the file") from exc

    out = {}
    for split in ("train", "test"):
        x_key, y_key = f"x_{split}", f"y_{split}"
        x, y = arrays[x_key], arrays[y_key]
        layout = _npz_layout(x.shape, x_key, path)
        images = as_uint8_images(x, layout, f"dataset.path: {x_key} in '{path}'")
        labels = as_labels(y, f"dataset.path: {y_key} in '{path}'")
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"dataset.path: {x_key} has {images.shape[0]} images but {y_key} has {labels.shape[0]} labels in '{path}'"
            )
        out[split] = (images, labels)
    if out["train"][0].shape[1:] != out["test"][0].shape[1:]:
        raise DatasetError(
            f"dataset.path: x_train images are {list(out['train'][0].shape[1:])} but x_test images are "
            f"{list(out['test'][0].shape[1:])} (C, H, W) in '{path}'; store both at the same size"
        )
    return RawDataset(out["train"][0], out["train"][1], out["test"][0], out["test"][1], class_names=None)
