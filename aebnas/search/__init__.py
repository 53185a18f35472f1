"""The search loop: pymoo problem, operators, candidate evaluator, the runner."""

from aebnas.search.evaluator import CandidateEvaluator, Evaluation
from aebnas.search.job import SearchJob
from aebnas.search.runner import SearchResult, pareto_evaluations, run_search
from aebnas.search.settings import RunSettings, SearchConfigError, SearchSettings

__all__ = ["CandidateEvaluator", "Evaluation", "RunSettings", "SearchConfigError", "SearchJob", "SearchResult", "SearchSettings",
           "pareto_evaluations", "run_search"]
