"""Per-batch normalisation and augmentation on whole tensors, on any device.

Data stays uint8 in memory (see :mod:`aebnas.data.splits`); training code moves a
batch to the accelerator and calls these there. Doing the work as a few tensor ops
per batch avoids PIL and per-sample Python loops, which dominate the cost of
training the small candidate networks a NAS evaluates.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["normalize", "augment_batch"]


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Return ``(x / 255 - mean) / std`` as float32 on ``x``'s device.

    ``x`` is NCHW; uint8 input is scaled from 0..255, floating input is taken to be
    already in [0, 1] units (the units ``DataSplits.mean``/``std`` are in).
    """
    if x.dim() != 4:
        raise ValueError(f"normalize: expected NCHW images, got shape {tuple(x.shape)}")
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise ValueError(f"normalize: {x.shape[1]} channels but {len(mean)} means and {len(std)} stds")
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    xf = x.float()
    if x.dtype == torch.uint8:
        xf = xf / 255.0
    return (xf - m) / s


def augment_batch(
    x: torch.Tensor, pad: int, hflip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` pixels, plus optional random horizontal flip.

    Each sample gets its own crop offset and flip, drawn from ``generator`` (which may
    live on the CPU or on ``x``'s device), so a seeded generator reproduces the batch
    exactly. Crop and flip are fused into one gather over the padded batch: no
    per-sample loop, no host round-trip. Output has ``x``'s shape, dtype and device.
    With ``pad=0`` and ``hflip=False`` ``x`` is returned unchanged and no random
    numbers are consumed.
    """
    if x.dim() != 4:
        raise ValueError(f"augment_batch: expected NCHW images, got shape {tuple(x.shape)}")
    if pad < 0:
        raise ValueError(f"augment_batch: pad must be >= 0, got {pad}")
    if (pad == 0 and not hflip) or x.shape[0] == 0:
        return x
    n, c, h, w = x.shape
    rand_device = generator.device if generator is not None else x.device
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=rand_device).to(x.device)
    rows = offsets[0].unsqueeze(1) + torch.arange(h, device=x.device)  # [N, H]
    cols = offsets[1].unsqueeze(1) + torch.arange(w, device=x.device)  # [N, W]
    if hflip:
        flip = torch.rand(n, generator=generator, device=rand_device).to(x.device) < 0.5
        cols = torch.where(flip.unsqueeze(1), cols.flip(1), cols)
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    batch_idx = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan_idx = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch_idx, chan_idx, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
