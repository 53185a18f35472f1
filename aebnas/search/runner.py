"""``run_search``: a search from its inputs to a filled run directory, in named steps.

1. ``RunDirectory`` (rundir.py): refuse to overwrite, pin the config, replay a
   killed run from archive.sqlite;
2. the evaluation backend, ``CandidateEvaluator`` (evaluator.py), scoring a
   batch of genomes; ``training_pool`` (backend.py) trains the batch's new
   networks side by side;
3. the algorithm ``search.algorithm`` names (algorithms.py), run by pymoo with
   ``GenerationLog`` (generations.py) reporting each generation;
4. the finish (finish.py): final training, test scoring, pareto.csv, models/;
   then summary.json and pareto.png.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymoo.optimize import minimize
from tqdm.auto import tqdm

from aebnas.cost import network_cost
from aebnas.search.algorithms import build_algorithm, parse_initial_genomes
from aebnas.search.backend import training_pool
from aebnas.search.evaluator import CandidateEvaluator, Evaluation
from aebnas.search.finish import draw_pareto, finish_search
from aebnas.search.front import cost_text, pareto_evaluations
from aebnas.search.generations import GenerationLog
from aebnas.search.job import SearchJob
from aebnas.search.objectives import objective_names
from aebnas.search.problem import EarlyExitProblem
from aebnas.search.rundir import RunDirectory
from aebnas.train.supernet import SupernetSettings, SupernetInfo, prepare_supernet
from aebnas.config_checks import ConfigError

log = logging.getLogger("aebnas.search")

__all__ = ["SearchJob", "SearchResult", "pareto_evaluations", "parse_initial_genomes", "run_search"]


@dataclass
class SearchResult:
    run_dir: Path
    evaluations: list[Evaluation]
    pareto: list[dict[str, Any]]
    seconds: float


def run_search(job: SearchJob) -> SearchResult:
    """Run the search ``job`` describes and fill its run directory; the library entry point behind ``aebnas-search``.

    With ``job.resume`` the search is replayed from the start with the same seed:
    finished evaluations come from the archive instead of being trained again.
    """
    settings = job.settings
    if settings.needs_latency and job.latency_table is None:
        raise ConfigError(f"search.objective={settings.objective} / search.max_expected_latency_ms need a latency "
                          "table: add hardware=<name> (see conf/hardware)")
    start = time.perf_counter()
    parse_initial_genomes(job.space, settings)  # a bad seed genome fails before the run directory is touched
    run = RunDirectory(job.run_dir, job.resume, job.config_record)
    evaluator, supernet_info = _evaluator(job, run)
    plan = build_algorithm(job.space, settings, evaluator.candidate_key)
    bar = tqdm(total=plan.candidates, desc="candidates", unit="cand", disable=not job.progress, dynamic_ncols=True)
    evaluator.on_evaluated.append(lambda ev, fresh: _progress(bar, ev, fresh, settings.cost_column))
    refs = _cost_references(job)
    log.info("search space %s: %d genes, %.3e networks; largest static network %.2fM MACs",
             job.space.config.name, job.space.n_var, float(job.space.size), refs["largest_static_macs"] / 1e6)
    cost_ref = refs["largest_static_macs" if settings.cost_column == "expected_macs" else "largest_static_latency_ms"]
    with training_pool(evaluator, job.workers, plan.batch_size):
        minimize(EarlyExitProblem(job.space, evaluator, settings), plan.algorithm, plan.termination, seed=job.seed,
                 verbose=False, copy_algorithm=False,
                 callback=GenerationLog(run, evaluator, job.space, bar, start, settings.cost_column, cost_ref))
    bar.close()  # the last generation's callback has written evaluations.csv

    front = pareto_evaluations(evaluator.evaluations, settings.cost_column)
    pareto_rows, final_seconds = finish_search(front, evaluator, job.space, run.path, job.progress)
    seconds = time.perf_counter() - start - final_seconds  # the search's own time; the answer's training apart
    run.close(_summary(job, evaluator, pareto_rows, seconds, final_seconds, refs, supernet_info))
    draw_pareto(run.path, f"{job.data.name}: accuracy vs {_cost_name(job)}", settings.cost_column)
    return SearchResult(run_dir=run.path, evaluations=evaluator.evaluations, pareto=pareto_rows, seconds=seconds)


def _evaluator(job: SearchJob, run: RunDirectory) -> tuple[CandidateEvaluator, SupernetInfo | None]:
    """The evaluation backend, with the supernet trained or loaded first when candidates start from it, and the
    archive's finished evaluations handed over for a resumed run."""
    shared, supernet_info = None, None
    if job.trainer.init == "supernet":
        shared, supernet_info = prepare_supernet(job.space, job.data, job.supernet or SupernetSettings(), job.trainer,
                                                 job.device, job.seed, job.progress)
    evaluator = CandidateEvaluator(job.data, job.trainer, job.settings, job.device, seed=job.seed,
                                   model_dir=run.weights_dir, latency_table=job.latency_table, supernet=shared)
    run.replay_into(evaluator)
    return evaluator, supernet_info


def _progress(bar: tqdm, ev: Evaluation, fresh: bool, cost_column: str) -> None:
    bar.update(1)
    if fresh:
        bar.set_postfix(gen=ev.generation, acc=f"{ev.val_accuracy:.3f}",
                        cost=cost_text(cost_column, getattr(ev, cost_column)))


def _cost_references(job: SearchJob) -> dict[str, float | None]:
    """The largest network's static cost: the scale of the hypervolume's cost axis, recorded in summary.json."""
    largest, data = job.space.largest(), job.data
    macs = float(network_cost(largest, data.num_classes, data.in_channels, data.resolution).static_macs)
    latency = job.latency_table.static_ms(largest) if job.latency_table is not None else None
    return {"largest_static_macs": macs, "largest_static_latency_ms": latency}


def _cost_name(job: SearchJob) -> str:
    if job.settings.cost_column == "expected_macs":
        return "expected MACs"
    return f"expected latency on {job.latency_table.meta.get('hardware')}"


def _summary(job: SearchJob, evaluator: CandidateEvaluator, pareto_rows: list[dict[str, Any]], seconds: float,
             final_seconds: float, refs: dict[str, float | None], supernet_info: SupernetInfo | None) -> dict:
    """summary.json: what ran, what it cost and what it found."""
    summary = {
        "method": job.method,
        "algorithm": job.settings.algorithm,
        "evaluations": len(evaluator.evaluations),
        "failed": len(evaluator.failures),
        "trained_networks": len({e.network_key for e in evaluator.evaluations}),
        "pareto_size": len(pareto_rows),
        "search_seconds": round(seconds, 2),
        "device": str(job.device),
        "largest_static_macs": refs["largest_static_macs"],
        "objectives": objective_names(job.settings),
        "candidate_init": job.trainer.init,
        "workers": job.workers,
        "final_epochs": job.settings.final_epochs,
        "final_training_seconds": round(final_seconds, 2),
    }
    if supernet_info is not None:
        summary["supernet"] = _supernet_summary(supernet_info)
    if job.latency_table is not None:
        summary["hardware"] = job.latency_table.meta.get("hardware")
        summary["largest_static_latency_ms"] = refs["largest_static_latency_ms"]
    return summary


def _supernet_summary(info: SupernetInfo) -> dict[str, Any]:
    """summary.json's record of the supernet: where it is cached and what training it cost (0 s when loaded)."""
    return {"path": info.path, "key": info.key, "loaded_from_cache": info.cached,
            "train_seconds": 0.0 if info.cached else info.train_seconds, "trained_in_seconds": info.train_seconds,
            "exit_heads": info.exits}
