"""The pymoo Problem: integer genome vectors in, objective and constraint rows out."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np
from pymoo.core.problem import Problem

from aebnas.search.evaluator import Evaluation
from aebnas.search.objectives import n_constraints
from aebnas.search.settings import SearchSettings
from aebnas.space import Genome, SearchSpace


class BatchEvaluator(Protocol):
    """What the search asks of its evaluation backend: a batch of genomes scored, in the order given.

    ``CandidateEvaluator`` is the one in use (in-process, or with a pool of
    workers training the batch's new networks side by side).
    """

    def evaluate_all(self, genomes: Sequence[Genome], generation: int = 0) -> list[Evaluation]: ...


class EarlyExitProblem(Problem):
    def __init__(self, space: SearchSpace, evaluator: BatchEvaluator, settings: SearchSettings):
        n_constr = n_constraints(settings)
        super().__init__(n_var=space.n_var, n_obj=2, n_ieq_constr=n_constr, xl=space.xl, xu=space.xu, vtype=int,
                         requires_kwargs=True)  # pymoo then passes the asking algorithm to _evaluate
        self.space = space
        self.evaluator = evaluator

    def _evaluate(self, X, out, *args, algorithm=None, **kwargs):
        """Scores a batch; the generation recorded is the asking algorithm's (pymoo's ``n_gen``, 1 first)."""
        if algorithm is None:
            raise ValueError("EarlyExitProblem: evaluate it through a pymoo algorithm (it records the generation "
                             "each candidate was asked in); call the evaluator directly otherwise")
        genomes = [self.space.decode(np.asarray(x, dtype=np.int64)) for x in X]
        evaluations = self.evaluator.evaluate_all(genomes, algorithm.n_gen)
        out["F"] = np.array([e.objectives for e in evaluations], dtype=float)
        if self.n_ieq_constr:
            out["G"] = np.array([e.constraints for e in evaluations], dtype=float)
