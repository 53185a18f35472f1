"""Pareto utilities on plain arrays and DataFrames (numpy only, no torch)."""

from __future__ import annotations

import numpy as np


def non_dominated_mask(F: np.ndarray) -> np.ndarray:
    """Rows of ``F`` (all objectives minimised) that no other row dominates; exact duplicates all stay."""
    F = np.asarray(F, dtype=float)
    n = len(F)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        if not mask[i]:
            continue
        dominated_by = np.all(F <= F[i], axis=1) & np.any(F < F[i], axis=1)
        if dominated_by.any():
            mask[i] = False
    return mask


def hypervolume_2d(F: np.ndarray, reference: tuple[float, float]) -> float:
    """Area dominated by a 2-objective (minimised) set up to ``reference``."""
    F = np.asarray(F, dtype=float)
    F = F[np.all(F < np.asarray(reference), axis=1)]
    if len(F) == 0:
        return 0.0
    F = F[non_dominated_mask(F)]
    F = F[np.argsort(F[:, 0])]
    area, prev_y = 0.0, reference[1]
    for x, y in F:
        if y < prev_y:
            area += (reference[0] - x) * (prev_y - y)
            prev_y = y
    return float(area)
