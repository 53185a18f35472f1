"""Run-directory tables: an append-only CSV log and atomic whole-file writes.

Each appended row is one finished evaluation, flushed before the next starts,
so a killed run leaves only complete rows. Whole tables (pareto.csv) are
written to a temporary file and renamed, so no half-written result appears.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterable, Mapping


class CsvLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._columns: list[str] | None = None
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open(newline="") as f:
                self._columns = next(csv.reader(f))

    def append(self, row: Mapping[str, Any]) -> None:
        new = self._columns is None
        if new:
            self._columns = list(row)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns, extrasaction="raise")
            if new:
                writer.writeheader()
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())


def write_csv_atomic(path: Path, rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> None:
    rows = list(rows)
    path = Path(path)
    if columns is None:
        columns = list(rows[0]) if rows else []
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)
