"""Which few of the inner search's predicted networks get trained: a spread along the predicted front.

Greedy max-min (farthest-point) selection in normalised objective space,
seeded with the trained front: each pick is the predicted point farthest from
everything already trained on the front or already picked. It covers the
front's ends and fills its widest gaps first, where a trained network adds the
most hypervolume, needs no random draw (a resumed search picks the same), and
works for any number of objectives. Reference directions (MSuNAS) assume a
front spanning the whole simplex; k-medoids would ignore what is already
trained.
"""

from __future__ import annotations

import numpy as np
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting


def spread_subset(F: np.ndarray, k: int, covered: np.ndarray | None = None, cv: np.ndarray | None = None) -> list[int]:
    """Indices of ``k`` rows of ``F`` (objectives, minimised) spread along its best fronts.

    Rows are taken front by front (non-dominated rank, feasible before
    infeasible by ``cv``, the constraint violation); within the front that does
    not fit whole, farthest-point picks decide, distances measured after scaling
    every objective to [0, 1] over ``F`` and ``covered`` (the points already
    trained), which also count as picked. Fewer rows than ``k``: all of them.
    """
    F = np.asarray(F, dtype=float)
    n = len(F)
    if k >= n:
        return list(range(n))
    covered = np.zeros((0, F.shape[1])) if covered is None else np.asarray(covered, dtype=float).reshape(-1, F.shape[1])
    both = np.vstack([F, covered])
    lo, span = both.min(axis=0), np.ptp(both, axis=0)
    span[span == 0] = 1.0
    Z, C = (F - lo) / span, (covered - lo) / span
    cv = np.zeros(n) if cv is None else np.asarray(cv, dtype=float)
    chosen: list[int] = []
    for feasible in (True, False):
        idx = np.flatnonzero((cv <= 0) == feasible)
        if not len(idx):
            continue
        # feasible rows front by front; infeasible ones least violation first
        fronts = NonDominatedSorting().do(F[idx]) if feasible else [np.argsort(cv[idx], kind="stable")]
        for front in fronts:
            rows = idx[np.asarray(front)]
            need = k - len(chosen)
            if len(rows) <= need:
                chosen += sorted(int(r) for r in rows)
            else:
                chosen += _farthest(Z, rows, np.vstack([C, Z[chosen]]) if chosen else C, need)
            if len(chosen) == k:
                return chosen
    return chosen


def _farthest(Z: np.ndarray, rows: np.ndarray, anchors: np.ndarray, need: int) -> list[int]:
    """``need`` of ``rows`` by farthest-point picks from ``anchors``; with no anchors, the front's ends first."""
    rows = list(int(r) for r in rows)
    picked: list[int] = []
    if not len(anchors):  # the extremes of each objective, then farthest-point
        for m in range(Z.shape[1]):
            if len(picked) < need:
                r = min((r for r in rows if r not in picked), key=lambda r: (Z[r, m], r))
                picked.append(r)
        anchors = Z[picked]
    dist = np.min(np.linalg.norm(Z[rows][:, None, :] - anchors[None, :, :], axis=-1), axis=1)
    for i, r in enumerate(rows):
        if r in picked:
            dist[i] = -np.inf
    while len(picked) < need:
        i = int(np.argmax(dist))  # ties: the first row
        picked.append(rows[i])
        dist = np.minimum(dist, np.linalg.norm(Z[rows] - Z[rows[i]], axis=-1))
        dist[i] = -np.inf
    return picked
