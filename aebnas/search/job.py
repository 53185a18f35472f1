"""What one search is asked to do: the inputs ``run_search`` needs, gathered in one value."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aebnas.cost.latency import LatencyTable
from aebnas.data import DataSplits
from aebnas.search.settings import SearchSettings
from aebnas.space import SearchSpace
from aebnas.train import TrainerSettings
from aebnas.train.supernet import SupernetSettings


@dataclass
class SearchJob:
    """A search's inputs: what to search (space, data, training, search settings) and how to run it.

    ``config_record`` (the resolved config) is stored with the archive and a
    resume under another config is refused; ``latency_table`` prices every
    candidate in milliseconds on that device (needed by ``avg_latency`` and
    latency budgets); ``method`` (conf/method/) is recorded in summary.json;
    ``workers`` > 1 trains candidates side by side in worker processes.
    """

    space: SearchSpace
    data: DataSplits
    trainer: TrainerSettings
    settings: SearchSettings
    device: torch.device
    run_dir: Path
    seed: int = 0
    progress: bool = True
    resume: bool = False
    config_record: dict[str, Any] | None = None
    latency_table: LatencyTable | None = None
    method: str | None = None
    supernet: SupernetSettings | None = None
    workers: int = 1

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
