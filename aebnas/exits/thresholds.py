"""Exit decisions from logits: confidence metrics, simulated exit behaviour, threshold tuning.

Once a candidate's per-exit validation logits are known, how it behaves under
any threshold vector follows without running the network again. That is what
makes per-candidate threshold tuning cheap enough to do inside the search.

Every metric maps logits to a confidence in [0, 1]; a sample leaves at the
first active exit whose confidence reaches that exit's threshold, and at the
final classifier otherwise.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from aebnas.cost.expected import expected_cost

METRICS = ("max_softmax", "margin", "entropy")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def confidence(logits: np.ndarray, metric: str = "max_softmax") -> np.ndarray:
    """Confidence in [0, 1] per sample, over the last axis of ``logits``.

    ``margin`` is top-1 minus top-2 probability (AEBNAS); ``entropy`` is
    ``1 - H(p) / log(C)``, so 1 means a one-hot prediction.
    """
    p = softmax(np.asarray(logits, dtype=np.float64))
    if metric == "max_softmax":
        return p.max(axis=-1)
    if metric == "margin":
        top2 = np.partition(p, -2, axis=-1)[..., -2:]
        return top2[..., 1] - top2[..., 0]
    if metric == "entropy":
        h = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=-1)
        return 1.0 - h / np.log(p.shape[-1])
    raise ValueError(f"search.exit_metric: unknown metric '{metric}'; use one of {list(METRICS)}")


@dataclass(frozen=True)
class ExitOutcome:
    """How a network with given thresholds treats a labelled split."""

    exit_rates: tuple[float, ...]          # share of samples leaving at each exit (final last)
    exit_accuracies: tuple[float, ...]     # accuracy among the samples leaving there (nan when none)
    accuracy: float
    expected_cost: float
    exit_index: np.ndarray                 # per sample, where it left


def exit_indices(conf: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """First exit k whose confidence reaches ``thresholds[k]``; the final exit otherwise.

    ``conf`` is [n_exits, N]; ``thresholds`` covers the early exits (n_exits - 1).
    """
    n_exits = conf.shape[0]
    if len(thresholds) != n_exits - 1:
        raise ValueError(f"thresholds: expected {n_exits - 1} values for {n_exits - 1} early exits, got {len(thresholds)}")
    leave = np.ones_like(conf, dtype=bool)
    leave[:-1] = conf[:-1] >= np.asarray(thresholds, dtype=float)[:, None]
    return leave.argmax(axis=0)


def simulate_exits(conf: np.ndarray, correct: np.ndarray, thresholds: Sequence[float],
                   path_costs: Sequence[float]) -> ExitOutcome:
    """Exit rates, accuracy and expected cost of a threshold vector, from cached predictions.

    ``conf`` and ``correct`` are [n_exits, N]; ``path_costs`` has one entry per exit.
    """
    n_exits, n = conf.shape
    idx = exit_indices(conf, thresholds)
    counts = np.bincount(idx, minlength=n_exits)
    hit = correct[idx, np.arange(n)]
    per_exit = tuple(float(hit[idx == k].mean()) if counts[k] else float("nan") for k in range(n_exits))
    rates = counts / n
    return ExitOutcome(exit_rates=tuple(float(r) for r in rates), exit_accuracies=per_exit,
                       accuracy=float(hit.mean()), expected_cost=expected_cost(rates, path_costs), exit_index=idx)


def tune_thresholds(conf: np.ndarray, correct: np.ndarray, path_costs: Sequence[float],
                    choices: Sequence[float], max_accuracy_drop: float = 0.01) -> tuple[float, ...]:
    """Cheapest threshold vector (grid over ``choices``) within ``max_accuracy_drop`` of the final exit.

    The reference is the accuracy of running every sample to the final
    classifier. Among vectors that stay within the allowed drop, the lowest
    expected cost wins, ties going to the higher accuracy. Vectorised over
    samples; the grid has ``len(choices) ** n_early_exits`` points.
    """
    n_early = conf.shape[0] - 1
    if n_early == 0:
        return ()
    reference = float(correct[-1].mean())
    grid = np.asarray(list(itertools.product(sorted(choices), repeat=n_early)), dtype=float)
    costs = np.asarray(path_costs, dtype=float)
    n = conf.shape[1]
    cols = np.arange(n)
    best: tuple[float, float, int] | None = None
    fallback: tuple[float, float, int] | None = None
    for g, thr in enumerate(grid):
        idx = exit_indices(conf, thr)
        acc = float(correct[idx, cols].mean())
        cost = float(costs[idx].mean())
        if fallback is None or (acc, -cost) > (fallback[0], -fallback[1]):
            fallback = (acc, cost, g)
        if acc >= reference - max_accuracy_drop - 1e-12 and (best is None or (cost, -acc) < (best[1], -best[0])):
            best = (acc, cost, g)
    chosen = best if best is not None else fallback
    assert chosen is not None
    return tuple(float(t) for t in grid[chosen[2]])
