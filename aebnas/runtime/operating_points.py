"""Operating points: the Pareto set of threshold vectors a deployed network can switch between.

A network's thresholds trade accuracy for cost. Given its per-exit logits on
the validation split, every threshold vector's accuracy and expected MACs
follow without running the network again (the rule of
:mod:`aebnas.exits`), so the whole trade-off curve is computed once,
stored beside the model, and a runtime picks a point from it by name, by an
accuracy floor or by a cost budget, and may switch between batches.

An exit can also be switched *off* (threshold ``None``): its head is then not
evaluated at all, so a sample that leaves later does not pay for it.

Val accuracy is a noisy estimate (one standard error on 5,000 images is about
0.4 points at 92 %), so the points carry their uncertainty and the named points
are stated in standard errors: a point is *indistinguishable from the best* when
its val accuracy is within ``k`` standard errors of the most accurate point's.
The standard error used there is that of the *difference*, paired over the same
val images: two points that route most images the same way share most of their
noise, so their difference is known far better than either accuracy alone.

One name, ``bounded_loss``, is anchored on the static network instead: the
cheapest point whose val loss against the final exit, plus ``z`` paired
standard errors, stays within an allowed loss. Its allowance does not vanish
when the best point beats its neighbours by a handful of val images, which is
where the rules relative to the best point pay dearly in MACs.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from aebnas.cost import NetworkCost, expected_cost
from aebnas.atomic_write import write_text_atomic
from aebnas.exits import METRICS, confidence, exit_indices
from aebnas.config_checks import ConfigError

FILE_NAME = "operating_points.json"
FORMAT = 3  # 2: points carry standard errors and the names are stated in them; 3: adds bounded_loss
DEFAULT_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)
# Named points: the cheapest point whose val accuracy is at most this many standard errors (of the paired
# difference) under the most accurate point's. 1 SE: no evidence it is worse; 2 SE: about the edge of a
# 95 % two-sided test; 4 SE: clearly worse, for when energy matters more than the last points.
DEFAULT_NAMED_DROPS = {"max_accuracy": 1.0, "balanced": 2.0, "min_energy": 4.0}
# bounded_loss: the cheapest point whose val loss against the static network (the final exit alone), plus z
# paired standard errors, is at most this many points of accuracy. An upper bound at z = 1 on a loss of half a
# point keeps what the static network's users would notice small, on any val split size.
DEFAULT_LOSS_BOUND = {"points": 0.5, "z": 1.0}
NAMES = ("bounded_loss", "max_accuracy", "balanced", "min_energy")


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
    val_accuracy_se: float = 0.0        # binomial standard error of val_accuracy
    se_vs_best: float = 0.0             # standard error of (best val accuracy - this one), paired over val images
    se_vs_reference: float | None = None  # the same against the final exit alone (None: loaded from a file without it)

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
    named_drops: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_NAMED_DROPS))  # in standard errors
    genome: str = ""                    # the network these points belong to (canonical genome text)
    n_val: int = 0                      # val images the accuracies were measured on
    reference_accuracy_se: float = 0.0
    loss_bound: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSS_BOUND))  # bounded_loss's rule
    format: int = FORMAT                # of the file it came from (older formats are recomputed on first use)

    @property
    def best(self) -> OperatingPoint:
        """The most accurate point on val (the cheapest of equals)."""
        return self.points[most_accurate(self.points)]

    def reachable(self) -> str:
        """What the stored points span, for error messages."""
        acc = [p.val_accuracy for p in self.points]
        macs = [p.expected_macs for p in self.points]
        return (f"its {len(self.points)} points reach val accuracy {min(acc):.4f}..{max(acc):.4f} at "
                f"{min(macs):g}..{max(macs):g} expected MACs")

    def by_name(self, name: str) -> OperatingPoint:
        if name not in self.named:
            known = f"use one of {sorted(self.named)}" if self.named else "it has no named points"
            raise OperatingPointError(f"operating_point: '{name}' is not defined for this network ({known}); "
                                      f"{self.reachable()}; ask with min_accuracy or max_macs in that range")
        return self.points[self.named[name]]

    def by_accuracy_floor(self, floor: float) -> OperatingPoint:
        """The cheapest point whose val accuracy reaches ``floor`` (a fraction, e.g. 0.9)."""
        ok = [p for p in self.points if p.val_accuracy >= floor - 1e-12]
        if not ok:
            raise OperatingPointError(f"operating_point.min_accuracy: {floor} is above the best val accuracy "
                                      f"{self.best.val_accuracy:.4f}; {self.reachable()}")
        return min(ok, key=lambda p: (p.expected_macs, -p.val_accuracy))

    def by_budget(self, max_macs: float) -> OperatingPoint:
        """The most accurate point whose expected MACs per image stay within ``max_macs``."""
        ok = [p for p in self.points if p.expected_macs <= max_macs + 1e-9]
        if not ok:
            cheapest = min(p.expected_macs for p in self.points)
            raise OperatingPointError(f"operating_point.max_macs: {max_macs:g} is below the cheapest point "
                                      f"({cheapest:g} expected MACs); {self.reachable()}")
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
        return {"format": FORMAT, "metric": self.metric, "n_val": self.n_val,
                "reference_accuracy": self.reference_accuracy, "reference_accuracy_se": self.reference_accuracy_se,
                "static_macs": self.static_macs, "named": self.named,
                "named_rule": "cheapest point with best val accuracy - its val accuracy <= k * se_vs_best",
                "named_drops": self.named_drops,
                "bounded_loss_rule": "cheapest point with (reference_accuracy - val accuracy) + z * se_vs_reference "
                                     "<= points / 100; the most accurate point when none is",
                "loss_bound": self.loss_bound, "genome": self.genome,
                "points": [{**asdict(p), "thresholds": list(p.thresholds), "exit_rates": list(p.exit_rates)}
                           for p in self.points]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OperatingPoints":
        points = [OperatingPoint(tuple(p["thresholds"]), float(p["val_accuracy"]), float(p["expected_macs"]),
                                 tuple(p["exit_rates"]), float(p.get("val_accuracy_se", 0.0)),
                                 float(p.get("se_vs_best", 0.0)),
                                 None if p.get("se_vs_reference") is None else float(p["se_vs_reference"]))
                  for p in d["points"]]
        return cls(metric=d["metric"], reference_accuracy=float(d["reference_accuracy"]),
                   static_macs=float(d["static_macs"]), points=points, named=dict(d["named"]),
                   named_drops=dict(d["named_drops"]), genome=str(d.get("genome", "")), n_val=int(d.get("n_val", 0)),
                   reference_accuracy_se=float(d.get("reference_accuracy_se", 0.0)),
                   loss_bound=dict(d.get("loss_bound", DEFAULT_LOSS_BOUND)), format=int(d.get("format", 1)))

    @property
    def is_current(self) -> bool:
        """Written in this format (older files lack standard errors or the ``bounded_loss`` name)."""
        return self.format == FORMAT and self.n_val > 0

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


@dataclass(frozen=True, eq=False)
class GridOutcomes:
    """Every threshold vector of a grid on one labelled split: per image right or wrong, expected MACs, exit rates.

    Kept apart from the Pareto set so that other ways of choosing a point (and the benchmarks that judge
    them) see exactly the outcomes the named points are chosen from.
    """

    vectors: np.ndarray          # [G, n_early], inf where the exit is off
    hits: np.ndarray             # [G, N] bool: the image is classified right under vector g
    expected_macs: np.ndarray    # [G]
    exit_rates: np.ndarray       # [G, n_exits]
    final_hits: np.ndarray       # [N] bool: right at the final exit (the static network)

    @cached_property
    def accuracy(self) -> np.ndarray:
        """Per vector, the share of images right (computed once: every rule that chooses reads it)."""
        return self.hits.mean(axis=1)


def grid_outcomes(exit_logits: np.ndarray, labels: np.ndarray, cost: NetworkCost, metric: str = "max_softmax",
                  grid: Sequence[float] = DEFAULT_GRID) -> GridOutcomes:
    """Outcomes of every vector over ``grid`` plus "off" per early exit (``exit_logits``: [n_exits, N, C])."""
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
    hits = np.empty((len(vectors), n), dtype=bool)
    exp_cost = np.empty(len(vectors))
    rates = np.empty((len(vectors), n_exits))
    for g, thr in enumerate(vectors):
        idx = exit_indices(conf, thr)
        hits[g] = correct[idx, cols]
        rates[g] = np.bincount(idx, minlength=n_exits) / n
        exp_cost[g] = expected_cost(rates[g], path_costs_with(cost, np.isfinite(thr)))
    return GridOutcomes(vectors, hits, exp_cost, rates, correct[-1].copy())


def compute_operating_points(exit_logits: np.ndarray, labels: np.ndarray, cost: NetworkCost,
                             metric: str = "max_softmax", grid: Sequence[float] = DEFAULT_GRID,
                             named_drops: Mapping[str, float] | None = None,
                             loss_bound: Mapping[str, float] | None = None) -> OperatingPoints:
    """Pareto set of threshold vectors (val accuracy vs expected MACs) over ``grid`` plus "off" per exit.

    ``exit_logits`` is [n_exits, N, C] (early exits first, final last), as
    :func:`aebnas.train.predict_logits` returns. Vectorised over samples; the
    grid has ``(len(grid) + 1) ** n_early_exits`` points. ``named_drops`` sets the names stated against the
    best point (in standard errors), ``loss_bound`` (``points``, ``z``) the one stated against the static network.
    """
    drops = check_named_drops(DEFAULT_NAMED_DROPS if named_drops is None else named_drops)
    bound = check_loss_bound(DEFAULT_LOSS_BOUND if loss_bound is None else loss_bound)
    outcomes = grid_outcomes(exit_logits, labels, cost, metric, grid)
    hits, exp_cost, n = outcomes.hits, outcomes.expected_macs, outcomes.hits.shape[1]
    acc = outcomes.accuracy
    keep = _pareto_order(1.0 - acc, exp_cost)
    best = keep[-1]  # the front is cheapest first, so its last point is the most accurate
    paired = paired_standard_errors(hits[keep], hits[best])
    vs_reference = paired_standard_errors(hits[keep], outcomes.final_hits)
    points = [OperatingPoint(tuple(None if math.isinf(t) else float(t) for t in outcomes.vectors[g]),
                             float(acc[g]), float(exp_cost[g]), tuple(float(r) for r in outcomes.exit_rates[g]),
                             binomial_se(acc[g], n), float(se), float(se_ref))
              for g, se, se_ref in zip(keep, paired, vs_reference)]
    reference = float(outcomes.final_hits.mean())
    named = {"bounded_loss": bounded_loss_point(points, reference, bound["points"], bound["z"]),
             **name_points(points, drops)}
    return OperatingPoints(metric=metric, reference_accuracy=reference, static_macs=float(cost.static_macs),
                           points=points, named=named, named_drops=drops, n_val=int(n),
                           reference_accuracy_se=binomial_se(reference, n), loss_bound=bound)


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` independent images."""
    return float(math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / n)) if n else math.nan


def paired_standard_errors(hits: np.ndarray, reference_hits: np.ndarray) -> np.ndarray:
    """Standard error of ``mean(reference_hits) - mean(hits[i])`` per row, paired over the same images.

    Only the images on which the two disagree carry noise: ``sd(ref - hit) / sqrt(n)``.
    """
    d = reference_hits[None, :].astype(float) - np.asarray(hits, dtype=float)
    n = d.shape[1]
    return d.std(axis=1) / math.sqrt(n)


def check_named_drops(drops: Mapping[str, float]) -> dict[str, float]:
    """Every name has a finite, non-negative drop in standard errors; the three standard names are present."""
    out = {}
    for name, k in drops.items():
        if name == "bounded_loss":
            raise ConfigError("named_drops.bounded_loss: that name is stated against the static network, not in "
                              "standard errors of the best point; set it with loss_bound={points: ..., z: ...}")
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not math.isfinite(k) or k < 0:
            raise ConfigError(f"named_drops.{name}: expected a number of standard errors >= 0, got {k!r}")
        out[str(name)] = float(k)
    missing = [n for n in DEFAULT_NAMED_DROPS if n not in out]
    if missing:
        raise ConfigError(f"named_drops: no drop for {missing}; give each of {list(DEFAULT_NAMED_DROPS)} a number of "
                          "standard errors, e.g. {max_accuracy: 1, balanced: 2, min_energy: 4}")
    return out


def most_accurate(points: Sequence[OperatingPoint]) -> int:
    """Index of the most accurate point on val, the cheapest of equals: what every name falls back to."""
    return max(range(len(points)), key=lambda i: (points[i].val_accuracy, -points[i].expected_macs))


def name_points(points: Sequence[OperatingPoint], drops: Mapping[str, float]) -> dict[str, int]:
    """Each name: the cheapest point whose val accuracy is within ``drop`` standard errors of the best point's.

    The standard error is the point's ``se_vs_best`` (paired over the val images). The best point
    always qualifies (its difference is zero), so every name is defined.
    """
    top = points[most_accurate(points)].val_accuracy
    named = {}
    for name, k in drops.items():
        ok = [i for i, p in enumerate(points) if top - p.val_accuracy <= k * p.se_vs_best + 1e-12]
        named[name] = min(ok, key=lambda i: (points[i].expected_macs, -points[i].val_accuracy))
    return named


def check_loss_bound(bound: Mapping[str, float]) -> dict[str, float]:
    """``points`` (allowed loss, in points of accuracy) and ``z`` (standard errors added to the loss), both >= 0."""
    unknown = sorted(set(bound) - set(DEFAULT_LOSS_BOUND))
    if unknown:
        raise ConfigError(f"loss_bound: unknown key {unknown}; give points (allowed loss in points of accuracy) and z "
                          "(paired standard errors added to it), e.g. {points: 0.5, z: 1}")
    out = dict(DEFAULT_LOSS_BOUND)
    for key, value in bound.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"loss_bound.{key}: expected a number >= 0, got {value!r}")
        out[key] = float(value)
    return out


def bounded_loss_point(points: Sequence[OperatingPoint], reference_accuracy: float, allowed_points: float,
                       z: float) -> int:
    """The cheapest point whose val loss against the static network plus ``z`` paired standard errors is within
    ``allowed_points``; the most accurate point when none is (a val split too small to bound any loss).

    Anchored on the static network, the allowance does not shrink to nothing when the best point beats its
    cheaper neighbours by a few val images: a ladder of nested thresholds often has such a best point, and the
    rules stated against it then keep the dearest thresholds for a gain the val split cannot show.
    """
    if any(p.se_vs_reference is None for p in points):
        raise ValueError("bounded_loss_point: every point needs se_vs_reference (recompute the operating points)")
    ok = [i for i, p in enumerate(points)
          if (reference_accuracy - p.val_accuracy) + z * p.se_vs_reference <= allowed_points / 100 + 1e-12]
    if not ok:
        return most_accurate(points)
    return min(ok, key=lambda i: (points[i].expected_macs, -points[i].val_accuracy))
