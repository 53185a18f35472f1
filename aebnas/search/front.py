"""The search's answer: the feasible, non-dominated evaluations."""

from __future__ import annotations

import numpy as np

from aebnas.analysis.pareto import non_dominated_mask
from aebnas.search.evaluator import Evaluation


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


def cost_text(column: str, value: float) -> str:
    """A cost for the progress lines: milliseconds or millions of MACs."""
    return f"E[lat] {value:.3f}ms" if column == "expected_latency_ms" else f"E[MACs] {value / 1e6:.3f}M"
