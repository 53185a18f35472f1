"""Pareto utilities on plain arrays (pymoo's non-dominated sorting and hypervolume; no torch)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting


def non_dominated_mask(F: np.ndarray) -> np.ndarray:
    """Rows of ``F`` (all objectives minimised) that no other row dominates; exact duplicates all stay."""
    F = np.asarray(F, dtype=float)
    mask = np.zeros(len(F), dtype=bool)
    if len(F):
        mask[NonDominatedSorting().do(F, only_non_dominated_front=True)] = True
    return mask


def hypervolume_2d(F: np.ndarray, reference: Sequence[float]) -> float:
    """Volume (an area for two objectives) dominated by a minimised set up to ``reference``; points that do not
    dominate the reference add nothing."""
    F = np.asarray(F, dtype=float)
    ref = np.asarray(reference, dtype=float)
    F = F[np.all(F < ref, axis=1)] if len(F) else F
    return float(HV(ref_point=ref)(F)) if len(F) else 0.0
