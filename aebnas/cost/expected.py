"""Expected inference cost of an early-exit network given where samples leave.

One convention, stated once: a sample that leaves at exit k has paid for the
backbone up to k *and* every exit head evaluated on the way (heads 1..k), so
``E[cost] = sum_k rate_k * path_cost_k``. Any per-path cost (MACs today, a
measured latency tomorrow) goes through this one function.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def path_costs(segment_costs: Sequence, head_costs: Sequence) -> tuple:
    """Cost of leaving at exit k: segments 0..k plus every head evaluated on the way (heads 0..k)."""
    paths, acc = [], 0
    for seg, head in zip(segment_costs, head_costs):
        acc += seg + head
        paths.append(acc)
    return tuple(paths)


def expected_cost(exit_rates: Sequence[float], path_costs: Sequence[float]) -> float:
    rates = np.asarray(exit_rates, dtype=float)
    costs = np.asarray(path_costs, dtype=float)
    if rates.shape != costs.shape:
        raise ValueError(f"exit_rates: {rates.size} rates for {costs.size} exit paths")
    if np.any(rates < 0) or not np.isclose(rates.sum(), 1.0, atol=1e-6):
        raise ValueError(f"exit_rates: must be non-negative and sum to 1, got {rates.tolist()}")
    return float(rates @ costs)
