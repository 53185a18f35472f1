"""The run directory's life: refuse to overwrite a search, pin its config, replay a killed one, log, summarise.

archive.sqlite is the durable record (one row per finished evaluation, keyed by
candidate key); evaluations.csv, generations.csv, checkpoint.json and
summary.json are views written from it and from the live search.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from aebnas.atomic_write import write_csv_atomic, write_text_atomic
from aebnas.search.archive import CsvLog, EvaluationArchive
from aebnas.search.evaluator import CandidateEvaluator, Evaluation
from aebnas.search.settings import fill_legacy_search_settings
from aebnas.config_checks import ConfigError

log = logging.getLogger("aebnas.search")

ARCHIVE_NAME = "archive.sqlite"


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
    return f"{path}: {a!r} then, {b!r} now"


class RunDirectory:
    """One search's folder, opened for a new search or for resuming one under the same config.

    Resuming replays the search from the start with the same seed: finished
    evaluations come from the archive instead of being trained again, and since
    pymoo's choices depend only on the seed and the objective values, the replay
    walks the same path and then carries on where the killed run stopped.
    """

    def __init__(self, path: Path, resume: bool, config_record: dict[str, Any] | None):
        self.path = Path(path)
        self.resume = resume
        archive_path = self.path / ARCHIVE_NAME
        if archive_path.exists() and not resume:
            raise FileExistsError(f"run dir: '{self.path}' already holds a search ({ARCHIVE_NAME}); "
                                  f"continue it with resume={self.path}, or choose a new hydra.run.dir")
        if resume and not archive_path.exists():
            raise FileNotFoundError(f"resume: no {ARCHIVE_NAME} in '{self.path}'; "
                                    "pass the directory of a search to continue")
        self.path.mkdir(parents=True, exist_ok=True)
        self.archive = EvaluationArchive(archive_path)
        self._pin_config(config_record or {})
        checkpoint = self.path / "checkpoint.json"
        # the killed run's last checkpoint: the witness the replay is compared against
        self._replay_checkpoint = json.loads(checkpoint.read_text()) if checkpoint.exists() else None
        self._generations: CsvLog | None = None
        self._predictions: CsvLog | None = None

    @property
    def weights_dir(self) -> Path:
        """Candidates' weights while the search runs (removed at the end; the answer's go to models/)."""
        return self.path / "candidates"

    def _pin_config(self, config_record: dict[str, Any]) -> None:
        """Store the config with a new archive; refuse to resume under another one."""
        fingerprint = json.dumps(config_record, sort_keys=True)
        stored = self.archive.get_meta("config")
        if stored is None:
            self.archive.set_meta("config", fingerprint)
            return
        then = json.loads(stored)
        fill_legacy_search_settings(then)  # as the resumed config reads an older run's
        if json.dumps(then, sort_keys=True) != fingerprint:
            raise ConfigError(f"resume: '{self.path}' was searched with another config "
                              f"({_first_difference(then, config_record)}); resume it unchanged")

    def replay_into(self, evaluator: CandidateEvaluator) -> None:
        """Hand the archive's finished evaluations to ``evaluator`` and record each new one as it finishes."""
        evaluator.preload([Evaluation.from_record(r) for r in self.archive.rows()])
        if self.resume:
            log.info("resuming %s: %d finished evaluations are replayed, not re-run", self.path, len(self.archive))
            for name in ("generations.csv", "predictions.csv"):
                (self.path / name).unlink(missing_ok=True)  # rebuilt identically by the replay

        def archive_fresh(ev: Evaluation, fresh: bool) -> None:
            if fresh:
                self.archive.add(evaluator.candidate_key_of(ev), ev.to_record())

        evaluator.on_evaluated.insert(0, archive_fresh)  # archived before anything reports it

    def log_generation(self, row: dict[str, Any]) -> None:
        """One line of generations.csv, and evaluations.csv rewritten from the archive."""
        if self._generations is None:
            self._generations = CsvLog(self.path / "generations.csv")
        self._generations.append(row)
        rows = [Evaluation.from_record(r).to_row() for r in self.archive.rows()]
        if rows:
            write_csv_atomic(self.path / "evaluations.csv", rows)

    def log_predictions(self, rows: list[dict[str, Any]]) -> None:
        """predictions.csv (surrogate searches): each trained network's predicted and measured objectives."""
        if self._predictions is None:
            self._predictions = CsvLog(self.path / "predictions.csv")
        for row in rows:
            self._predictions.append(row)

    def checkpoint(self, generation: int, population: list[str], objectives: list[list[float]],
                   rng_state: dict[str, Any] | None) -> None:
        """checkpoint.json: the population after this generation and the algorithm's RNG state.

        Resuming replays from the archive; the checkpoint is the witness that the
        replay reached the same population (a mismatch means training was not
        deterministic, e.g. on a GPU) and a readable snapshot of a live search.
        """
        state = {"generation": generation, "population": population, "objectives": objectives,
                 "rng_state": rng_state}
        before = self._replay_checkpoint
        if before and before.get("generation") == generation and before["population"] != population:
            log.warning("the resumed search reached another population at generation %d than the killed run "
                        "(training is not deterministic here); it carries on from the replayed one", generation)
        write_text_atomic(self.path / "checkpoint.json", json.dumps(state, default=int))

    def close(self, summary: dict[str, Any]) -> None:
        """summary.json written, the archive closed and the candidates' temporary weights removed."""
        self.archive.close()
        if self.weights_dir.exists():
            shutil.rmtree(self.weights_dir)
        write_text_atomic(self.path / "summary.json", json.dumps(summary, indent=2))
