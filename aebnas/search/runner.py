"""The NSGA-II loop and the run directory it fills.

``run_search`` wires the space, the evaluator and pymoo together, logs each
generation, and at the end scores the Pareto set once on the test split and
saves those networks with everything needed to rebuild them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.callback import Callback
from pymoo.optimize import minimize
from tqdm.auto import tqdm

from aebnas.analysis.pareto import hypervolume_2d, non_dominated_mask
from aebnas.cost import expected_cost
from aebnas.cost.latency import LatencyTable
from aebnas.data import DataSplits
from aebnas.nn import build_model
from aebnas.search.archive import CsvLog, EvaluationArchive, write_csv_atomic, write_text_atomic
from aebnas.search.baselines import UniformResampling, manual_genomes
from aebnas.search.evaluator import LIST_FIELDS, CandidateEvaluator, Evaluation
from aebnas.search.training import short_hash
from aebnas.search.workers import CandidatePool
from aebnas.search.objectives import objective_names
from aebnas.search.operators import (GeneResetMutation, GenomeDuplicateElimination, GroupUniformCrossover,
                                     SpaceRepair, SpaceSampling)
from aebnas.search.problem import EarlyExitProblem
from aebnas.search.settings import SearchSettings
from aebnas.search.thresholds import confidence, simulate_exits
from aebnas.space import Genome, GenomeError, SearchSpace
from aebnas.train import TrainerConfig, predict_logits
from aebnas.train.supernet import SupernetConfig, SupernetInfo, prepare_supernet
from aebnas.validation import ConfigError

log = logging.getLogger("aebnas.search")

ARCHIVE_NAME = "archive.sqlite"
PARETO_COLUMNS = ["genome", "val_accuracy", "test_accuracy", "expected_macs", "test_expected_macs", "static_macs",
                  "model_dir"]


@dataclass
class SearchResult:
    run_dir: Path
    evaluations: list[Evaluation]
    pareto: list[dict[str, Any]]
    seconds: float


def pareto_evaluations(evaluations: list[Evaluation], cost_column: str = "expected_macs") -> list[Evaluation]:
    """The search's answer, recomputed from all evaluations rather than pymoo's last population.

    Feasible, non-dominated in objective space, one per objective vector, cheapest first.
    """
    feasible = [e for e in evaluations if e.feasible]
    if not feasible:
        return []
    mask = non_dominated_mask(np.array([e.objectives for e in feasible]))
    seen, front = set(), []
    for e in sorted((e for e, m in zip(feasible, mask) if m), key=lambda e: (getattr(e, cost_column), -e.val_accuracy)):
        point = tuple(e.objectives)
        if point not in seen:
            seen.add(point)
            front.append(e)
    return front


def write_evaluations_view(archive: EvaluationArchive, run_dir: Path) -> None:
    """evaluations.csv: a readable view derived from the archive (rewritten atomically)."""
    rows = [Evaluation.from_record(r).to_row() for r in archive.rows()]
    if rows:
        write_csv_atomic(run_dir / "evaluations.csv", rows)


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else k)
    return f"{path}: {a!r} then, {b!r} now"


class _GenerationLog(Callback):
    def __init__(self, problem: EarlyExitProblem, run_dir: Path, bar: tqdm, start: float, cost_ref: float,
                 archive: EvaluationArchive, settings: SearchSettings):
        super().__init__()
        self.archive = archive
        self.run_dir = run_dir
        self.problem = problem
        self.evaluator = problem.evaluator
        self.csv = CsvLog(run_dir / "generations.csv")
        checkpoint = run_dir / "checkpoint.json"
        self.replay_checkpoint = json.loads(checkpoint.read_text()) if checkpoint.exists() else None
        self.bar = bar
        self.start = start
        self.cost_ref = cost_ref
        self.cost = settings.cost_column

    def notify(self, algorithm):
        self.record(self.problem.generation)
        self._checkpoint(algorithm, self.problem.generation - 1)

    def record(self, generation: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """generations.csv's row for the search so far (``extra``: an algorithm's own columns), the
        evaluations.csv view and the progress line; then the next generation is counted."""
        evals = self.evaluator.evaluations
        ok = [e for e in evals if e.status == "ok"]  # a failed candidate's placeholder metrics are no record
        front = pareto_evaluations(evals, self.cost)
        pts = (np.array([[1.0 - e.val_accuracy, getattr(e, self.cost) / self.cost_ref] for e in front]) if front
               else np.zeros((0, 2)))
        row = {
            "generation": generation,
            "evaluations": len(evals),
            "trained_networks": len({e.network_key for e in evals}),
            "pareto_size": len(front),
            "failed": len(evals) - len(ok),
            "best_val_accuracy": max((e.val_accuracy for e in ok), default=float("nan")),
            f"min_{self.cost}": min((getattr(e, self.cost) for e in ok), default=float("nan")),
            "hypervolume": hypervolume_2d(pts, (1.0, 1.0)),
            "elapsed_seconds": round(time.perf_counter() - self.start, 3),
            **(extra or {}),
        }
        self.csv.append(row)
        write_evaluations_view(self.archive, self.run_dir)
        surrogate = (f" | {row['predictor']} tau {row['predictor_tau']}" if extra and row.get("predictor_tau")
                     is not None else "")
        self.bar.write(f"gen {row['generation']:3d} | evals {row['evaluations']:4d} | pareto {row['pareto_size']:2d} | "
                       f"best acc {row['best_val_accuracy']:.4f} | min {_cost_text(self.cost, row[f'min_{self.cost}'])} | "
                       f"HV {row['hypervolume']:.4f} | {row['elapsed_seconds']:.0f}s{surrogate}")
        log.debug("generation %s", json.dumps(row))
        self.problem.generation = generation + 1
        return row

    def _checkpoint(self, algorithm, generation: int) -> None:
        """checkpoint.json: the population after this generation and pymoo's RNG state.

        Resuming replays from the archive; the checkpoint is the witness that the
        replay reached the same population (a mismatch means training was not
        deterministic, e.g. on a GPU) and a readable snapshot of a live search.
        """
        state = {
            "generation": generation,
            "population": [self.problem.space.key(ind.X) for ind in algorithm.pop],
            "objectives": algorithm.pop.get("F").tolist(),
            "rng_state": algorithm.random_state.bit_generator.state if algorithm.random_state is not None else None,
        }
        path = self.run_dir / "checkpoint.json"
        if self.replay_checkpoint and self.replay_checkpoint.get("generation") == generation \
                and self.replay_checkpoint["population"] != state["population"]:
            log.warning("the resumed search reached another population at generation %d than the killed run "
                        "(training is not deterministic here); it carries on from the replayed one", generation)
        write_text_atomic(path, json.dumps(state, default=int))


def run_search(space: SearchSpace, data: DataSplits, trainer: TrainerConfig, settings: SearchSettings,
               device: torch.device, run_dir: Path, seed: int = 0, progress: bool = True, resume: bool = False,
               config_record: dict[str, Any] | None = None, latency_table: LatencyTable | None = None,
               method: str | None = None, supernet: SupernetConfig | None = None, workers: int = 1) -> SearchResult:
    """Run NSGA-II and fill ``run_dir``; the library entry point behind ``aebnas-search``.

    Resuming replays the search from the start with the same seed: finished
    evaluations come from the archive instead of being trained again, and since
    pymoo's choices depend only on the seed and the objective values, the replay
    walks the same path and then carries on where the killed run stopped.
    ``config_record`` (the resolved config) is stored with the archive; a resume
    under another config is refused. With ``latency_table`` every candidate is
    also priced in milliseconds on that device (needed by ``avg_latency`` and
    latency budgets). ``method`` (conf/method/) is recorded in summary.json.
    """
    if settings.needs_latency and latency_table is None:
        raise ConfigError(f"search.objective={settings.objective} / search.max_expected_latency_ms need a latency "
                          "table: add hardware=<name> (see conf/hardware)")
    start = time.perf_counter()
    initial = parse_initial_genomes(space, settings)
    pop_size, generations = settings.pop_size, settings.generations
    if settings.algorithm == "manual":  # one network at each global threshold, all in the first generation
        initial = manual_genomes(space)
        pop_size, generations = len(initial), 1
    run_dir = Path(run_dir)
    archive_path = run_dir / ARCHIVE_NAME
    if archive_path.exists() and not resume:
        raise FileExistsError(f"run dir: '{run_dir}' already holds a search ({ARCHIVE_NAME}); "
                              f"continue it with resume={run_dir}, or choose a new hydra.run.dir")
    if resume and not archive_path.exists():
        raise FileNotFoundError(f"resume: no {ARCHIVE_NAME} in '{run_dir}'; pass the directory of a search to continue")
    run_dir.mkdir(parents=True, exist_ok=True)
    archive = EvaluationArchive(archive_path)
    fingerprint = json.dumps(config_record or {}, sort_keys=True)
    stored = archive.get_meta("config")
    if stored is None:
        archive.set_meta("config", fingerprint)
    elif stored != fingerprint:
        raise ConfigError(f"resume: '{run_dir}' was searched with another config "
                          f"({_first_difference(json.loads(stored), config_record or {})}); resume it unchanged")
    weights_dir = run_dir / "candidates"
    shared, supernet_info = None, None
    if trainer.init == "supernet":
        shared, supernet_info = prepare_supernet(space, data, supernet or SupernetConfig(), trainer, device, seed,
                                                 progress)
    evaluator = CandidateEvaluator(data, trainer, settings, device, seed=seed, model_dir=weights_dir,
                                   latency_table=latency_table, supernet=shared)
    evaluator.preload([Evaluation.from_record(r) for r in archive.rows()])
    if resume:
        log.info("resuming %s: %d finished evaluations are replayed, not re-run", run_dir, len(archive))
        (run_dir / "generations.csv").unlink(missing_ok=True)  # rebuilt identically by the replay
    total = settings.budget if settings.algorithm == "msunas" else pop_size * generations
    bar = tqdm(total=total, desc="candidates", unit="cand", disable=not progress, dynamic_ncols=True)

    def on_evaluated(ev: Evaluation, fresh: bool) -> None:
        bar.update(1)
        if fresh:
            archive.add(evaluator.key_of(ev), ev.to_record())
            bar.set_postfix(gen=ev.generation, acc=f"{ev.val_accuracy:.3f}",
                            cost=_cost_text(settings.cost_column, getattr(ev, settings.cost_column)))

    evaluator.on_evaluated.append(on_evaluated)
    largest = space.largest()
    macs_ref = float(_static_macs(largest, data))
    latency_ref = latency_table.static_ms(largest) if latency_table is not None else None
    cost_ref = macs_ref if settings.cost_column == "expected_macs" else latency_ref
    problem = EarlyExitProblem(space, evaluator, settings)
    random = settings.algorithm == "random"
    algorithm = NSGA2(
        pop_size=pop_size,
        sampling=SpaceSampling(space, initial),
        crossover=GroupUniformCrossover(space, prob=0.0 if random else settings.crossover_prob),
        mutation=UniformResampling(space) if random else GeneResetMutation(space, settings.gene_mutation_prob),
        repair=SpaceRepair(space),
        eliminate_duplicates=GenomeDuplicateElimination(space, key=evaluator.candidate_key),
    )
    log.info("search space %s: %d genes, %.3e networks; largest static network %.2fM MACs",
             space.config.name, space.n_var, float(space.size), macs_ref / 1e6)
    if workers > 1:
        evaluator.pool = _start_pool(evaluator, trainer, device, workers, pop_size)
    generation_log = _GenerationLog(problem, run_dir, bar, start, cost_ref, archive, settings)
    try:
        if settings.algorithm == "msunas":
            from aebnas.search.msunas import Featurizer, run_msunas

            featurizer = Featurizer(space, data.num_classes, data.in_channels, data.resolution, latency_table)
            run_msunas(space, evaluator, settings, featurizer, seed, run_dir, generation_log.record, initial)
        else:
            minimize(problem, algorithm, ("n_gen", generations), seed=seed, verbose=False, copy_algorithm=False,
                     callback=generation_log)
    except BaseException:  # Ctrl-C, a machine failure: stop the workers now, not after their candidates
        if evaluator.pool is not None:
            evaluator.pool.close(abort=True)
        raise
    if evaluator.pool is not None:
        evaluator.pool.close()
    bar.close()  # the last generation's callback has written evaluations.csv

    front = pareto_evaluations(evaluator.evaluations, settings.cost_column)
    final_start = time.perf_counter()
    pareto_rows = _finalise_pareto(front, evaluator, settings, run_dir, space, progress)
    final_seconds = time.perf_counter() - final_start if settings.final_epochs else 0.0
    write_csv_atomic(run_dir / "pareto.csv", pareto_rows, columns=None if pareto_rows else PARETO_COLUMNS)
    if not pareto_rows:
        log.warning("no feasible candidate: every one broke a search budget (max_expected_macs/latency_ms) or failed; "
                    "raise the budget or the search size")
    archive.close()
    if weights_dir.exists():
        shutil.rmtree(weights_dir)
    seconds = time.perf_counter() - start - final_seconds  # the search's own time; the answer's training apart
    summary = {
        "method": method,
        "algorithm": settings.algorithm,
        "evaluations": len(evaluator.evaluations),
        "failed": len(evaluator.failures),
        "trained_networks": len({e.network_key for e in evaluator.evaluations}),
        "pareto_size": len(pareto_rows),
        "search_seconds": round(seconds, 2),
        "device": str(device),
        "largest_static_macs": macs_ref,
        "objectives": objective_names(settings),
        "candidate_init": trainer.init,
        "workers": workers,
        "final_epochs": settings.final_epochs,
        "final_training_seconds": round(final_seconds, 2),
    }
    if supernet_info is not None:
        summary["supernet"] = _supernet_summary(supernet_info)
    if latency_table is not None:
        summary["hardware"] = latency_table.meta.get("hardware")
        summary["largest_static_latency_ms"] = latency_ref
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
    try:
        from aebnas.analysis.plots import plot_pareto
        from aebnas.analysis.run import load_run

        run = load_run(run_dir)
        what = "expected MACs" if settings.cost_column == "expected_macs" else \
            f"expected latency on {latency_table.meta.get('hardware')}"
        plot_pareto(run.evaluations, run.pareto, run_dir / "pareto.png", title=f"{data.name}: accuracy vs {what}",
                    cost=settings.cost_column)
    except Exception as exc:  # a plot must never cost the results
        log.warning("could not draw pareto.png: %s", exc)
    return SearchResult(run_dir=run_dir, evaluations=evaluator.evaluations, pareto=pareto_rows, seconds=seconds)


def _start_pool(evaluator: CandidateEvaluator, trainer: TrainerConfig, device: torch.device, workers: int,
                pop_size: int) -> CandidatePool:
    """The worker processes, with torch's threads split between them unless ``trainer.num_threads`` is set."""
    threads = trainer.num_threads or max(1, torch.get_num_threads() // workers)
    cores = os.cpu_count() or 1
    if device.type == "cpu" and workers * threads > cores:
        log.warning("workers=%d x %d thread(s) each is more than this machine's %d cores: they will slow each other "
                    "down; use workers=%d or fewer", workers, threads, cores, max(1, cores // threads))
    if workers > pop_size:
        log.warning("workers=%d: at most pop_size=%d candidates are new at a time, the other workers stay idle",
                    workers, pop_size)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the workers have their own CUDA contexts; free what this process cached
    log.info("training %d candidates at once in worker processes, %d torch thread(s) each", workers, threads)
    return CandidatePool(evaluator.training, workers, threads)


def _supernet_summary(info: SupernetInfo) -> dict[str, Any]:
    """summary.json's record of the supernet: where it is cached and what training it cost (0 s when loaded)."""
    return {"path": info.path, "key": info.key, "loaded_from_cache": info.cached,
            "train_seconds": 0.0 if info.cached else info.train_seconds, "trained_in_seconds": info.train_seconds,
            "exit_heads": info.exits}


def _cost_text(column: str, value: float) -> str:
    return f"E[lat] {value:.3f}ms" if column == "expected_latency_ms" else f"E[MACs] {value / 1e6:.3f}M"


def parse_initial_genomes(space: SearchSpace, settings: SearchSettings) -> list[Genome]:
    """Seed genomes from the config, each checked against the space's choices (thresholds included)."""
    genomes = []
    for i, text in enumerate(settings.initial_genomes):
        try:
            genome = space.parse(text)
            space.encode(genome)  # thresholds must be among space.thresholds to live in the gene vector
        except GenomeError as exc:
            raise GenomeError(f"search.initial_genomes[{i}]: {exc}") from None
        genomes.append(genome)
    return genomes


def _static_macs(genome: Genome, data: DataSplits) -> int:
    from aebnas.cost import network_cost

    return network_cost(genome, data.num_classes, data.in_channels, data.resolution).static_macs


def _finalise_pareto(front: list[Evaluation], evaluator: CandidateEvaluator, settings: SearchSettings,
                     run_dir: Path, space: SearchSpace, progress: bool = True) -> list[dict[str, Any]]:
    """Train each Pareto network further when ``search.final_epochs`` asks, score it once on test, save it."""
    rows = []
    models_dir = run_dir / "models"
    shutil.rmtree(models_dir, ignore_errors=True)  # a resumed run writes them anew; none may be left from before
    data = evaluator.data
    if settings.final_epochs and front:
        log.info("final training: %d Pareto network(s), %d epoch(s) each", len(front), settings.final_epochs)
    for rank, searched in enumerate(tqdm(front, desc="final training", unit="net",
                                         disable=not (progress and settings.final_epochs))):
        genome = space.parse(searched.key)  # thresholds as evaluated (tuned ones when tuning is on)
        ev, final_error = searched, ""
        if settings.final_epochs:
            try:
                ev = evaluator.final_training(searched, genome, settings.final_epochs)
                genome = space.parse(ev.key)
            except OSError:
                raise  # the machine, not the network: disk full, dataset gone
            except Exception as exc:  # diverged, out of memory: the search's network is still an answer
                final_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
                log.warning("final training of Pareto network %d failed (%s); it is kept as the search evaluated it",
                            rank, final_error)
        model, correct, outcome = _on_test(genome, ev, evaluator)
        if ev is not searched and not ev.feasible:
            log.warning("Pareto network %d breaks a search budget after its final training (constraints %s); "
                        "pareto.csv keeps it, marked feasible=False", rank, ev.constraints)
        row = ev.to_row()
        row.update({
            "genome": genome.to_text(),
            "test_accuracy": outcome.accuracy,
            "test_expected_macs": outcome.expected_cost,
            "test_expected_latency_ms": (expected_cost(outcome.exit_rates, ev.path_latency_ms) if ev.path_latency_ms
                                         else None),
            "test_exit_rates": json.dumps(list(outcome.exit_rates)),
            "test_static_accuracy": float(correct[-1].mean()),
        })
        if settings.final_epochs:
            searched_test = outcome if ev is searched else _on_test(space.parse(searched.key), searched, evaluator)[2]
            row.update({"final_epochs": 0 if final_error else settings.final_epochs, "final_error": final_error,
                        "search_key": searched.key, "search_val_accuracy": searched.val_accuracy,
                        "search_expected_macs": searched.expected_macs,
                        "search_expected_latency_ms": searched.expected_latency_ms,
                        "search_test_accuracy": searched_test.accuracy})
        if settings.save_models:
            out = models_dir / f"{rank:02d}_{short_hash(genome.key, 8)}"
            out.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), out / "model.pt.tmp")
            (out / "model.pt.tmp").replace(out / "model.pt")
            write_text_atomic(out / "genome.json", genome.dumps())
            metrics = {k: (json.loads(v) if k in ("test_exit_rates", *LIST_FIELDS) else v)
                       for k, v in row.items() if k not in ("constraints",)}
            metrics.update({"num_classes": data.num_classes, "in_channels": data.in_channels,
                            "resolution": data.resolution, "exit_metric": settings.exit_metric,
                            "mean": list(data.mean), "std": list(data.std)})
            write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, default=float))
            row["model_dir"] = str(out.relative_to(run_dir))
        rows.append(row)
    return rows


def _on_test(genome: Genome, ev: Evaluation, evaluator: CandidateEvaluator) -> tuple[torch.nn.Module, np.ndarray, Any]:
    """``ev``'s saved network under ``genome``'s thresholds on the test split: the model, which exits are right
    for which image, and the exit simulation (accuracy, rates, expected cost)."""
    data, training = evaluator.data, evaluator.training
    model = build_model(genome, data.num_classes, data.in_channels)
    model.load_state_dict(torch.load(ev.model_file, map_location="cpu"))
    logits = predict_logits(model, data.test, data.mean, data.std, training.device, training.trainer.eval_batch_size,
                            training.trainer.amp)
    correct = logits.argmax(-1) == data.test.y.numpy()[None, :]
    outcome = simulate_exits(confidence(logits, training.exit_metric), correct, list(genome.thresholds),
                             ev.path_macs)
    return model, correct, outcome
