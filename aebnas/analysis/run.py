"""Read a finished (or running) search's run directory into pandas objects.

Reads files only and never imports torch, so notebooks and report scripts work
on machines without the training stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

LIST_COLUMNS = ("exit_stages", "thresholds", "path_macs", "exit_rates", "exit_accuracies", "head_accuracies",
                "constraints", "test_exit_rates", "path_latency_ms")


@dataclass
class Run:
    path: Path
    config: dict[str, Any]
    evaluations: pd.DataFrame
    pareto: pd.DataFrame
    generations: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    def model_dir(self, index: int) -> Path:
        """Directory of the ``index``-th Pareto network (weights, genome.json, metrics.json)."""
        return self.path / str(self.pareto.iloc[index]["model_dir"])


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    df = pd.read_csv(path)
    for col in LIST_COLUMNS:
        if col in df.columns:
            df[col] = df[col].map(lambda v: json.loads(v) if isinstance(v, str) else v)
    return df


def load_run(path: str | Path) -> Run:
    """Load ``config.yaml``, ``evaluations.csv``, ``pareto.csv``, ``generations.csv`` and ``summary.json``."""
    path = Path(path)
    if not (path / "evaluations.csv").exists():
        raise FileNotFoundError(f"run dir: no evaluations.csv in '{path}'; pass the directory a search wrote")
    config = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").exists() else {}
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").exists() else {}
    return Run(path=path, config=config or {}, evaluations=_read_table(path / "evaluations.csv"),
               pareto=_read_table(path / "pareto.csv"), generations=_read_table(path / "generations.csv"),
               summary=summary)
