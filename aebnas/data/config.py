"""Turn the user's ``dataset`` config mapping into validated, typed options.

Validation happens once, up front, so loaders can trust their inputs and every
mistake is reported as a one-line :class:`DatasetError` naming the field.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

from aebnas.config_checks import reject_unknown_keys

from .errors import DatasetError

__all__ = ["DataSettings", "parse_config", "KNOWN_KEYS", "DATASET_SPECIFIC_KEYS"]

#: Keys that only some datasets read; setting them elsewhere triggers a warning.
DATASET_SPECIFIC_KEYS: dict[str, tuple[str, ...]] = {
    "num_classes": ("synthetic",),
    "num_samples": ("synthetic",),
    "seed": ("synthetic",),
    "path": ("npz",),
}

#: Every key a ``dataset`` config may contain (each conf/dataset/*.yaml lists all of them).
KNOWN_KEYS: tuple[str, ...] = (
    "name",
    "data_dir",
    "download",
    "val_size",
    "test_size",
    "split_seed",
    "resolution",
    "pad_to_resolution",
    "channels",
    "max_train_samples",
    "hflip",
    *DATASET_SPECIFIC_KEYS,
)


@dataclass(frozen=True)
class DataSettings:
    """Validated dataset options; ``None`` means "use the dataset's own value"."""

    name: str
    data_dir: str
    download: bool
    val_size: int | float
    test_size: int | float
    split_seed: int
    resolution: int | None
    pad_to_resolution: bool
    channels: int | None
    max_train_samples: int | None
    hflip: bool | None
    num_classes: int | None
    num_samples: int | None
    seed: int | None
    path: str | None


def _to_plain_mapping(cfg: Any) -> Mapping[str, Any]:
    """Accept an OmegaConf ``DictConfig`` as well as a plain mapping."""
    try:  # omegaconf is optional for this package; only convert if it is present.
        from omegaconf import DictConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with hydra-core
        DictConfig = None  # type: ignore[assignment]
    if DictConfig is not None and isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise DatasetError(
            f"dataset: expected a mapping of dataset options, got {type(cfg).__name__}; "
            "pass e.g. {'name': 'digits'}"
        )
    return cfg


def _get_bool(cfg: Mapping[str, Any], key: str, default: bool | None) -> bool | None:
    value = cfg.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise DatasetError(f"dataset.{key}: expected true or false, got {value!r}")
    return value


def _get_int(cfg: Mapping[str, Any], key: str, default: int | None, minimum: int) -> int | None:
    value = cfg.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise DatasetError(f"dataset.{key}: expected an integer, got {value!r}")
    if value < minimum:
        raise DatasetError(f"dataset.{key}: must be >= {minimum}, got {value}")
    return value


def _get_size(cfg: Mapping[str, Any], key: str, default: float) -> int | float:
    """A split size: a positive integer count or a fraction strictly between 0 and 1."""
    value = cfg.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DatasetError(
            f"dataset.{key}: expected a count (e.g. 5000) or a fraction in (0, 1) (e.g. 0.1), got {value!r}"
        )
    if isinstance(value, int):
        if value < 1:
            raise DatasetError(f"dataset.{key}: a count must be >= 1, got {value}")
        return value
    if not 0.0 < value < 1.0:
        raise DatasetError(f"dataset.{key}: a fraction must be strictly between 0 and 1, got {value}")
    return float(value)


def _get_str(cfg: Mapping[str, Any], key: str, default: str | None) -> str | None:
    value = cfg.get(key)
    if value is None:
        return default
    if not isinstance(value, (str, os.PathLike)):
        raise DatasetError(f"dataset.{key}: expected a path string, got {value!r}")
    return os.path.abspath(os.path.expanduser(os.fspath(value)))


def parse_config(cfg: Any, available: list[str]) -> DataSettings:
    """Validate ``cfg`` (a mapping or DictConfig) against the registered dataset names.

    Missing keys and explicit ``null`` both mean "default", so the Hydra conf
    files can list every key with ``null`` and users can override any of them.
    """
    cfg = _to_plain_mapping(cfg)
    name = cfg.get("name")
    if not isinstance(name, str) or not name:
        raise DatasetError(f"dataset.name: required; choose one of: {', '.join(available)}")
    name = name.strip().lower()
    if name not in available:
        raise DatasetError(
            f"dataset.name: unknown dataset {cfg.get('name')!r}; choose one of: {', '.join(available)}"
        )

    # Unknown keys are most likely typos: refuse them like every other config section.
    reject_unknown_keys(cfg, KNOWN_KEYS, "dataset", DatasetError)
    for key, users in DATASET_SPECIFIC_KEYS.items():
        if cfg.get(key) is not None and name not in users:
            warnings.warn(
                f"dataset.{key}: only used by {', '.join(users)}; ignored for {name}", stacklevel=3
            )

    channels = _get_int(cfg, "channels", None, 1)
    if channels is not None and channels not in (1, 3):
        raise DatasetError(f"dataset.channels: must be 1 (grayscale), 3 (RGB) or null, got {channels}")

    return DataSettings(
        name=name,
        data_dir=_get_str(cfg, "data_dir", os.path.abspath("./data")),  # type: ignore[arg-type]
        download=bool(_get_bool(cfg, "download", False)),
        val_size=_get_size(cfg, "val_size", 0.1),
        test_size=_get_size(cfg, "test_size", 0.2),
        split_seed=_get_int(cfg, "split_seed", 0, 0),  # type: ignore[arg-type]
        resolution=_get_int(cfg, "resolution", None, 1),
        pad_to_resolution=bool(_get_bool(cfg, "pad_to_resolution", False)),
        channels=channels,
        max_train_samples=_get_int(cfg, "max_train_samples", None, 1),
        hflip=_get_bool(cfg, "hflip", None),
        num_classes=_get_int(cfg, "num_classes", None, 2),
        num_samples=_get_int(cfg, "num_samples", None, 1),
        seed=_get_int(cfg, "seed", None, 0),
        path=_get_str(cfg, "path", None),
    )
