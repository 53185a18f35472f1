"""Per-generation reporting: a line of generations.csv, the checkpoint and a progress line after each one."""

from __future__ import annotations

import json
import logging
import time

import numpy as np
from pymoo.core.callback import Callback
from tqdm.auto import tqdm

from aebnas.analysis.pareto import hypervolume_2d
from aebnas.search.evaluator import CandidateEvaluator
from aebnas.search.front import cost_text, pareto_evaluations
from aebnas.search.rundir import RunDirectory
from aebnas.space import SearchSpace

log = logging.getLogger("aebnas.search")


class GenerationLog(Callback):
    """pymoo's per-generation callback; the generation number is pymoo's own (``algorithm.n_gen``, 1 first)."""

    def __init__(self, run: RunDirectory, evaluator: CandidateEvaluator, space: SearchSpace, bar: tqdm,
                 start: float, cost_column: str, cost_ref: float):
        super().__init__()
        self.run, self.evaluator, self.space, self.bar = run, evaluator, space, bar
        self.start = start
        self.cost, self.cost_ref = cost_column, cost_ref

    def notify(self, algorithm) -> None:
        # an algorithm's own columns (msunas: the predictors' choice and out-of-sample quality) and records
        row = {**self.summary_row(algorithm.n_gen), **getattr(algorithm, "generation_columns", {})}
        self.run.log_generation(row)
        if getattr(algorithm, "prediction_rows", None):
            self.run.log_predictions(algorithm.prediction_rows)
        self.run.checkpoint(row["generation"], [self.space.key(ind.X) for ind in algorithm.pop],
                            algorithm.pop.get("F").tolist(),
                            algorithm.random_state.bit_generator.state if algorithm.random_state is not None else None)
        lowest = cost_text(self.cost, row[f"min_{self.cost}"])
        self.bar.write(f"gen {row['generation']:3d} | evals {row['evaluations']:4d} | pareto {row['pareto_size']:2d} | "
                       f"best acc {row['best_val_accuracy']:.4f} | min {lowest} | "
                       f"HV {row['hypervolume']:.4f} | {row['elapsed_seconds']:.0f}s{self._workers_text()}{_predictor_text(row)}")
        log.debug("generation %s", json.dumps(row))

    def _workers_text(self) -> str:
        """' | workers 2' with an executor: how many are connected (a lost one shows until it is replaced)."""
        if self.evaluator.pool is None:
            return ""
        return f" | workers {self.evaluator.pool.busy()[1]}"

    def summary_row(self, generation: int) -> dict:
        """The search so far: evaluations, failures, the front's size and hypervolume, the best of each objective."""
        evals = self.evaluator.evaluations
        ok = [e for e in evals if e.status == "ok"]  # a failed candidate's placeholder metrics are no record
        front = pareto_evaluations(evals, self.cost)
        pts = (np.array([[1.0 - e.val_accuracy, getattr(e, self.cost) / self.cost_ref] for e in front]) if front
               else np.zeros((0, 2)))
        return {
            "generation": generation,
            "evaluations": len(evals),
            "trained_networks": len({e.network_key for e in evals}),
            "pareto_size": len(front),
            "failed": len(evals) - len(ok),
            "best_val_accuracy": max((e.val_accuracy for e in ok), default=float("nan")),
            f"min_{self.cost}": min((getattr(e, self.cost) for e in ok), default=float("nan")),
            "hypervolume": hypervolume_2d(pts, (1.0, 1.0)),
            "elapsed_seconds": round(time.perf_counter() - self.start, 3),
        }


def _predictor_text(row: dict) -> str:
    if row.get("predictor_tau") is None:
        return ""
    return f" | {row['predictor']} tau {row['predictor_tau']:.2f}"
