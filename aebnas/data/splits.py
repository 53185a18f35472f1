"""Containers for loaded data and the deterministic train/val/test carving.

Images are kept as ``uint8`` NCHW tensors end to end: four times smaller than
float32, cheap to move to an accelerator, and normalised/augmented per batch there
(see :mod:`aebnas.data.augment`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import DatasetError

__all__ = ["ArraySplit", "DataSplits", "RawDataset", "carve", "subset_indices"]


@dataclass(repr=False)
class ArraySplit:
    """One split as whole tensors: ``x`` uint8 [N, C, H, W] (0..255), ``y`` int64 [N]."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        # Fail loudly here rather than deep inside a training loop.
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise TypeError(f"ArraySplit.x must be uint8 [N, C, H, W], got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.dtype != torch.int64 or self.y.dim() != 1:
            raise TypeError(f"ArraySplit.y must be int64 [N], got {self.y.dtype} {tuple(self.y.shape)}")
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"ArraySplit: {self.x.shape[0]} images but {self.y.shape[0]} labels")
        self.x = self.x.contiguous()
        self.y = self.y.contiguous()

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, index: torch.Tensor | slice) -> "ArraySplit":
        """Select samples (index tensor or slice) and return a new split."""
        return ArraySplit(self.x[index], self.y[index])

    def __repr__(self) -> str:  # never dump tensor contents into logs
        return f"ArraySplit(x=uint8{list(self.x.shape)}, y=int64[{len(self)}])"


@dataclass(repr=False)
class DataSplits:
    """A dataset ready for search/training: three splits plus the facts models need."""

    name: str
    train: ArraySplit
    val: ArraySplit
    test: ArraySplit
    num_classes: int
    in_channels: int
    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hflip: bool
    class_names: list[str] | None

    def __repr__(self) -> str:
        return (
            f"DataSplits(name={self.name!r}, train={len(self.train)}, val={len(self.val)}, "
            f"test={len(self.test)}, num_classes={self.num_classes}, in_channels={self.in_channels}, "
            f"resolution={self.resolution}, hflip={self.hflip})"
        )


@dataclass
class RawDataset:
    """What a loader returns: native-format data before splitting and resizing.

    ``test_x``/``test_y`` are ``None`` when the dataset has no official test split;
    the pipeline then carves one out with ``dataset.test_size``.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor | None = None
    test_y: torch.Tensor | None = None
    class_names: list[str] | None = field(default=None)


def _resolve_count(size: int | float, n: int, key: str) -> int:
    """Turn a count-or-fraction into a count that leaves both sides non-empty."""
    if n < 2:
        raise DatasetError(f"dataset.{key}: cannot split {n} sample(s); the dataset needs at least 2")
    if isinstance(size, int):
        if size >= n:
            raise DatasetError(
                f"dataset.{key}: {size} is not smaller than the {n} available samples; "
                "use a smaller count or a fraction such as 0.1"
            )
        return size
    return min(max(int(round(size * n)), 1), n - 1)


def carve(n: int, size: int | float, generator: torch.Generator, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into (kept, carved) index tensors, each sorted.

    The permutation comes from ``generator`` so the same ``split_seed`` always gives
    the same split; sorting keeps the original sample order within each side.
    """
    count = _resolve_count(size, n, key)
    perm = torch.randperm(n, generator=generator)
    carved, kept = perm[:count], perm[count:]
    return kept.sort().values, carved.sort().values


def subset_indices(n: int, limit: int | None, generator: torch.Generator) -> torch.Tensor | None:
    """Sorted indices of a deterministic random subset of size ``limit`` (None = keep all)."""
    if limit is None or limit >= n:
        return None
    return torch.randperm(n, generator=generator)[:limit].sort().values
