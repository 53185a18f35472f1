"""The search loop: pymoo problem, operators, candidate evaluator, NSGA-II runner."""

from aebnas.search.evaluator import CandidateEvaluator, Evaluation
from aebnas.search.runner import SearchResult, pareto_evaluations, run_search
from aebnas.search.settings import SearchConfigError, SearchSettings

__all__ = ["CandidateEvaluator", "Evaluation", "SearchConfigError", "SearchResult", "SearchSettings",
           "pareto_evaluations", "run_search"]
