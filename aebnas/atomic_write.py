"""Writing a file so that readers see the old one or the new one, never half of it.

Run directories are read while they are written (resume, ``aebnas-report`` on a
live sweep, parallel jobs sharing a supernet cache), so every file the package
writes goes through here: write a temporary sibling, then rename it over the
target (a rename within one folder is atomic). Torch-free, so every room can use it.
"""

from __future__ import annotations

import csv
import os
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping


@contextmanager
def atomic_path(path: str | Path, keep_name: bool = False) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; it replaces ``path`` when the block ends without error
    and is removed otherwise.

    The temporary file keeps the suffix (matplotlib and torch read the format from
    it) and its name is unique per process and call (worker processes may write
    the same target at once). ``keep_name``: it is in a temporary folder under
    ``path``'s very name, for writers that record the file name inside the file
    (``torch.export.save``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if keep_name:
        with tempfile.TemporaryDirectory(prefix=".tmp-", dir=path.parent) as tmp_dir:
            tmp = Path(tmp_dir) / path.name
            yield tmp
            tmp.replace(path)
        return
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv_atomic(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> None:
    """Rows as a CSV with a header (``columns``, or the first row's keys)."""
    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
