"""Datasets that need no files: scikit-learn's digits and a generated synthetic set.

Both are always available offline, which makes them the defaults for quickstarts,
notebooks and tests.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import DataSettings
from .splits import RawDataset
from .transforms import as_labels

__all__ = ["load_digits", "load_synthetic"]


def load_digits(cfg: DataSettings) -> RawDataset:
    """scikit-learn's 1797 8x8 handwritten digits (values 0..16 scaled to 0..255), 1 channel.

    There is no official test split; the pipeline carves one with ``dataset.test_size``.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).clip(0, 255)
    x = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1).contiguous()  # [N, 1, 8, 8]
    return RawDataset(
        train_x=x,
        train_y=as_labels(bunch.target, "dataset: digits"),
        class_names=[str(int(t)) for t in bunch.target_names],
    )


def load_synthetic(cfg: DataSettings) -> RawDataset:
    """A deterministic, learnable image classification set generated from ``dataset.seed``.

    Each class has a fixed random low-frequency colour pattern (a 4x4 grid upsampled
    bilinearly); every sample is its class pattern shifted by up to 2 pixels, scaled
    in contrast, plus Gaussian pixel noise. Classes are balanced. A small CNN learns
    it quickly but not instantly, so it exercises training code meaningfully without
    any download. ``dataset.resolution`` (default 32) and ``dataset.channels``
    (default 3) set the generated size directly.
    """
    num_classes = cfg.num_classes if cfg.num_classes is not None else 10
    num_samples = cfg.num_samples if cfg.num_samples is not None else 2000
    size = cfg.resolution if cfg.resolution is not None else 32
    channels = cfg.channels if cfg.channels is not None else 3
    gen = torch.Generator().manual_seed(cfg.seed if cfg.seed is not None else 0)

    grid = torch.rand(num_classes, channels, 4, 4, generator=gen)
    patterns = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)  # [K, C, S, S]
    labels = torch.arange(num_samples) % num_classes
    labels = labels[torch.randperm(num_samples, generator=gen)]

    shift = max(1, size // 16)
    dy = torch.randint(-shift, shift + 1, (num_samples,), generator=gen)
    dx = torch.randint(-shift, shift + 1, (num_samples,), generator=gen)
    rows = (torch.arange(size).view(1, size) - dy.view(-1, 1)) % size  # [N, S] circular shift
    cols = (torch.arange(size).view(1, size) - dx.view(-1, 1)) % size
    base = patterns[labels]  # [N, C, S, S]
    base = base[
        torch.arange(num_samples).view(-1, 1, 1, 1),
        torch.arange(channels).view(1, -1, 1, 1),
        rows.view(num_samples, 1, size, 1),
        cols.view(num_samples, 1, 1, size),
    ]
    contrast = 0.6 + 0.4 * torch.rand(num_samples, 1, 1, 1, generator=gen)
    noise = 0.2 * torch.randn(num_samples, channels, size, size, generator=gen)
    images = (0.5 + contrast * (base - 0.5) + noise).clamp_(0.0, 1.0)
    x = images.mul_(255.0).round_().to(torch.uint8).contiguous()
    return RawDataset(train_x=x, train_y=labels.to(torch.int64).contiguous(), class_names=None)
