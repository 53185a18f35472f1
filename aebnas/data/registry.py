"""Name -> loader table and the public :func:`load_dataset` entry point.

Adding a dataset means writing a loader that returns a :class:`RawDataset` and
adding one line here; splitting, resizing and statistics are shared (see
:mod:`aebnas.data.pipeline`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .bundled import load_digits, load_synthetic
from .config import DataSettings, parse_config
from .idx import load_fashion_mnist
from .pipeline import build_splits
from .splits import DataSplits, RawDataset
from .torchvision_sets import load_cifar10, load_cifar100, load_svhn
from .user_data import load_image_folder, load_npz

__all__ = ["DatasetSpec", "REGISTRY", "available_datasets", "load_dataset"]


@dataclass(frozen=True)
class DatasetSpec:
    """How to load one dataset and whether horizontal flips preserve its labels."""

    loader: Callable[[DataSettings], RawDataset]
    hflip: bool  # False where mirroring changes meaning (digits) or is unknown (user data)


REGISTRY: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec(load_cifar10, hflip=True),
    "cifar100": DatasetSpec(load_cifar100, hflip=True),
    "svhn": DatasetSpec(load_svhn, hflip=False),
    "fashion_mnist": DatasetSpec(load_fashion_mnist, hflip=True),
    "digits": DatasetSpec(load_digits, hflip=False),
    "synthetic": DatasetSpec(load_synthetic, hflip=False),
    "image_folder": DatasetSpec(load_image_folder, hflip=False),
    "npz": DatasetSpec(load_npz, hflip=False),
}


def available_datasets() -> list[str]:
    """Names accepted by ``dataset.name``, sorted."""
    return sorted(REGISTRY)


def load_dataset(cfg: Mapping[str, Any]) -> DataSplits:
    """Load, split, reshape and describe the dataset named by ``cfg['name']``.

    ``cfg`` is the ``dataset`` config group as a plain mapping (an OmegaConf
    DictConfig is converted). Raises :class:`DatasetError` with a one-line,
    actionable message for any config or file problem.
    """
    options = parse_config(cfg, available_datasets())
    spec = REGISTRY[options.name]
    return build_splits(options.name, spec.loader(options), options, spec.hflip)
