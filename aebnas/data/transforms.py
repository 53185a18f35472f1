"""Whole-tensor image conversions applied once at load time.

Resizing, padding and channel conversion run on entire uint8 NCHW tensors in
chunks, so loading stays fast and memory stays bounded even for 60k-image sets.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DatasetError

__all__ = [
    "as_uint8_images",
    "as_labels",
    "resize",
    "pad_to",
    "convert_channels",
    "channel_stats",
]

_CHUNK = 4096  # images per chunk for float work: ~50 MB of float32 at 3x32x32
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, the same weights PIL uses for "L"


def as_uint8_images(array: np.ndarray, layout: str, what: str) -> torch.Tensor:
    """Convert an image array in ``layout`` ('NHW', 'NHWC' or 'NCHW') to uint8 NCHW.

    Float arrays are taken to be in [0, 1] and scaled to 0..255; integer arrays must
    already lie in 0..255. ``what`` names the source in error messages.
    """
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.floating):
        if array.size and (np.nanmin(array) < 0.0 or np.nanmax(array) > 1.0 or np.isnan(array).any()):
            raise DatasetError(f"{what}: float images must lie in [0, 1]; scale them or store uint8 0..255")
        array = np.rint(array * 255.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        if array.dtype != np.uint8:
            if array.size and (array.min() < 0 or array.max() > 255):
                raise DatasetError(f"{what}: integer images must lie in 0..255, got {array.min()}..{array.max()}")
            array = array.astype(np.uint8)
    else:
        raise DatasetError(f"{what}: unsupported image dtype {array.dtype}; use uint8 or float in [0, 1]")
    array = np.ascontiguousarray(array)
    if not array.flags.writeable:  # e.g. np.frombuffer; torch needs writable memory
        array = array.copy()
    tensor = torch.from_numpy(array)
    if layout == "NHW":
        tensor = tensor.unsqueeze(1)
    elif layout == "NHWC":
        tensor = tensor.permute(0, 3, 1, 2)
    elif layout != "NCHW":  # pragma: no cover - programming error
        raise ValueError(f"unknown layout {layout}")
    return tensor.contiguous()


def as_labels(array: np.ndarray, what: str) -> torch.Tensor:
    """Convert integer class labels of shape [N] or [N, 1] to a contiguous int64 tensor."""
    array = np.asarray(array)
    if array.ndim == 2 and 1 in array.shape:
        array = array.reshape(-1)
    if array.ndim != 1:
        raise DatasetError(f"{what}: labels must have shape [N], got {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        if array.size and not np.all(np.equal(np.mod(array, 1), 0)):
            raise DatasetError(f"{what}: labels must be whole numbers")
    elif not np.issubdtype(array.dtype, np.integer):
        raise DatasetError(f"{what}: labels must be integers, got dtype {array.dtype}")
    labels = torch.from_numpy(array.astype(np.int64))
    if labels.numel() and int(labels.min()) < 0:
        raise DatasetError(f"{what}: labels must be >= 0, found {int(labels.min())}")
    return labels.contiguous()


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear, antialiased resize of uint8 NCHW images to ``size`` x ``size``."""
    if x.shape[-2:] == (size, size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, x.shape[0], _CHUNK):
        chunk = x[start : start + _CHUNK].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out[start : start + _CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


def pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad uint8 NCHW images symmetrically to ``size`` x ``size`` (e.g. 28 -> 32)."""
    h, w = x.shape[-2:]
    if size < h or size < w:
        raise DatasetError(
            f"dataset.pad_to_resolution: cannot pad {h}x{w} images down to {size}; "
            "set dataset.pad_to_resolution=false to resize instead"
        )
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, (left, size - w - left, top, size - h - top)).contiguous()


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Replicate grayscale to 3 channels, or reduce RGB to luma for 1 channel."""
    have = x.shape[1]
    if have == channels:
        return x
    if have == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        out = torch.empty((x.shape[0], 1, *x.shape[-2:]), dtype=torch.uint8)
        weights = torch.tensor(_LUMA).view(1, 3, 1, 1)
        for start in range(0, x.shape[0], _CHUNK):
            chunk = (x[start : start + _CHUNK].float() * weights).sum(1, keepdim=True)
            out[start : start + _CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
        return out
    raise DatasetError(f"dataset.channels: cannot convert {have}-channel images to {channels}; use 1, 3 or null")


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 NCHW images in [0, 1] units.

    Computed exactly from a 256-bin histogram per channel, which is much faster than
    float accumulation over tens of millions of pixels. A constant channel gets
    std 1.0 so normalisation never divides by zero.
    """
    levels = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).to(torch.float64)
        total = max(float(counts.sum()), 1.0)
        mean = float((counts * levels).sum()) / total
        var = max(float((counts * (levels - mean).square()).sum()) / total, 0.0)
        std = var**0.5
        means.append(mean)
        stds.append(std if std > 1e-6 else 1.0)
    return tuple(means), tuple(stds)
