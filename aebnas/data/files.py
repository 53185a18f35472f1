"""Shared helpers for locating dataset files and turning I/O failures into DatasetError."""

from __future__ import annotations

import os
from typing import Callable

from .errors import DatasetError

__all__ = ["missing_files", "download_with", "not_found"]


def missing_files(folder: str, names: list[str]) -> list[str]:
    """The subset of ``names`` that are not regular files inside ``folder``."""
    return [n for n in names if not os.path.isfile(os.path.join(folder, n))]


def not_found(title: str, data_dir: str, expected: str) -> DatasetError:
    """The standard "files are missing, here is how to get them" error."""
    where = f"'{data_dir}'" if os.path.isdir(data_dir) else f"'{data_dir}' (the directory does not exist)"
    return DatasetError(
        f"dataset.data_dir: {title} not found under {where} (expected {expected}). "
        "Put the files there or set dataset.download=true on a machine with internet."
    )


def download_with(title: str, data_dir: str, fetch: Callable[[], object]) -> None:
    """Run a torchvision download, reporting any failure (offline, bad checksum) in one line."""
    try:
        os.makedirs(data_dir, exist_ok=True)
        fetch()
    except Exception as exc:  # noqa: BLE001 - any failure here means "could not download"
        raise DatasetError(
            f"dataset.download: downloading {title} into '{data_dir}' failed "
            f"({type(exc).__name__}: {exc}). Check the internet connection, or put the files "
            "there yourself and set dataset.download=false."
        ) from exc
