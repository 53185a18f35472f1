"""The search loop: pymoo problem, operators, candidate evaluator, thresholds, the runner."""

from aebnas.search.evaluator import CandidateEvaluator, Evaluation
from aebnas.search.job import SearchJob
from aebnas.search.runner import SearchResult, pareto_evaluations, run_search
from aebnas.search.settings import SearchConfigError, SearchSettings

__all__ = ["CandidateEvaluator", "Evaluation", "SearchConfigError", "SearchJob", "SearchResult", "SearchSettings",
           "pareto_evaluations", "run_search"]
