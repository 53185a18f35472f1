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


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary sibling and rename: readers see the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


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


class EvaluationArchive:
    """The run's durable record: one SQLite row per finished evaluation, committed before the next starts.

    WAL mode with full sync means a SIGKILL (or power loss) loses at most the
    evaluation in flight. Rows are keyed by candidate key and never replaced:
    a candidate evaluated twice is a bug that must fail loudly, not be hidden.
    """

    def __init__(self, path: Path):
        import sqlite3

        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("CREATE TABLE IF NOT EXISTS evaluations ("
                         "id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT UNIQUE NOT NULL, data TEXT NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def add(self, candidate_key: str, data: Mapping[str, Any]) -> None:
        import json

        self._db.execute("INSERT INTO evaluations (key, data) VALUES (?, ?)", (candidate_key, json.dumps(data)))

    def rows(self) -> list[dict[str, Any]]:
        import json

        return [json.loads(d) for (d,) in self._db.execute("SELECT data FROM evaluations ORDER BY id")]

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])

    def get_meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, name: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    def close(self) -> None:
        self._db.close()
