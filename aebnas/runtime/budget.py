"""Budget controller: hold a throughput, latency or MACs target at run time by switching operating points.

A network's operating points form a ladder, cheapest first and each one more
accurate than the one below. The controller is told a target and what the
stream measured per batch (images, seconds, MACs spent); between batches it
moves up the ladder when there is slack and down when the target slips, so the
stream holds the target with the most accurate points it can afford.

How it predicts a point's cost under the current conditions:

- time: the recent batches are fitted to ``seconds = a * images + b * MACs``
  (non-negative least squares, scipy's ``nnls``). Images leave at different
  exits, so a window of a single point already spans several MACs levels; a
  busy machine raises ``a`` and ``b`` and the fit follows within a window.
  A point's expected seconds per image are then ``a + b * expected_macs``.
- MACs: the point's expected MACs on val, scaled by how far the stream's
  measured MACs per image drift from what val predicted.

For averages (images/s, mean latency, MACs per image) it holds each *reported
window*: the stream is reported in consecutive windows of ``window`` images,
and within the current one the remaining images must average the cost that
lands the window on the target. A stall or a run of hard images is paid back
inside the window it hit, and slack is spent there on dearer points; nothing
is carried into the next window, which starts from the target again. (Paying
back over a sliding window instead carries a late stall's debt into the next
window, which then overshoots; the adaptive-runtime results page compares the
two under load.) For p99 latency it picks the most accurate
point whose predicted p99 (the slowest exit path the point still sends at
least 1 % of images to) fits, corrected by the measured p99.

Pure numpy/scipy: it never touches the network; the stream runner applies the
point it names (:func:`aebnas.runtime.stream.run_controlled`).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import nnls

from aebnas.cost import NetworkCost
from aebnas.runtime.operating_points import OperatingPoint, OperatingPoints, path_costs_with
from aebnas.config_checks import ConfigError, check_int, check_number

log = logging.getLogger("aebnas.runtime.budget")

# The time model (the MACs drift for a MACs target) is refreshed at a decision once this many images have run
# since the last refresh; a p99 target, which reads the window's slowest 1 % and not an average to steer image by
# image, is decided on at most this often (and at each window's start).
REFIT_IMAGES = 20

# target kind -> (unit, whether the stream must stay at or above it)
KINDS: dict[str, tuple[str, bool]] = {
    "images_per_s": ("images/s", True),
    "latency_ms": ("ms mean latency per batch", False),
    "p99_latency_ms": ("ms p99 latency per batch", False),
    "macs_per_image": ("MACs per image", False),
}


@dataclass(frozen=True)
class Budget:
    """One target: ``images_per_s`` (at least), ``latency_ms`` / ``p99_latency_ms`` (at most, per batch) or
    ``macs_per_image`` (at most)."""

    kind: str
    value: float

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"budget: unknown target '{self.kind}'; use one of {list(KINDS)}")
        check_number(self.value, f"budget.{self.kind}", 0.0, lo_open=True)

    @property
    def at_least(self) -> bool:
        return KINDS[self.kind][1]

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}"


def budget_from(cfg: Mapping[str, Any]) -> Budget | None:
    """The one target set in a ``budget`` config section (the others null), or None when none is set."""
    given = [k for k in KINDS if cfg.get(k) is not None]
    if len(given) > 1:
        raise ConfigError(f"budget: give one target, got {given}; set the others to null")
    if not given:
        return None
    return Budget(given[0], check_number(cfg[given[0]], f"budget.{given[0]}", 0.0, lo_open=True))


@dataclass(frozen=True)
class Switch:
    """One change of operating point, as logged."""

    image: int                  # images streamed before the switch
    batch: int
    from_point: int             # index into the ladder (0 = cheapest)
    to_point: int
    thresholds: tuple[float | None, ...]
    reason: str                 # "slack", "over budget", "unreachable" (already at the cheapest) or "new target"
    window_value: float         # the target's quantity over the last `window` images when it switched
    target: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["thresholds"] = list(self.thresholds)
        return d


@dataclass
class ControllerSettings:
    """How the controller looks and how often it moves."""

    window: int = 200           # images per reported window, each of which it holds
    interval: int = 1           # images between decisions (and one at each window's start)
    margin: float = 0.0         # aim this far inside the target (0: the window's average sits on it)
    fit_window: int = 200       # images the time model is fitted on (shorter: follows load faster, and stalls)

    def __post_init__(self):
        check_int(self.window, "budget.window", lo=2)
        check_int(self.interval, "budget.interval", lo=1)
        check_number(self.margin, "budget.margin", 0.0, 0.5)
        check_int(self.fit_window, "budget.fit_window", lo=2)


class BudgetController:
    """Chooses an operating point between batches to hold ``budget`` with the best accuracy it can.

    ``observe`` after every batch; it returns the ladder index to run next. Every switch is logged and kept
    in ``switches``. ``cost`` (the network's :class:`NetworkCost`) is needed for a p99 target only.
    """

    def __init__(self, points: OperatingPoints | Sequence[OperatingPoint], budget: Budget,
                 cost: NetworkCost | None = None, batch_size: int = 1,
                 settings: ControllerSettings | None = None, start: int | None = None):
        ladder = list(points.points if isinstance(points, OperatingPoints) else points)
        if not ladder:
            raise ConfigError("budget: the network has no operating points")
        order = sorted(range(len(ladder)), key=lambda i: (ladder[i].expected_macs, ladder[i].val_accuracy))
        self.ladder = [ladder[i] for i in order]
        self.macs = np.array([p.expected_macs for p in self.ladder])
        self.accuracy = np.array([p.val_accuracy for p in self.ladder])
        self.batch_size = check_int(batch_size, "batch_size", lo=1)
        self.settings = settings or ControllerSettings()
        self.cost = cost
        self._paths = self._exit_paths(cost) if cost is not None else None
        self.budget = budget
        self._check_static_reach(budget)
        self.index = len(self.ladder) - 1 if start is None else int(start)
        self.images = 0
        self.batches = 0
        self.switches: list[Switch] = []
        self._history: deque[tuple[int, float, float, float]] = deque()  # (images, seconds, MACs, expected MACs)
        self._history_images = 0  # the deque spans max(window, fit_window) images
        self._block = -1  # the reported window the last batch started in, and what its batches so far held:
        self._block_images, self._block_seconds, self._block_macs = 0, 0.0, 0.0
        self._block_goal = 0.0  # the per-image goal summed over its images, each at the target it ran under
        self._since_decision = 0
        self._since_refit = 0
        self._fit: tuple[float, float] | None = None  # seconds per image = a + b * MACs
        self._drift = 1.0  # measured MACs per image over what val predicted, refreshed with the fit
        self._costs: list[float] = []
        self._costs_key: object = object()  # what _costs was computed for (never equal to a fit at first)

    # --- what the network offers -------------------------------------------------------------------------

    def _exit_paths(self, cost: NetworkCost) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per point: MACs of each exit's path (heads of exits that are off cost nothing) and its exit rates."""
        return [(path_costs_with(cost, np.isfinite(p.threshold_array())), np.asarray(p.exit_rates, dtype=float))
                for p in self.ladder]

    def _check_static_reach(self, budget: Budget) -> None:
        if budget.kind == "p99_latency_ms" and self.cost is None:
            raise ConfigError("budget.p99_latency_ms: needs the network's cost (cost=...) to know each exit's path")
        if budget.kind == "macs_per_image" and budget.value < self.macs[0] * (1 - 1e-9):
            raise ConfigError(f"budget.macs_per_image: {budget.value:g} is below the cheapest operating point; "
                              f"the points reach {self.macs[0]:g}..{self.macs[-1]:g} expected MACs per image")

    @property
    def point(self) -> OperatingPoint:
        return self.ladder[self.index]

    def _recent(self, images: int) -> list[tuple[int, float, float, float]]:
        """The latest batches that cover ``images`` images (all of them when fewer were seen), oldest first."""
        rows, n_seen = [], 0
        for obs in reversed(self._history):
            if n_seen >= images:
                break
            rows.append(obs)
            n_seen += obs[0]
        return rows[::-1]

    # --- the cost model ------------------------------------------------------------------------------------

    def _refit(self) -> None:
        """Fit ``seconds = a * images + b * MACs`` on the last ``fit_window`` images' batches."""
        rows = self._recent(self.settings.fit_window)
        if not rows:
            return
        data = np.array(rows, dtype=float)
        n, t, m = data[:, 0], data[:, 1], data[:, 2]
        per_image = m / n
        spread = per_image.std() / max(per_image.mean(), 1e-12)
        if len(rows) >= 8 and spread > 0.05:
            scale = max(m.mean() / n.mean(), 1e-12)  # columns of like size, so nnls is well conditioned
            (a, b), _ = nnls(np.column_stack([n, m / scale]), t)
            if b > 0:
                self._fit = (float(a), float(b / scale))
                return
        # one MACs level only (or a fit without a MACs term): keep the shape, follow the level
        a, b = self._fit if self._fit is not None else (0.0, 1.0)
        predicted = a * n.sum() + b * m.sum()
        if predicted > 0:
            k = t.sum() / predicted
            self._fit = (a * k, b * k)

    def per_image_cost(self) -> np.ndarray:
        """Each point's predicted cost per image now, in the target's base unit (seconds, or MACs)."""
        if self.budget.kind == "macs_per_image":
            return self.macs * self._drift
        a, b = self._fit if self._fit is not None else (0.0, 0.0)
        return a + b * self.macs

    def _macs_drift(self) -> float:
        """Measured MACs per image over the window relative to what val predicted for the points that ran."""
        rows = self._recent(self.settings.window)
        spent = sum(o[2] for o in rows)
        expected = sum(o[3] for o in rows)
        return spent / expected if expected > 0 else 1.0

    def predicted(self) -> np.ndarray:
        """Each point's predicted value in the target's own units (images/s, ms, or MACs per image)."""
        u = self.per_image_cost()
        kind = self.budget.kind
        if kind == "images_per_s":
            return np.where(u > 0, 1.0 / np.maximum(u, 1e-12), np.inf)
        if kind == "latency_ms":
            return u * self.batch_size * 1e3
        if kind == "p99_latency_ms":
            return self._predicted_p99() * 1e3
        return u

    def _predicted_p99(self) -> np.ndarray:
        """Per point, the p99 per-batch latency in seconds: at batch 1 the slowest exit path that still takes
        at least 1 % of images; at larger batches the mean batch time. Scaled by the window's measured p99."""
        a, b = self._fit if self._fit is not None else (0.0, 0.0)
        assert self._paths is not None
        out = np.empty(len(self.ladder))
        for i, (paths, rates) in enumerate(self._paths):
            if self.batch_size == 1:
                times = a + b * paths
                order = np.argsort(times)
                cum = np.cumsum(rates[order])
                out[i] = times[order][min(int(np.searchsorted(cum, 0.99 - 1e-9)), len(order) - 1)]
            else:
                out[i] = self.batch_size * (a + b * self.macs[i])
        rows = self._recent(self.settings.window)
        if len(rows) >= 20:  # the linear model misses stalls and jitter; the window's own p99 does not
            seconds = np.array([o[1] for o in rows])
            modelled = np.array([a * o[0] + b * o[2] for o in rows])
            ratio = float(np.percentile(seconds, 99)) / max(float(np.percentile(modelled, 99)), 1e-12)
            out = out * max(ratio, 1.0)
        return out

    # --- the window --------------------------------------------------------------------------------------

    def window_value(self) -> float:
        """The target's quantity over the last ``window`` images, in the target's units (nan before any batch)."""
        rows = self._recent(self.settings.window)
        if not rows:
            return math.nan
        n = sum(o[0] for o in rows)
        t = sum(o[1] for o in rows)
        kind = self.budget.kind
        if kind == "images_per_s":
            return n / t if t > 0 else math.inf
        if kind == "latency_ms":
            return t / len(rows) * 1e3
        if kind == "p99_latency_ms":
            return float(np.percentile([o[1] for o in rows], 99)) * 1e3
        return sum(o[2] for o in rows) / n

    def _goal_per_image(self) -> float:
        """Target as a cost per image (seconds or MACs), aimed ``margin`` inside it."""
        v, kind, margin = self.budget.value, self.budget.kind, self.settings.margin
        if kind == "images_per_s":
            return 1.0 / (v * (1 + margin))
        if kind == "latency_ms":
            return v * (1 - margin) / 1e3 / self.batch_size
        return v * (1 - margin)

    def _required_per_image(self) -> float:
        """What the rest of the current reported window's images may cost each, so that the window as a whole
        lands on the goal; the goal itself when the next batch opens a new window. Negative when the window is
        already past saving (the cheapest point is then all that is left).

        A window holds the whole batches that start in it (as ``window_summary`` reports it), so at batch 64
        a 200-image window runs 256 images or 192, and the images left are counted in whole batches."""
        goal = self._goal_per_image()
        window = self.settings.window
        if self.images // window != self._block:
            return goal
        left = self.batch_size * math.ceil(((self._block + 1) * window - self.images) / self.batch_size)
        spent = self._block_macs if self.budget.kind == "macs_per_image" else self._block_seconds
        return (self._block_goal + left * goal - spent) / left

    # --- decisions ---------------------------------------------------------------------------------------

    def choose(self) -> tuple[int, str]:
        """The most accurate point predicted to hold the target now; the cheapest when none does."""
        if self.budget.kind == "p99_latency_ms":
            ok = np.flatnonzero(self.predicted() <= self.budget.value * (1 - self.settings.margin))
            best = int(ok.max()) if len(ok) else -1  # the ladder is ordered by accuracy
        else:
            # a point's predicted cost per image rises along the ladder (a, b >= 0; MACs sorted), so the most
            # accurate affordable point is a bisection: cheap enough to decide after every batch
            best = bisect.bisect_right(self._ladder_costs(), self._required_per_image()) - 1
        if best < 0:
            return 0, "unreachable"
        return best, "slack" if best > self.index else "over budget"

    def _ladder_costs(self) -> list[float]:
        """``per_image_cost`` as a list, kept until the time model (for MACs, the drift) is refreshed."""
        key = (self.budget.kind, self._fit, self._drift)
        if self._costs_key != key:
            self._costs, self._costs_key = self.per_image_cost().tolist(), key
        return self._costs

    def observe(self, images: int, seconds: float, macs: float, point: int | None = None) -> int:
        """Record one batch (``macs``: MACs actually spent on it); returns the ladder index for the next batch.

        ``point``: the ladder index the batch ran at, when not the controller's own (a calibration batch).
        """
        at = self.index if point is None else int(point)
        if images > self.batch_size:
            raise ValueError(f"observe: a batch of {images} images on a controller built for batch_size="
                             f"{self.batch_size}; build it with the stream's batch size")
        self._history.append((int(images), float(seconds), float(macs), float(self.macs[at] * images)))
        self._history_images += int(images)
        keep = max(self.settings.window, self.settings.fit_window)
        while self._history and self._history_images - self._history[0][0] >= keep:
            self._history_images -= self._history.popleft()[0]
        if point is None:  # the reported windows count the stream's own batches, as window_summary does
            block = self.images // self.settings.window
            if block != self._block:
                self._start_block(block)
            self._block_images += int(images)
            self._block_seconds += float(seconds)
            self._block_macs += float(macs)
            self._block_goal += self._goal_per_image() * int(images)
        self.images += int(images)
        self.batches += 1
        if point is not None:  # calibration: observed, not decided on
            return self.index
        self._since_decision += int(images)
        self._since_refit += int(images)
        opens_window = self.images // self.settings.window != self._block
        interval = self.settings.interval
        if self.budget.kind == "p99_latency_ms":
            interval = max(interval, REFIT_IMAGES)
        if self._since_decision >= interval or opens_window:
            self._since_decision = 0
            if self._since_refit >= REFIT_IMAGES:
                self._refresh_model()
            self._move(*self.choose())
        return self.index

    def _start_block(self, block: int) -> None:
        self._block = block
        self._block_images, self._block_seconds, self._block_macs, self._block_goal = 0, 0.0, 0.0, 0.0

    def _refresh_model(self) -> None:
        """Refit the time model, or for a MACs target re-measure the drift from val's MACs."""
        self._since_refit = 0
        if self.budget.kind == "macs_per_image":
            self._drift = self._macs_drift()
        else:
            self._refit()

    def _move(self, to: int, reason: str) -> None:
        if to == self.index:
            return
        switch = Switch(self.images, self.batches, self.index, to, self.ladder[to].thresholds, reason,
                        self.window_value(), self.budget.value)
        self.switches.append(switch)
        unit = KINDS[self.budget.kind][0]
        log.info("image %d: point %d -> %d (%s; window %.4g %s, target %.4g; val acc %.4f -> %.4f)", self.images,
                 self.index, to, reason, switch.window_value, unit, self.budget.value, self.accuracy[self.index],
                 self.accuracy[to])
        self.index = to

    def set_budget(self, budget: Budget) -> None:
        """A new target mid-stream: the window's history stays (it is what the machine does now)."""
        self._check_static_reach(budget)
        log.info("image %d: new target %s (was %s)", self.images, budget, self.budget)
        old_kind, self.budget = self.budget.kind, budget
        if budget.kind != old_kind:  # the window so far is then held to the new target, in the new units
            self._block_goal = self._goal_per_image() * self._block_images
        self._since_decision = 0
        self._refresh_model()
        to, _ = self.choose()
        self._move(to, "new target")

    # --- calibration -------------------------------------------------------------------------------------

    def reachable(self) -> tuple[float, float]:
        """The target's quantity at the cheapest and at the most accurate point, as the model predicts now."""
        v = self.predicted()
        return float(v[0]), float(v[-1])

    def finish_calibration(self) -> None:
        """After a few batches observed at chosen points: refuse a target no point reaches (beyond a 10 %
        tolerance, the hold's own), then start the stream from the window's history cleared."""
        self._refresh_model()
        cheap, dear = self.reachable()
        unit = KINDS[self.budget.kind][0]
        v = self.budget.value
        fastest = cheap
        if self.budget.at_least and v > fastest * 1.1:
            raise ConfigError(f"budget.{self.budget.kind}: {v:g} is beyond what any operating point reaches here "
                              f"(about {dear:.4g}..{fastest:.4g} {unit} at batch {self.batch_size}, measured in "
                              f"calibration); ask for at most {fastest:.4g}")
        if not self.budget.at_least and v < fastest / 1.1:
            raise ConfigError(f"budget.{self.budget.kind}: {v:g} is below what any operating point reaches here "
                              f"(about {fastest:.4g}..{dear:.4g} {unit} at batch {self.batch_size}, measured in "
                              f"calibration); ask for at least {fastest:.4g}")
        # the fit (and a MACs target's drift) measured in calibration carry into the stream; its history does not
        self._history.clear()
        self._history_images = 0
        self.images = self.batches = self._since_decision = self._since_refit = 0
        self._start_block(-1)
        self.index = self.choose()[0]  # no window yet: the choice as at any window's start, on the goal itself
