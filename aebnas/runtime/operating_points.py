"""Operating points: the Pareto set of threshold vectors a deployed network can switch between.

A network's thresholds trade accuracy for cost. Given its per-exit logits on
the validation split, every threshold vector's accuracy and expected MACs
follow without running the network again (the rule of
:mod:`aebnas.search.thresholds`), so the whole trade-off curve is computed once,
stored beside the model, and a runtime picks a point from it by name, by an
accuracy floor or by a cost budget, and may switch between batches.

An exit can also be switched *off* (threshold ``None``): its head is then not
evaluated at all, so a sample that leaves later does not pay for it.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from aebnas.cost import NetworkCost, expected_cost
from aebnas.search.archive import write_text_atomic
from aebnas.search.thresholds import METRICS, confidence, exit_indices
from aebnas.config_checks import ConfigError

FILE_NAME = "operating_points.json"
DEFAULT_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)
# Named points: the cheapest point whose val accuracy stays within this drop of the final exit's
# (max_accuracy is the most accurate point whatever it costs).
DEFAULT_NAMED_DROPS = {"balanced": 0.005, "min_energy": 0.02}
NAMES = ("max_accuracy", "balanced", "min_energy")


class OperatingPointError(ConfigError):
    """No stored operating point satisfies the request; the message says what is reachable."""


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold vector and how it did on the validation split.

    ``thresholds`` has one entry per early exit; ``None`` switches that exit off.
    """

    thresholds: tuple[float | None, ...]
    val_accuracy: float
    expected_macs: float
    exit_rates: tuple[float, ...]

    def threshold_array(self) -> np.ndarray:
        """Thresholds as floats, an exit that is off as +inf (no confidence reaches it)."""
        return np.array([math.inf if t is None else t for t in self.thresholds], dtype=float)


@dataclass
class OperatingPoints:
    """The stored trade-off curve of one network, cheapest first, plus the names that point into it."""

    metric: str
    reference_accuracy: float           # final exit alone on val (the static network)
    static_macs: float
    points: list[OperatingPoint]
    named: dict[str, int] = field(default_factory=dict)
    named_drops: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_NAMED_DROPS))
    genome: str = ""                    # the network these points belong to (canonical genome text)

    def by_name(self, name: str) -> OperatingPoint:
        if name not in self.named:
            raise OperatingPointError(f"operating_point: unknown name '{name}'; use one of {sorted(self.named)}, "
                                      "an accuracy floor or a MACs budget")
        return self.points[self.named[name]]

    def by_accuracy_floor(self, floor: float) -> OperatingPoint:
        """The cheapest point whose val accuracy reaches ``floor`` (a fraction, e.g. 0.9)."""
        ok = [p for p in self.points if p.val_accuracy >= floor - 1e-12]
        if not ok:
            best = max(p.val_accuracy for p in self.points)
            raise OperatingPointError(f"operating_point.min_accuracy: {floor} is above the best val accuracy "
                                      f"{best:.4f}; ask for at most that")
        return min(ok, key=lambda p: (p.expected_macs, -p.val_accuracy))

    def by_budget(self, max_macs: float) -> OperatingPoint:
        """The most accurate point whose expected MACs per image stay within ``max_macs``."""
        ok = [p for p in self.points if p.expected_macs <= max_macs + 1e-9]
        if not ok:
            cheapest = min(p.expected_macs for p in self.points)
            raise OperatingPointError(f"operating_point.max_macs: {max_macs:g} is below the cheapest point "
                                      f"({cheapest:g} expected MACs); allow at least that")
        return max(ok, key=lambda p: (p.val_accuracy, -p.expected_macs))

    def select(self, name: str | None = None, min_accuracy: float | None = None,
               max_macs: float | None = None) -> OperatingPoint:
        """Exactly one of a name, an accuracy floor or a MACs budget."""
        given = [k for k, v in (("name", name), ("min_accuracy", min_accuracy), ("max_macs", max_macs))
                 if v is not None]
        if len(given) != 1:
            raise OperatingPointError(f"operating_point: give exactly one of name, min_accuracy or max_macs "
                                      f"(got {given or 'none'})")
        if name is not None:
            return self.by_name(name)
        if min_accuracy is not None:
            return self.by_accuracy_floor(float(min_accuracy))
        return self.by_budget(float(max_macs))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "reference_accuracy": self.reference_accuracy, "static_macs": self.static_macs,
                "named": self.named, "named_drops": self.named_drops, "genome": self.genome,
                "points": [{**asdict(p), "thresholds": list(p.thresholds), "exit_rates": list(p.exit_rates)}
                           for p in self.points]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OperatingPoints":
        points = [OperatingPoint(tuple(p["thresholds"]), float(p["val_accuracy"]), float(p["expected_macs"]),
                                 tuple(p["exit_rates"])) for p in d["points"]]
        return cls(metric=d["metric"], reference_accuracy=float(d["reference_accuracy"]),
                   static_macs=float(d["static_macs"]), points=points, named=dict(d["named"]),
                   named_drops=dict(d["named_drops"]), genome=str(d.get("genome", "")))

    def save(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / FILE_NAME
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> "OperatingPoints":
        path = Path(model_dir) / FILE_NAME
        if not path.exists():
            raise FileNotFoundError(f"operating points: no {FILE_NAME} in '{model_dir}'; compute them with "
                                    "aebnas.runtime.compute_operating_points (aebnas-stream does it on first use)")
        return cls.from_dict(json.loads(path.read_text()))


def path_costs_with(cost: NetworkCost, enabled: Sequence[bool]) -> np.ndarray:
    """Cost of leaving at each exit when only the ``enabled`` early exits evaluate their heads."""
    heads = np.array(cost.head_macs, dtype=float)
    heads[:-1] *= np.asarray(enabled, dtype=float)
    return np.cumsum(np.array(cost.segment_macs, dtype=float) + heads)


def _pareto_order(error: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Indices of the 2-D non-dominated set (min error, min cost), cheapest first, one per objective pair."""
    order = np.lexsort((error, cost))  # by cost, then error
    keep, best = [], math.inf
    for i in order:
        if error[i] < best - 1e-12:
            keep.append(i)
            best = error[i]
    return np.array(keep, dtype=int)


def compute_operating_points(exit_logits: np.ndarray, labels: np.ndarray, cost: NetworkCost,
                             metric: str = "max_softmax", grid: Sequence[float] = DEFAULT_GRID,
                             named_drops: Mapping[str, float] | None = None) -> OperatingPoints:
    """Pareto set of threshold vectors (val accuracy vs expected MACs) over ``grid`` plus "off" per exit.

    ``exit_logits`` is [n_exits, N, C] (early exits first, final last), as
    :func:`aebnas.train.predict_logits` returns. Vectorised over samples; the
    grid has ``(len(grid) + 1) ** n_early_exits`` points.
    """
    if metric not in METRICS:
        raise ConfigError(f"exit_metric: unknown metric '{metric}'; use one of {list(METRICS)}")
    logits = np.asarray(exit_logits)
    labels = np.asarray(labels)
    n_exits, n = logits.shape[:2]
    if n_exits != len(cost.head_macs):
        raise ValueError(f"exit_logits: {n_exits} exits but the network's cost has {len(cost.head_macs)}")
    conf = confidence(logits, metric)
    correct = logits.argmax(-1) == labels[None, :]
    choices = sorted(set(float(g) for g in grid)) + [math.inf]
    vectors = np.array(list(itertools.product(choices, repeat=n_exits - 1)), dtype=float).reshape(-1, n_exits - 1)
    cols = np.arange(n)
    acc = np.empty(len(vectors))
    exp_cost = np.empty(len(vectors))
    rates = np.empty((len(vectors), n_exits))
    for g, thr in enumerate(vectors):
        idx = exit_indices(conf, thr)
        acc[g] = correct[idx, cols].mean()
        rates[g] = np.bincount(idx, minlength=n_exits) / n
        exp_cost[g] = expected_cost(rates[g], path_costs_with(cost, np.isfinite(thr)))
    keep = _pareto_order(1.0 - acc, exp_cost)
    points = [OperatingPoint(tuple(None if math.isinf(t) else float(t) for t in vectors[g]), float(acc[g]),
                             float(exp_cost[g]), tuple(float(r) for r in rates[g])) for g in keep]
    reference = float(correct[-1].mean())
    drops = dict(DEFAULT_NAMED_DROPS if named_drops is None else named_drops)
    return OperatingPoints(metric=metric, reference_accuracy=reference, static_macs=float(cost.static_macs),
                           points=points, named=name_points(points, reference, drops), named_drops=drops)


def name_points(points: Sequence[OperatingPoint], reference: float, drops: Mapping[str, float]) -> dict[str, int]:
    """``max_accuracy``: the most accurate point; each other name: the cheapest within its drop of ``reference``.

    A name whose drop no point meets falls back to the most accurate point.
    """
    best = max(range(len(points)), key=lambda i: (points[i].val_accuracy, -points[i].expected_macs))
    named = {"max_accuracy": best}
    for name, drop in drops.items():
        ok = [i for i, p in enumerate(points) if p.val_accuracy >= reference - drop - 1e-12]
        named[name] = min(ok, key=lambda i: (points[i].expected_macs, -points[i].val_accuracy)) if ok else best
    return named
