"""Turn the user's ``dataset`` config mapping into validated, typed options.

Validation happens once, up front, so loaders can trust their inputs and every
mistake is reported as a one-line :class:`DatasetError` naming the field.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar

from aebnas.config_checks import Settings, parse_settings, reject_unknown_keys, setting, to_plain

from .errors import DatasetError

__all__ = ["DataSettings", "parse_config", "KNOWN_KEYS", "DATASET_SPECIFIC_KEYS"]

#: Keys that only some datasets read; setting them elsewhere triggers a warning.
DATASET_SPECIFIC_KEYS: dict[str, tuple[str, ...]] = {
    "num_classes": ("synthetic",),
    "num_samples": ("synthetic",),
    "seed": ("synthetic",),
    "path": ("npz",),
}


def _check_size(value: Any, name: str, error: type[Exception]) -> int | float:
    """A split size: a positive integer count or a fraction strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{name}: expected a count (e.g. 5000) or a fraction in (0, 1) (e.g. 0.1), got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise error(f"{name}: a count must be >= 1, got {value}")
        return value
    if not 0.0 < value < 1.0:
        raise error(f"{name}: a fraction must be strictly between 0 and 1, got {value}")
    return float(value)


def _check_path(value: Any, name: str, error: type[Exception]) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise error(f"{name}: expected a path string, got {value!r}")
    return os.path.abspath(os.path.expanduser(os.fspath(value)))


def _check_channels(value: Any, name: str, error: type[Exception]) -> int:
    if isinstance(value, bool) or value not in (1, 3):
        raise error(f"{name}: must be 1 (grayscale), 3 (RGB) or null, got {value!r}")
    return value


@dataclass(frozen=True)
class DataSettings(Settings):
    """Validated dataset options (the Hydra ``dataset`` group); ``null`` means "use the dataset's own value"."""

    section: ClassVar[str] = "dataset"
    error: ClassVar[type[Exception]] = DatasetError

    name: str = setting(allowed="a registered dataset name", check=lambda v, n, e: v,
                        help="Which dataset: digits, synthetic, fashion_mnist, cifar10, cifar100, svhn, image_folder "
                             "or npz.")
    data_dir: str = setting("./data", check=_check_path, allowed="a path",
                            help="Where the dataset's files are (relative paths from the working directory).")
    download: bool = setting(False, help="Download the files when missing (torchvision datasets).")
    val_size: int | float = setting(0.1, check=_check_size, allowed="a count >= 1 or a fraction in (0, 1)",
                                    help="Validation split carved from train, which ranks candidates.")
    test_size: int | float = setting(0.2, check=_check_size, allowed="a count >= 1 or a fraction in (0, 1)",
                                     help="Test split carved from the data when the dataset has no test split of "
                                          "its own.")
    split_seed: int = setting(0, lo=0, help="Seed of the val/test split.")
    resolution: int | None = setting(None, lo=1, help="Image side the network sees (null: the dataset's own).")
    pad_to_resolution: bool = setting(False, help="Zero-pad up to `resolution` instead of resizing.")
    channels: int | None = setting(None, check=_check_channels, allowed="1 | 3 | null",
                                   help="1 (grayscale) or 3 (RGB) input channels (null: the dataset's own).")
    max_train_samples: int | None = setting(None, lo=1, help="Cap on training images (null: all).")
    hflip: bool | None = setting(None, help="Random horizontal flips in training (null: the dataset's own choice).")
    num_classes: int | None = setting(None, lo=2, help="synthetic only: number of classes.")
    num_samples: int | None = setting(None, lo=1, help="synthetic only: number of images.")
    seed: int | None = setting(None, lo=0, help="synthetic only: seed of the generated images.")
    path: str | None = setting(None, check=_check_path, allowed="a path or null",
                               help="npz only: the .npz holding x_train, y_train, x_test, y_test.")


#: Every key a ``dataset`` config may contain.
KNOWN_KEYS: tuple[str, ...] = tuple(f.name for f in fields(DataSettings))


def parse_config(cfg: Any, available: list[str]) -> DataSettings:
    """Validate ``cfg`` (a mapping or DictConfig) against the registered dataset names.

    Missing keys and explicit ``null`` both mean "default", so a user's config may list
    every key with ``null`` and override any of them.
    """
    cfg = to_plain(cfg, "dataset", DatasetError)
    name = cfg.get("name")
    if not isinstance(name, str) or not name:
        raise DatasetError(f"dataset.name: required; choose one of: {', '.join(available)}")
    name = name.strip().lower()
    if name not in available:
        raise DatasetError(
            f"dataset.name: unknown dataset {cfg.get('name')!r}; choose one of: {', '.join(available)}"
        )
    reject_unknown_keys(cfg, KNOWN_KEYS, "dataset", DatasetError)  # most likely typos
    for key, users in DATASET_SPECIFIC_KEYS.items():
        if cfg.get(key) is not None and name not in users:
            warnings.warn(
                f"dataset.{key}: only used by {', '.join(users)}; ignored for {name}", stacklevel=3
            )
    options = parse_settings(DataSettings, {k: v for k, v in cfg.items() if v is not None})
    return replace(options, name=name, data_dir=_check_path(options.data_dir, "dataset.data_dir", DatasetError))
