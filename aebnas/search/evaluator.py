"""Candidate evaluation: genome -> trained network -> per-exit val predictions -> metrics.

Training is by far the costliest step, and thresholds do not change weights, so
trained networks are cached by ``Genome.network_key``: two genomes that differ
only in thresholds share one training run, and their exit behaviour is then
computed from the cached per-exit confidences without running the network.

Three identities, named apart throughout the search package:

- the genome text (``Genome.key``, ``Evaluation.key``): a network with its
  thresholds, as evaluated (tuned thresholds when tuning is on);
- the network key (``Genome.network_key``, ``Evaluation.network_key``): the
  architecture without thresholds, the unit that is trained (weights, seeds);
- the candidate key (``candidate_key``, ``candidate_key_of``): what counts as
  one candidate, the genome text, or the network key under threshold tuning
  (thresholds are then the evaluator's, not the genome's). Duplicates, the
  evaluation cache and archive.sqlite's rows are keyed by it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from aebnas.cost import expected_cost, network_cost
from aebnas.cost.latency import LatencyTable
from aebnas.data import DataSplits
from aebnas.nn.supernet import Supernet
from aebnas.search.objectives import constraint_values, objective_values
from aebnas.search.settings import SearchSettings
from aebnas.search.thresholds import simulate_exits, tune_thresholds
from aebnas.search.training import CandidateTraining, TrainedNetwork
from aebnas.search.workers import CandidatePool
from aebnas.space import Genome
from aebnas.train import TrainerSettings

log = logging.getLogger("aebnas.search")


LIST_FIELDS = ("exit_stages", "thresholds", "path_macs", "exit_rates", "exit_accuracies", "head_accuracies",
               "constraints", "path_latency_ms")


@dataclass
class Evaluation:
    """One evaluated candidate; ``to_row`` gives its line in evaluations.csv."""

    key: str  # the genome text as evaluated (thresholds included)
    network_key: str  # the architecture alone: one training run
    generation: int
    val_accuracy: float
    expected_macs: float
    static_macs: int
    total_macs: int
    params: int
    n_exits: int
    exit_stages: list[int]
    thresholds: list[float]
    path_macs: list[int]
    exit_rates: list[float]
    exit_accuracies: list[float]
    head_accuracies: list[float]
    static_val_accuracy: float
    train_seconds: float
    eval_seconds: float
    objectives: list[float] = field(default_factory=list)
    constraints: list[float] = field(default_factory=list)
    model_file: str | None = None
    status: str = "ok"
    error: str = ""
    path_latency_ms: list[float] = field(default_factory=list)   # empty without a latency table
    expected_latency_ms: float | None = None
    static_latency_ms: float | None = None
    tune_seconds: float = 0.0      # threshold tuning (from cached val confidences)

    @property
    def feasible(self) -> bool:
        return self.status == "ok" and all(g <= 0 for g in self.constraints)

    def to_record(self) -> dict[str, Any]:
        """Everything, losslessly (floats keep full precision in JSON), for the durable archive."""
        return asdict(self)

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> "Evaluation":
        return cls(**data)

    def to_row(self) -> dict[str, Any]:
        """The candidate's evaluations.csv line; list fields as JSON, weights' temp path left out."""
        row = asdict(self)
        row.pop("model_file")
        for name in LIST_FIELDS:
            row[name] = json.dumps([None if isinstance(v, float) and math.isnan(v) else v for v in row[name]])
        objectives = row.pop("objectives")
        for i, v in enumerate(objectives):
            row[f"objective_{i}"] = v
        row["feasible"] = self.feasible
        return row


class CandidateEvaluator:
    """Scores genomes: trains each distinct network once, then derives exit behaviour from cached predictions.

    With threshold tuning on, candidates are identified by their network alone
    (threshold genes are overwritten by the tuned values), so genomes differing
    only in threshold genes are one candidate.
    """

    def __init__(self, data: DataSplits, trainer: TrainerSettings, settings: SearchSettings, device: torch.device,
                 seed: int = 0, model_dir: Path | None = None, latency_table: LatencyTable | None = None,
                 supernet: Supernet | None = None):
        if (trainer.init == "supernet") != (supernet is not None):
            raise ValueError(f"CandidateEvaluator: trainer.init={trainer.init} but "
                             f"{'no supernet was' if supernet is None else 'a supernet was'} given")
        self.data = data
        self.latency_table = latency_table
        self.settings = settings
        # trainer, device, seed, weights folder and supernet live here, the one copy training reads
        self.training = CandidateTraining(data, trainer, settings.exit_metric, device, seed, model_dir, supernet)
        # Worker processes training candidates side by side (set by the runner for workers > 1); None: in-process.
        self.pool: CandidatePool | None = None
        self._pending: dict[str, Future[TrainedNetwork]] = {}  # network key -> training under way in the pool
        self.evaluations: list[Evaluation] = []
        self._by_candidate_key: dict[str, Evaluation] = {}
        self._networks: dict[str, TrainedNetwork] = {}  # network key -> its trained network
        self._archived: dict[str, Evaluation] = {}  # candidate key -> an earlier process's evaluation
        self._final_networks: dict[str, TrainedNetwork] = {}  # network key -> its final training (final_training)
        # callbacks(evaluation, fresh): fresh is True only for a newly computed evaluation (to be archived)
        self.on_evaluated: list[Callable[[Evaluation, bool], None]] = []

    def preload(self, evaluations: list[Evaluation]) -> None:
        """Evaluations finished by an earlier (killed) process: answered from here when asked, never re-run.

        They join ``self.evaluations`` only when the replayed search asks for
        them, so per-generation logs of a resumed run match an uninterrupted one.
        """
        for ev in evaluations:
            self._archived[self.candidate_key_of(ev)] = ev

    def candidate_key_of(self, ev: Evaluation) -> str:
        """The candidate key an evaluation answers for (the same rule as ``candidate_key``)."""
        return self._candidate_key(ev.key, ev.network_key)

    def candidate_key(self, genome: Genome) -> str:
        """Identity of a candidate: the genome text, or the network alone when tuning overwrites thresholds."""
        return self._candidate_key(genome.key, genome.network_key)

    def _candidate_key(self, genome_text: str, network_key: str) -> str:
        return network_key if self.settings.threshold_tuning else genome_text

    @property
    def failures(self) -> list[Evaluation]:
        return [e for e in self.evaluations if e.status != "ok"]

    def evaluate_all(self, genomes: Sequence[Genome], generation: int = 0) -> list[Evaluation]:
        """Metrics and objectives of a population, in order; with a pool its new networks train side by side.

        Every network to train goes to the pool first; results are then recorded
        in the order given, each as soon as it and those before it are done, so
        the archive and the callbacks see what a one-by-one run would see.
        """
        if self.pool is not None:
            for genome in genomes:
                if self._needs_training(genome):
                    self._pending[genome.network_key] = self.pool.submit(genome)
        return [self.evaluate(genome, generation) for genome in genomes]

    def _needs_training(self, genome: Genome) -> bool:
        candidate_key = self.candidate_key(genome)
        return not (candidate_key in self._by_candidate_key or candidate_key in self._archived
                    or genome.network_key in self._networks
                    or genome.network_key in self._pending)

    def evaluate(self, genome: Genome, generation: int = 0) -> Evaluation:
        """Metrics and objectives of one genome (cached by candidate key)."""
        candidate_key = self.candidate_key(genome)
        if candidate_key in self._by_candidate_key:
            for cb in self.on_evaluated:
                cb(self._by_candidate_key[candidate_key], False)
            return self._by_candidate_key[candidate_key]
        if candidate_key in self._archived:
            return self._record(self._archived.pop(candidate_key), candidate_key, fresh=False)
        net = self._networks.get(genome.network_key)
        if net is None:
            try:
                net = self._train(genome)
            except (OSError, BrokenProcessPool):
                raise  # the machine, not the candidate: disk full, dataset gone, a worker killed -> stop, archive intact
            except Exception as exc:  # diverged, out of memory, or a bug this genome triggers
                return self._record(self._failed(genome, generation, exc), candidate_key)
            self._networks[genome.network_key] = net
        return self._record(self.score(genome, net, generation), candidate_key)

    def score(self, genome: Genome, net: TrainedNetwork, generation: int = 0) -> Evaluation:
        """A trained network's metrics under ``genome``'s thresholds (tuned from its val confidences when tuning
        is on), with objectives and constraints; the network is not run again."""
        thresholds = list(genome.thresholds)
        tune_start = time.perf_counter()
        if self.settings.threshold_tuning and thresholds:
            tuning_costs = net.path_latency_ms if self.settings.objective == "avg_latency" else net.cost.path_macs
            thresholds = list(tune_thresholds(net.confidences, net.correct, tuning_costs,
                                              genome.space.thresholds, self.settings.max_accuracy_drop))
        outcome = simulate_exits(net.confidences, net.correct, thresholds, net.cost.path_macs)
        tune_seconds = time.perf_counter() - tune_start
        ev = Evaluation(
            key=genome.with_thresholds(thresholds).key, network_key=genome.network_key, generation=generation,
            val_accuracy=outcome.accuracy, expected_macs=outcome.expected_cost,
            static_macs=net.cost.static_macs, total_macs=net.cost.total_macs, params=net.params,
            n_exits=len(genome.active_exits), exit_stages=[e.stage for e in genome.active_exits],
            thresholds=thresholds, path_macs=list(net.cost.path_macs), exit_rates=list(outcome.exit_rates),
            exit_accuracies=list(outcome.exit_accuracies),
            head_accuracies=[float(c.mean()) for c in net.correct],
            static_val_accuracy=float(net.correct[-1].mean()),
            train_seconds=net.train_seconds, eval_seconds=net.eval_seconds, model_file=net.model_file,
            path_latency_ms=list(net.path_latency_ms),
            expected_latency_ms=expected_cost(outcome.exit_rates, net.path_latency_ms) if net.path_latency_ms else None,
            static_latency_ms=self._static_latency(genome), tune_seconds=tune_seconds,
        )
        return self._judged(ev)

    def final_training(self, ev: Evaluation, genome: Genome, epochs: int) -> Evaluation:
        """``ev``'s network (``genome``, parsed from ``ev.key``) trained ``epochs`` more from its candidate weights
        (``search.final_epochs``) and scored on val as a candidate is; nothing is recorded as an evaluation."""
        net = self._final_networks.get(genome.network_key)
        if net is None:  # one training per network, however many threshold vectors of it the front holds
            net = self._final_networks[genome.network_key] = self.training.train(genome, ev.model_file, epochs)
        net.path_latency_ms = self._path_latency(genome)
        return self.score(genome, net, ev.generation)

    def _judged(self, ev: Evaluation) -> Evaluation:
        """``ev`` with the objectives and constraints pymoo minimises."""
        ev.objectives = objective_values(self.settings, ev.val_accuracy, ev.expected_macs, ev.expected_latency_ms)
        ev.constraints = constraint_values(self.settings, ev.expected_macs, ev.expected_latency_ms)
        return ev

    def _record(self, ev: Evaluation, candidate_key: str, fresh: bool = True) -> Evaluation:
        self.evaluations.append(ev)
        self._by_candidate_key[candidate_key] = ev
        for cb in self.on_evaluated:
            cb(ev, fresh)
        return ev

    def _failed(self, genome: Genome, generation: int, exc: BaseException) -> Evaluation:
        """A candidate that could not be trained: accuracy 0 at the cost of running everything."""
        cost = network_cost(genome, self.data.num_classes, self.data.in_channels, self.data.resolution)
        n = len(cost.path_macs)
        log.warning("candidate failed (%s): %s", type(exc).__name__, genome.key)
        latency = self._path_latency(genome)
        return self._judged(Evaluation(
            key=genome.key, network_key=genome.network_key, generation=generation, val_accuracy=0.0,
            expected_macs=float(cost.total_macs), static_macs=cost.static_macs, total_macs=cost.total_macs, params=0,
            n_exits=n - 1, exit_stages=[e.stage for e in genome.active_exits], thresholds=list(genome.thresholds),
            path_macs=list(cost.path_macs), exit_rates=[0.0] * (n - 1) + [1.0], exit_accuracies=[float("nan")] * n,
            head_accuracies=[0.0] * n, static_val_accuracy=0.0, train_seconds=0.0, eval_seconds=0.0,
            status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
            path_latency_ms=list(latency), expected_latency_ms=latency[-1] if latency else None,
            static_latency_ms=self._static_latency(genome),
        ))

    def _path_latency(self, genome: Genome) -> tuple[float, ...]:
        """Predicted milliseconds per exit path on the search's device; empty without a table."""
        return self.latency_table.path_ms(genome) if self.latency_table is not None else ()

    def _static_latency(self, genome: Genome) -> float | None:
        return self.latency_table.static_ms(genome) if self.latency_table is not None else None

    def _train(self, genome: Genome) -> TrainedNetwork:
        """The candidate's trained network: from the pool when it was sent there, else trained here."""
        future = self._pending.pop(genome.network_key, None)
        net = future.result() if future is not None else self.training.train(genome)
        net.path_latency_ms = self._path_latency(genome)
        return net
