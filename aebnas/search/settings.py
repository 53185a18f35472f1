"""Search settings (the Hydra ``search`` group), validated before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from aebnas.search.thresholds import METRICS
from aebnas.validation import ConfigError, check_bool, check_int, check_number, reject_unknown_keys

OBJECTIVES = ("avg_macs", "avg_latency", "aebnas")
# Older names still accepted in configs and saved runs.
OBJECTIVE_ALIASES = {"error_macs": "avg_macs"}
# nsga2: the evolutionary search; random: uniform genomes, the same budget (pop_size x generations);
# manual: the space's middle backbone with every exit on, one global threshold per candidate (conf/method/manual.yaml);
# msunas: surrogate-assisted search, a few networks trained per iteration, predictors score the rest (conf/search/msunas.yaml).
ALGORITHMS = ("nsga2", "random", "manual", "msunas")
# Surrogate models of search.predictor (aebnas.search.predictors); adaptive picks one per iteration and objective.
PREDICTORS = ("mlp", "rbf", "gp", "trees", "adaptive")
# How msunas predicts expected cost: from predicted exit rates and the analytic path costs, or the cost itself.
COST_MODELS = ("exit_rates", "direct")


class SearchConfigError(ConfigError):
    """A search setting is invalid; the message names the field and the fix."""


@dataclass(frozen=True)
class SearchSettings:
    """NSGA-II budget, objectives and exit handling (field meanings in conf/search/nsga2.yaml)."""

    pop_size: int = 40
    generations: int = 9
    objective: str = "avg_macs"
    target_macs: float | None = None
    mape_weight: float = 0.1
    max_expected_macs: float | None = None
    max_expected_latency_ms: float | None = None
    exit_metric: str = "margin"
    threshold_tuning: bool = False
    max_accuracy_drop: float = 0.01
    crossover_prob: float = 0.9
    gene_mutation_prob: float | None = None
    save_models: bool = True
    initial_genomes: tuple[str, ...] = ()
    algorithm: str = "nsga2"
    final_epochs: int = 0
    # msunas only (conf/search/msunas.yaml)
    n_doe: int | None = None
    per_iteration: int = 8
    max_evaluations: int | None = None
    inner_pop_size: int = 40
    inner_generations: int = 20
    predictor: str = "adaptive"
    cost_model: str = "exit_rates"

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "SearchSettings":
        """Validate types, ranges and combinations before any work starts."""
        reject_unknown_keys(cfg, (f.name for f in fields(cls)), "search", SearchConfigError)
        cfg = dict(cfg)
        initial = cfg.get("initial_genomes") or ()
        if isinstance(initial, str):
            initial = (initial,)
        if not isinstance(initial, (list, tuple)):
            raise SearchConfigError(f"search.initial_genomes: expected a list of genome texts, got {initial!r}")
        cfg["initial_genomes"] = tuple(str(g) for g in initial)
        if isinstance(cfg.get("objective"), str):
            cfg["objective"] = OBJECTIVE_ALIASES.get(cfg["objective"], cfg["objective"])
        s = cls(**cfg)
        if isinstance(s.pop_size, bool) or not isinstance(s.pop_size, int) or s.pop_size < 2:
            raise SearchConfigError(f"search.pop_size: must be an integer >= 2 (NSGA-II needs parents to mate), got {s.pop_size!r}")
        check_int(s.generations, "search.generations", lo=1, error=SearchConfigError)
        if s.objective not in OBJECTIVES:
            raise SearchConfigError(f"search.objective: '{s.objective}' is not one of {list(OBJECTIVES)}")
        if s.target_macs is not None:
            check_number(s.target_macs, "search.target_macs", lo=0, lo_open=True, error=SearchConfigError)
        if s.objective == "aebnas" and s.target_macs is None:
            raise SearchConfigError("search.target_macs: the 'aebnas' objective needs a positive target, e.g. search.target_macs=5e6")
        check_number(s.mape_weight, "search.mape_weight", lo=0, error=SearchConfigError)
        if s.max_expected_macs is not None:
            check_number(s.max_expected_macs, "search.max_expected_macs", lo=0, lo_open=True, error=SearchConfigError)
        if s.max_expected_latency_ms is not None:
            check_number(s.max_expected_latency_ms, "search.max_expected_latency_ms", lo=0, lo_open=True,
                         error=SearchConfigError)
        if s.exit_metric not in METRICS:
            raise SearchConfigError(f"search.exit_metric: '{s.exit_metric}' is not one of {list(METRICS)}")
        check_bool(s.threshold_tuning, "search.threshold_tuning", error=SearchConfigError)
        check_number(s.max_accuracy_drop, "search.max_accuracy_drop", lo=0, hi=1, error=SearchConfigError)
        check_number(s.crossover_prob, "search.crossover_prob", lo=0, hi=1, error=SearchConfigError)
        if s.gene_mutation_prob is not None:
            check_number(s.gene_mutation_prob, "search.gene_mutation_prob", lo=0, hi=1, lo_open=True,
                         error=SearchConfigError)
        if s.algorithm not in ALGORITHMS:
            raise SearchConfigError(f"search.algorithm: '{s.algorithm}' is not one of {list(ALGORITHMS)}")
        check_bool(s.save_models, "search.save_models", error=SearchConfigError)
        check_int(s.final_epochs, "search.final_epochs", lo=0, error=SearchConfigError)
        if s.n_doe is not None:
            check_int(s.n_doe, "search.n_doe", lo=2, error=SearchConfigError)
        check_int(s.per_iteration, "search.per_iteration", lo=1, error=SearchConfigError)
        check_int(s.inner_pop_size, "search.inner_pop_size", lo=2, error=SearchConfigError)
        check_int(s.inner_generations, "search.inner_generations", lo=1, error=SearchConfigError)
        if s.max_evaluations is not None:
            check_int(s.max_evaluations, "search.max_evaluations", lo=2, error=SearchConfigError)
        if s.predictor not in PREDICTORS:
            raise SearchConfigError(f"search.predictor: '{s.predictor}' is not one of {list(PREDICTORS)}")
        if s.cost_model not in COST_MODELS:
            raise SearchConfigError(f"search.cost_model: '{s.cost_model}' is not one of {list(COST_MODELS)}")
        if s.algorithm == "msunas":
            if s.budget < 2:
                raise SearchConfigError(f"search.max_evaluations: a budget of {s.budget} evaluations leaves no "
                                        "room for the 2 sampled networks a predictor needs; raise it")
            if s.doe_size > s.budget:
                raise SearchConfigError(f"search.n_doe: {s.n_doe} sampled networks do not fit the budget of "
                                        f"{s.budget} evaluations (search.max_evaluations, or search.pop_size x "
                                        "search.generations when it is null); lower n_doe or raise the budget")
            if s.per_iteration > s.inner_pop_size:
                raise SearchConfigError(f"search.per_iteration: {s.per_iteration} is more than the inner "
                                        f"population (search.inner_pop_size={s.inner_pop_size}) it is chosen from; "
                                        "lower per_iteration or raise inner_pop_size")
        if len(s.initial_genomes) > s.pop_size:
            raise SearchConfigError(f"search.initial_genomes: {len(s.initial_genomes)} genomes do not fit a population of {s.pop_size}")
        return s

    @property
    def budget(self) -> int:
        """Candidates a search evaluates: msunas's max_evaluations, else NSGA-II's pop_size x generations
        (msunas's default, so the two compare at an equal number of trained networks)."""
        if self.algorithm == "msunas" and self.max_evaluations is not None:
            return self.max_evaluations
        return self.pop_size * self.generations

    @property
    def doe_size(self) -> int:
        """msunas's sampled first networks: n_doe, or when null a third of the budget up to MSuNAS's 100."""
        return self.n_doe if self.n_doe is not None else max(2, min(100, self.budget // 3))

    @property
    def needs_latency(self) -> bool:
        """True when the search cannot run without a latency table (``hardware=<name>``)."""
        return self.objective == "avg_latency" or self.max_expected_latency_ms is not None

    @property
    def cost_column(self) -> str:
        """The expected cost the second objective is about: expected_macs or expected_latency_ms."""
        return "expected_latency_ms" if self.objective == "avg_latency" else "expected_macs"
