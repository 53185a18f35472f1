"""The pymoo Problem: integer genome vectors in, objective and constraint rows out."""

from __future__ import annotations

import numpy as np
from pymoo.core.problem import Problem

from aebnas.search.evaluator import CandidateEvaluator
from aebnas.search.objectives import n_constraints
from aebnas.search.settings import SearchSettings
from aebnas.space import SearchSpace


class EarlyExitProblem(Problem):
    def __init__(self, space: SearchSpace, evaluator: CandidateEvaluator, settings: SearchSettings):
        n_constr = n_constraints(settings)
        super().__init__(n_var=space.n_var, n_obj=2, n_ieq_constr=n_constr, xl=space.xl, xu=space.xu, vtype=int)
        self.space = space
        self.evaluator = evaluator
        self.generation = 1  # the initial population is generation 1; the runner's callback advances it

    def _evaluate(self, X, out, *args, **kwargs):
        genomes = [self.space.decode(np.asarray(x, dtype=np.int64)) for x in X]
        evaluations = self.evaluator.evaluate_all(genomes, self.generation)
        out["F"] = np.array([e.objectives for e in evaluations], dtype=float)
        if self.n_ieq_constr:
            out["G"] = np.array([e.constraints for e in evaluations], dtype=float)
