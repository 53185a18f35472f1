"""Search settings (the Hydra ``search`` group), validated before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from aebnas.search.thresholds import METRICS
from aebnas.validation import reject_unknown_keys

OBJECTIVES = ("error_macs", "aebnas")


class SearchConfigError(ValueError):
    """A search setting is invalid; the message names the field and the fix."""


@dataclass(frozen=True)
class SearchSettings:
    pop_size: int = 40
    generations: int = 10
    objective: str = "error_macs"
    target_macs: float | None = None
    mape_weight: float = 0.1
    max_expected_macs: float | None = None
    exit_metric: str = "margin"
    threshold_tuning: bool = False
    max_accuracy_drop: float = 0.01
    crossover_prob: float = 0.9
    gene_mutation_prob: float | None = None
    save_models: bool = True
    initial_genomes: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "SearchSettings":
        reject_unknown_keys(cfg, (f.name for f in fields(cls)), "search", SearchConfigError)
        cfg = dict(cfg)
        initial = cfg.get("initial_genomes") or ()
        if isinstance(initial, str):
            initial = (initial,)
        cfg["initial_genomes"] = tuple(str(g) for g in initial)
        s = cls(**cfg)
        if not isinstance(s.pop_size, int) or isinstance(s.pop_size, bool) or s.pop_size < 2:
            raise SearchConfigError(f"search.pop_size: must be an integer >= 2 (NSGA-II needs parents to mate), got {s.pop_size!r}")
        if not isinstance(s.generations, int) or s.generations < 1:
            raise SearchConfigError(f"search.generations: must be an integer >= 1, got {s.generations!r}")
        if s.objective not in OBJECTIVES:
            raise SearchConfigError(f"search.objective: '{s.objective}' is not one of {list(OBJECTIVES)}")
        if s.objective == "aebnas" and not (s.target_macs and s.target_macs > 0):
            raise SearchConfigError("search.target_macs: the 'aebnas' objective needs a positive target, e.g. search.target_macs=5e6")
        if s.max_expected_macs is not None and not s.max_expected_macs > 0:
            raise SearchConfigError(f"search.max_expected_macs: must be > 0 or null, got {s.max_expected_macs!r}")
        if s.exit_metric not in METRICS:
            raise SearchConfigError(f"search.exit_metric: '{s.exit_metric}' is not one of {list(METRICS)}")
        if not 0.0 <= s.max_accuracy_drop <= 1.0:
            raise SearchConfigError(f"search.max_accuracy_drop: must be in [0, 1], got {s.max_accuracy_drop!r}")
        if not 0.0 <= s.crossover_prob <= 1.0:
            raise SearchConfigError(f"search.crossover_prob: must be in [0, 1], got {s.crossover_prob!r}")
        if s.gene_mutation_prob is not None and not 0.0 < s.gene_mutation_prob <= 1.0:
            raise SearchConfigError(f"search.gene_mutation_prob: must be in (0, 1] or null, got {s.gene_mutation_prob!r}")
        if len(s.initial_genomes) > s.pop_size:
            raise SearchConfigError(f"search.initial_genomes: {len(s.initial_genomes)} genomes do not fit a population of {s.pop_size}")
        return s
