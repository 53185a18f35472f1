"""Search settings (the Hydra ``search`` group), validated before any work starts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, MutableMapping

from aebnas.config_checks import ConfigError, Settings, parse_settings, setting, to_plain
from aebnas.exits import METRICS

log = logging.getLogger("aebnas")

# avg_macs: (val error, E[MACs]); avg_latency: (val error, E[latency ms]) from hardware=<name>'s table;
# macs_target: (val error + mape_weight * MAPE, MAPE) with MAPE = |E[MACs] - target_macs| / target_macs.
OBJECTIVES = ("avg_macs", "avg_latency", "macs_target")
# Older names, still read (configs and saved runs) with a one-line warning naming the new one.
RENAMED_OBJECTIVES = {"error_macs": "avg_macs", "aebnas": "macs_target"}
# nsga2: the evolutionary search; random: uniform genomes, the same budget (pop_size x generations);
# manual: the space's middle backbone with every exit on, one global threshold per candidate (conf/method/manual.yaml);
# msunas: surrogate-assisted search, a few networks trained per iteration, predictors score the rest (conf/search/msunas.yaml).
ALGORITHMS = ("nsga2", "random", "manual", "msunas")
# Surrogate models of search.predictor and search.cost_predictor (aebnas.search.predictors); adaptive picks one
# per iteration and objective.
PREDICTORS = ("mlp", "rbf", "gp", "trees", "adaptive")
# How msunas predicts expected cost: from predicted exit rates and the analytic path costs, or the cost itself.
COST_MODELS = ("exit_rates", "direct")
# msunas's picks per backbone under objective macs_target when search.max_per_backbone is null (SearchSettings.backbone_cap).
MACS_TARGET_BACKBONE_CAP = 2
# Search settings that the saved config of an older run lacks, with what such a run did: its cost model followed
# search.predictor, and its picks had no per-backbone cap. A resume reads the missing key as this, not as the
# schema's default, or its replayed iterations would pick other networks.
LEGACY_SEARCH_SETTINGS = {"cost_predictor": None, "max_per_backbone": 0}


def fill_legacy_search_settings(config: MutableMapping[str, Any]) -> None:
    """Fill into a saved run's config (its ``search`` section, where it has one) every key of
    LEGACY_SEARCH_SETTINGS it lacks."""
    search = config.get("search")
    if isinstance(search, MutableMapping):
        for key, then in LEGACY_SEARCH_SETTINGS.items():
            if key not in search:
                search[key] = then


class SearchConfigError(ConfigError):
    """A search setting is invalid; the message names the field and the fix."""


def _check_pop_size(value: Any, name: str, error: type[Exception]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise error(f"{name}: must be an integer >= 2 (NSGA-II needs parents to mate), got {value!r}")
    return value


def _check_genome_texts(value: Any, name: str, error: type[Exception]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)):
        raise error(f"{name}: expected a list of genome texts, got {value!r}")
    return tuple(str(g) for g in value)


@dataclass(frozen=True)
class SearchSettings(Settings):
    """NSGA-II budget, objectives and exit handling (the Hydra ``search`` group)."""

    section: ClassVar[str] = "search"
    error: ClassVar[type[Exception]] = SearchConfigError

    pop_size: int = setting(40, check=_check_pop_size, allowed="an integer >= 2",
                            help="Population size (candidates per generation).")
    generations: int = setting(9, lo=1, help="Generations; the budget is pop_size x generations candidates.")
    objective: str = setting("avg_macs", choices=OBJECTIVES,
                             help="avg_macs: (val error, E[MACs]); avg_latency: (val error, E[latency ms]) from "
                                  "hardware=<name>'s table; macs_target: (val error + mape_weight * MAPE, MAPE) with "
                                  "MAPE = abs(E[MACs] - target_macs) / target_macs.")
    target_macs: float | None = setting(None, lo=0, lo_open=True, help="The MACs target of objective=macs_target.")
    mape_weight: float = setting(0.1, lo=0, help="Weight of MAPE in macs_target's first objective.")
    max_expected_macs: float | None = setting(None, lo=0, lo_open=True,
                                              help="Hard constraint on expected MACs per image (null: none).")
    max_expected_latency_ms: float | None = setting(None, lo=0, lo_open=True,
                                                    help="Hard constraint on expected latency per image in ms "
                                                         "(needs hardware=<name>; null: none).")
    exit_metric: str = setting("margin", choices=METRICS,
                               help="Exit decision metric: max_softmax, margin (top-1 minus top-2) or entropy.")
    threshold_tuning: bool = setting(False, help="Tune each candidate's thresholds on val logits (grid over "
                                                 "space.thresholds): the cheapest vector within max_accuracy_drop "
                                                 "of the final exit.")
    max_accuracy_drop: float = setting(0.01, lo=0, hi=1, help="Accuracy a tuned threshold vector may lose against "
                                                              "the final exit.")
    crossover_prob: float = setting(0.9, lo=0, hi=1, help="Crossover probability.")
    gene_mutation_prob: float | None = setting(None, lo=0, hi=1, lo_open=True,
                                               help="Per-gene mutation probability; null = 1 / number of genes.")
    save_models: bool = setting(True, help="Save the Pareto networks (weights, genome.json, metrics.json) under "
                                           "models/.")
    initial_genomes: tuple[str, ...] = setting((), check=_check_genome_texts, allowed="a list of genome texts",
                                               help="Genome texts placed in the initial population (e.g. a known "
                                                    "network to improve on).")
    algorithm: str = setting("nsga2", choices=ALGORITHMS,
                             help="How candidates are proposed: nsga2, random (uniform genomes, the same budget), "
                                  "manual (one hand-designed network at each global threshold) or msunas (surrogate-"
                                  "assisted: a few networks trained per iteration, predictors score the rest); set by "
                                  "search= and method=.")
    final_epochs: int = setting(0, lo=0, help="Epochs each Pareto network trains after the search, before it is "
                                              "scored on test and saved (0: as the search evaluated it).")
    # search=msunas only (docs/concepts/surrogate-search.md)
    n_doe: int | None = setting(None, lo=2, help="msunas: networks sampled (Latin hypercube over the genes) and trained "
                                                 "before any predictor is fitted; null: a third of the budget, at most "
                                                 "100.")
    per_iteration: int = setting(8, lo=1, help="msunas: networks trained per iteration, spread along the inner "
                                               "search's predicted front (at most inner_pop_size).")
    max_evaluations: int | None = setting(None, lo=2, help="msunas: candidates evaluated in all, sampling included; "
                                                           "null: pop_size x generations (NSGA-II's budget).")
    max_per_backbone: int | None = setting(None, lo=0, help="msunas: at most this many of one iteration's picks "
                                                          "share a backbone; the rest come from other backbones "
                                                          "further down the predicted fronts; 0: no cap; null: "
                                                          "2 under objective macs_target, no cap otherwise.")
    inner_pop_size: int = setting(40, lo=2, help="msunas: population of the inner NSGA-II on predicted objectives.")
    inner_generations: int = setting(20, lo=1, help="msunas: generations of the inner NSGA-II per iteration.")
    predictor: str = setting("trees", choices=PREDICTORS,
                             help="msunas: the model of val error: mlp, rbf, gp, trees, or adaptive (per iteration, "
                                  "the model with the best cross-validated Kendall tau).")
    cost_predictor: str | None = setting("adaptive", choices=PREDICTORS,
                                         help="msunas: the model of expected cost (of the exit rates, or of log cost "
                                              "with cost_model=direct), same choices; null: search.predictor's.")
    cost_model: str = setting("exit_rates", choices=COST_MODELS,
                              help="msunas: exit_rates (predict the exit rates, price them with the analytic path "
                                   "costs) or direct (predict log expected cost).")

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "SearchSettings":
        """Validate types, ranges and combinations before any work starts; a renamed objective is read with a hint."""
        cfg = to_plain(cfg, cls.section, cls.error)
        given = cfg.get("objective")
        if isinstance(given, str) and given in RENAMED_OBJECTIVES:
            cfg["objective"] = RENAMED_OBJECTIVES[given]
            log.warning("search.objective: '%s' is now called '%s'; set search.objective=%s", given,
                        cfg["objective"], cfg["objective"])
        s = parse_settings(cls, cfg)
        if s.objective == "macs_target" and s.target_macs is None:
            raise SearchConfigError(f"search.target_macs: the '{given}' objective needs a positive target, "
                                    "e.g. search.target_macs=5e6")
        return s

    def check_together(self) -> None:
        if self.algorithm == "msunas":
            if self.doe_size > self.budget:
                raise SearchConfigError(f"search.n_doe: {self.n_doe} sampled networks do not fit the budget of "
                                        f"{self.budget} evaluations (search.max_evaluations, or search.pop_size x "
                                        "search.generations when it is null); lower n_doe or raise the budget")
            if self.per_iteration > self.inner_pop_size:
                raise SearchConfigError(f"search.per_iteration: {self.per_iteration} is more than the inner "
                                        f"population (search.inner_pop_size={self.inner_pop_size}) it is chosen "
                                        "from; lower per_iteration or raise inner_pop_size")
        if len(self.initial_genomes) > self.pop_size:
            raise SearchConfigError(f"search.initial_genomes: {len(self.initial_genomes)} genomes do not fit a "
                                    f"population of {self.pop_size}")

    @property
    def backbone_cap(self) -> int | None:
        """msunas's cap on one iteration's picks per backbone, None for none.

        Under macs_target the MAPE objective folds the threshold and pooling
        variants of one backbone onto nearly the same predicted point, and the
        uncapped picks crowd onto them, so the late budget trains few backbones;
        under the other objectives those variants spread along the cost axis and
        the measured cap cost hypervolume (docs/results/surrogate-search.md).
        """
        if self.max_per_backbone is None:
            return MACS_TARGET_BACKBONE_CAP if self.objective == "macs_target" else None
        return self.max_per_backbone or None

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


@dataclass(frozen=True)
class RunSettings(Settings):
    """How one ``aebnas-search`` run is carried out: the top level of conf/config.yaml, beside the groups.

    Only ``seed`` and ``run_name`` change what a run computes or where it lands; ``progress``,
    ``workers`` and ``resume`` change how it runs, so a resume may set them anew.
    """

    section: ClassVar[str] = "config"
    prefix: ClassVar[str | None] = ""  # top-level keys: errors name them bare (seed, workers)

    seed: int = setting(0, lo=0, help="Seeds the data split, the sampling, the search and every candidate's "
                                      "training: one seed, one archive (on the CPU, to the last digit).")
    run_name: str = setting("${dataset.name}", help="Label of the run; the run directory is "
                                                    "outputs/<run_name>/<timestamp>.")
    progress: bool = setting(True, help="Progress bar over candidates (tqdm); per-generation lines are printed "
                                        "either way, and a candidate still training after 30 s logs each epoch.")
    workers: int | None = setting(None, lo=1, help="Shorthand: N > 1 trains N candidates at once on a local Dask "
                                                   "cluster (executor=dask, executor.n_workers=N); 1 trains in the "
                                                   "search's process; null: the executor group decides.")
    resume: str | None = setting(None, help="Continue a killed search: the run directory it wrote. Its saved config "
                                            "is used; finished evaluations are replayed from archive.sqlite.")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "RunSettings":
        """The run settings out of a whole composed config (its groups are other schemas' business)."""
        return parse_settings(cls, {f: cfg[f] for f in cls.__dataclass_fields__ if f in cfg})
