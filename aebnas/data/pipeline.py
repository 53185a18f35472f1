"""Turn a loader's :class:`RawDataset` into final :class:`DataSplits`.

The same steps run for every dataset, in this order, so behaviour is uniform:
carve test (only if there is no official one) -> carve val from train -> optional
train subset -> resize or pad -> channel conversion -> class count and statistics.
Splitting happens before resizing so quick runs with ``max_train_samples`` do not
pay to resize data they discard.
"""

from __future__ import annotations

import torch

from .config import DataSettings
from .errors import DatasetError
from .splits import ArraySplit, DataSplits, RawDataset, carve, subset_indices
from .transforms import channel_stats, convert_channels, pad_to, resize

__all__ = ["build_splits"]


def _split(raw: RawDataset, cfg: DataSettings) -> tuple[ArraySplit, ArraySplit, ArraySplit]:
    """Deterministic train/val/test from ``dataset.split_seed`` (one generator, fixed order)."""
    generator = torch.Generator().manual_seed(cfg.split_seed)
    pool = ArraySplit(raw.train_x, raw.train_y)
    if raw.test_x is None or raw.test_y is None:
        keep, held = carve(len(pool), cfg.test_size, generator, "test_size")
        test, pool = pool[held], pool[keep]
    else:
        test = ArraySplit(raw.test_x, raw.test_y)
    keep, held = carve(len(pool), cfg.val_size, generator, "val_size")
    val, train = pool[held], pool[keep]
    subset = subset_indices(len(train), cfg.max_train_samples, generator)
    if subset is not None:
        train = train[subset]
    return train, val, test


def _target_resolution(x: torch.Tensor, cfg: DataSettings) -> int:
    h, w = x.shape[-2:]
    if cfg.resolution is not None:
        return cfg.resolution
    if h != w:
        raise DatasetError(f"dataset.resolution: images are {h}x{w} (not square); set dataset.resolution to resize them")
    return int(h)


def _reshape(split: ArraySplit, size: int, cfg: DataSettings) -> ArraySplit:
    x = pad_to(split.x, size) if cfg.pad_to_resolution else resize(split.x, size)
    if cfg.channels is not None:
        x = convert_channels(x, cfg.channels)
    return ArraySplit(x, split.y)


def build_splits(name: str, raw: RawDataset, cfg: DataSettings, default_hflip: bool) -> DataSplits:
    """Split, reshape and describe ``raw`` according to ``cfg``."""
    train, val, test = _split(raw, cfg)
    size = _target_resolution(train.x, cfg)
    train, val, test = (_reshape(s, size, cfg) for s in (train, val, test))
    if test.x.shape[1:] != train.x.shape[1:]:
        raise DatasetError(
            f"dataset.resolution: test images are {list(test.x.shape[1:])} but train images are "
            f"{list(train.x.shape[1:])} (C, H, W); set dataset.resolution and dataset.channels to make them match"
        )

    labels_max = max(int(s.y.max()) for s in (train, val, test) if len(s))
    num_classes = labels_max + 1
    class_names = raw.class_names
    if class_names is not None:
        if len(class_names) >= num_classes:
            num_classes = len(class_names)
        else:  # names do not describe these labels; better none than wrong ones
            class_names = None
    if num_classes < 2:
        raise DatasetError(f"dataset.name: {name} data has only {num_classes} class; classification needs at least 2")

    mean, std = channel_stats(train.x)
    return DataSplits(
        name=name,
        train=train,
        val=val,
        test=test,
        num_classes=num_classes,
        in_channels=int(train.x.shape[1]),
        resolution=size,
        mean=mean,
        std=std,
        hflip=cfg.hflip if cfg.hflip is not None else default_hflip,
        class_names=list(class_names) if class_names is not None else None,
    )
