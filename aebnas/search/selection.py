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

from collections import Counter
from typing import Hashable, Sequence

import numpy as np
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting


def spread_subset(F: np.ndarray, k: int, covered: np.ndarray | None = None, cv: np.ndarray | None = None,
                  groups: Sequence[Hashable] | None = None, cap: int | None = None) -> list[int]:
    """Indices of ``k`` rows of ``F`` (objectives, minimised) spread along its best fronts.

    Rows are taken front by front (non-dominated rank, feasible before
    infeasible by ``cv``, the constraint violation); within the front that does
    not fit whole, farthest-point picks decide, distances measured after scaling
    every objective to [0, 1] over ``F`` and ``covered`` (the points already
    trained), which also count as picked. Fewer rows than ``k``: all of them.
    With ``cap`` and ``groups`` (a label per row), a row whose group already has
    ``cap`` picks is passed over; only when every other feasible row is used up
    are the remaining feasible picks made without the cap, and only then do
    infeasible rows come in (capped first too), so ``k`` rows still come back
    and a feasible row is never passed over for an infeasible one.
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
    if cap is None or groups is None:
        return _spread(F, Z, C, cv, k, None, None)
    groups = list(groups)
    if len(groups) != n:
        raise ValueError(f"spread_subset: {len(groups)} groups for {n} rows; give one label per row")
    chosen: list[int] = []
    for feasible in (True, False):
        for bound in (cap, None):  # within the cap, then what is left without it
            if len(chosen) == k:
                return chosen
            anchors = np.vstack([C, Z[chosen]]) if chosen else C
            chosen += _spread(F, Z, anchors, cv, k - len(chosen), groups if bound is not None else None, bound,
                              skip=set(chosen), phases=(feasible,), count=Counter(groups[r] for r in chosen))
    return chosen


def _spread(F: np.ndarray, Z: np.ndarray, C: np.ndarray, cv: np.ndarray, k: int, groups: list | None,
            cap: int | None, skip: set[int] = frozenset(), phases: tuple[bool, ...] = (True, False),
            count: Counter | None = None) -> list[int]:
    """Up to ``k`` rows front by front (see ``spread_subset``), none of ``skip``, feasible rows and then infeasible
    ones (``phases``), at most ``cap`` per group counting the picks already made (``count``)."""
    n = len(F)
    count = Counter(count or {})
    chosen: list[int] = []

    def open_(r: int) -> bool:
        return r not in skip and (groups is None or count[groups[r]] < cap)

    for feasible in phases:
        idx = np.flatnonzero(((cv <= 0) == feasible) & np.array([r not in skip for r in range(n)], dtype=bool))
        if not len(idx):
            continue
        # feasible rows front by front; infeasible ones least violation first
        fronts = NonDominatedSorting().do(F[idx]) if feasible else [np.argsort(cv[idx], kind="stable")]
        for front in fronts:
            rows = np.array([r for r in idx[np.asarray(front)] if open_(int(r))], dtype=np.int64)
            need = k - len(chosen)
            if not len(rows):
                continue
            if len(rows) <= need and (groups is None or _fits(rows, groups, count, cap)):
                picked = sorted(int(r) for r in rows)
            else:
                picked = _farthest(Z, rows, np.vstack([C, Z[chosen]]) if chosen else C, need, groups, cap, count)
            if groups is not None:
                count.update(groups[r] for r in picked)
            chosen += picked
            if len(chosen) == k:
                return chosen
    return chosen


def _fits(rows: np.ndarray, groups: list, count: Counter, cap: int) -> bool:
    """Whether taking all of ``rows`` keeps every group within ``cap``."""
    return all(count[g] + a <= cap for g, a in Counter(groups[r] for r in rows).items())


def _farthest(Z: np.ndarray, rows: np.ndarray, anchors: np.ndarray, need: int, groups: list | None = None,
              cap: int | None = None, count: Counter | None = None) -> list[int]:
    """Up to ``need`` of ``rows`` by farthest-point picks from ``anchors``, at most ``cap`` per group (``count``:
    picks so far); with no anchors, the front's ends first."""
    rows = list(int(r) for r in rows)
    count = Counter(count or {})
    picked: list[int] = []

    def take(r: int) -> None:
        picked.append(r)
        if groups is not None:
            count[groups[r]] += 1

    def full(r: int) -> bool:
        return r in picked or (groups is not None and count[groups[r]] >= cap)

    if not len(anchors):  # the extremes of each objective, then farthest-point
        for m in range(Z.shape[1]):
            left = [r for r in rows if not full(r)]
            if len(picked) < need and left:
                take(min(left, key=lambda r: (Z[r, m], r)))
        if not picked:
            return picked
        anchors = Z[picked]
    dist = np.min(np.linalg.norm(Z[rows][:, None, :] - anchors[None, :, :], axis=-1), axis=1)
    while len(picked) < need:
        for i, r in enumerate(rows):
            if full(r):
                dist[i] = -np.inf
        i = int(np.argmax(dist))  # ties: the first row
        if dist[i] == -np.inf:
            break
        take(rows[i])
        dist = np.minimum(dist, np.linalg.norm(Z[rows] - Z[rows[i]], axis=-1))
    return picked
