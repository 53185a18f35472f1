"""Carry a latency table over to this machine by timing a few networks of its own space here.

A table sums per-operator times. Another machine runs those operators at
another speed, and not at one factor for every operator. On a 2-core Intel
Xeon VM, the 22 generic reference operators of the fingerprint ran at 0.59x
an AMD EPYC table's times, while whole networks of the table's space ran at
about 0.96x. Scaling the table by the reference set's factor took its
validation from 8 % to 39 % MAPE. So the calibration times what the table is
asked to predict: every exit path of ``PROBE_NETWORKS`` random networks of the
table's own space, in the validation's interleaved passes, seeded apart from
the validation so a validation afterwards stays out of sample. It then fits

    measured_path_ms = factor * table_sum_ms + offset_ms,   factor > 0, offset_ms >= 0

in relative error (a 0.2 ms path counts as much as a 2 ms one). Every entry is
scaled by the factor. The per-path offset becomes the table's ``overhead_ms``.
The offset stands for what a network adds beyond its operators, and it is kept
only where it makes the fit clearly better than the factor alone. It is never
negative: a fit that wants a negative time per path is reading noise.

The same fit on the machine that measured the table corrects the summation
itself: operators timed alone run warmer than the same operators inside a
network. The reference set still serves the check on use. It needs no space
and takes a fraction of a second.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import lsq_linear

from aebnas.cost import fingerprint
from aebnas.cost.fingerprint import Comparison, Fingerprint, compare
from aebnas.cost.latency import LatencyTable, LatencyTableError
from aebnas.cost.latency_check import validate_table
from aebnas.cost.profiler import DTYPES, HardwareSettings
from aebnas.space import SearchSpace

# The offset is kept only if it cuts the factor-only fit's squared relative error by at least this share.
OFFSET_GAIN = 0.25
# Probe networks timed per calibration: 8 quickstart networks (37 exit paths) take about 4 s on a 2-core CPU;
# on that machine 16 gave no better validation.
PROBE_NETWORKS = 8
# Seeds the probe networks apart from a validation's (seed 0 by default), so it stays out of sample.
PROBE_SEED = 7919


@dataclass(frozen=True)
class Calibration:
    """The fitted map from the table's sums to this machine's paths, and how well it fits the probes."""

    factor: float
    offset_ms: float             # per exit path
    fit_mape_pct: float          # MAPE of the fitted map over the probe paths
    factor_only_mape_pct: float  # the same with the factor alone (offset 0)
    paths: int
    networks: int
    ratio: float                 # geometric mean of measured / table sum over the probe paths
    seconds: float = 0.0         # time spent timing the probes

    def describe(self) -> str:
        offset = f" + {self.offset_ms:.3f} ms per path" if self.offset_ms > 0 else ""
        return (f"factor {self.factor:.3f}{offset} (fit over {self.paths} exit paths of {self.networks} networks "
                f"timed here in {self.seconds:.1f}s: MAPE {self.fit_mape_pct:.1f}%, factor alone "
                f"{self.factor_only_mape_pct:.1f}%)")


def _mape(pred: np.ndarray, meas: np.ndarray) -> float:
    return float(100.0 * np.mean(np.abs(pred - meas) / meas))


def fit(predicted: Sequence[float], measured: Sequence[float], networks: int = 0) -> Calibration:
    """Factor (and a non-negative per-path offset, where it earns its place) from table sums to measured paths."""
    pairs = [(p, m) for p, m in zip(predicted, measured) if p > 0 and m > 0]
    if len(pairs) < 3:
        raise LatencyTableError(f"calibration: {len(pairs)} timed exit paths, at least 3 needed; "
                                "calibrate on a space whose networks have exits")
    t = np.array([p for p, _ in pairs])
    n = np.array([m for _, m in pairs])
    # relative residuals: (a * t + b - n) / n, i.e. rows [t/n, 1/n] . [a, b] ~ 1
    a_only = lsq_linear((t / n)[:, None], np.ones_like(n), bounds=([1e-9], [np.inf])).x[0]
    both = lsq_linear(np.column_stack([t / n, 1 / n]), np.ones_like(n), bounds=([1e-9, 0.0], [np.inf, np.inf])).x
    err_a = float(np.sum((a_only * t / n - 1) ** 2))
    err_ab = float(np.sum(((both[0] * t + both[1]) / n - 1) ** 2))
    factor, offset = (float(both[0]), float(both[1])) if err_ab < (1 - OFFSET_GAIN) * err_a else (float(a_only), 0.0)
    return Calibration(factor, offset, _mape(factor * t + offset, n), _mape(a_only * t, n), len(pairs), networks,
                       float(np.exp(np.mean(np.log(n / t)))))


def time_probes(table: LatencyTable, space: SearchSpace, hw: HardwareSettings,
                networks: int = PROBE_NETWORKS) -> tuple[list[float], list[float], int]:
    """Table sums and measured times of every exit path of ``networks`` random networks of ``space``, here."""
    raw = LatencyTable({**table.meta, "overhead_ms": 0.0}, table.ops)  # the fit maps the operators' sums
    with hw.threads_while_timing():
        rows = validate_table(raw, space, hw, networks, seed=PROBE_SEED, progress=False)["rows"]
    return [r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows], networks


def table_fingerprint(table: LatencyTable) -> Fingerprint | None:
    data = table.meta.get("fingerprint")
    if not data:
        return None
    try:
        return Fingerprint.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None


def calibrate(table: LatencyTable, space: SearchSpace, hw: HardwareSettings, now: Fingerprint | None = None,
              source: str = "", probes: tuple[list[float], list[float], int] | None = None
              ) -> tuple[LatencyTable, Calibration]:
    """The table carried over to this machine: every entry scaled, the per-path offset as its overhead.

    ``probes`` (table sums, measured path times, networks) stands in for timing them here (tests); ``now``, this
    machine's reference run, becomes the copy's fingerprint so that the check on use accepts the copy.
    """
    start = time.perf_counter()
    predicted, measured, networks = probes if probes is not None else time_probes(table, space, hw)
    cal = replace(fit(predicted, measured, networks), seconds=time.perf_counter() - start)
    a = cal.factor
    ops = {sig: replace(op, median_ms=a * op.median_ms, mean_ms=a * op.mean_ms, std_ms=a * op.std_ms)
           for sig, op in table.ops.items()}
    meta = {k: v for k, v in table.meta.items() if k != "validation"}
    then = table_fingerprint(table)
    meta.update({
        "overhead_ms": cal.offset_ms,
        "calibration": {**asdict(cal), "source": source, "source_device": table.meta.get("device_name"),
                        "source_fingerprint": then.to_json() if then is not None else None,
                        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
    })
    if now is not None:
        meta["fingerprint"] = now.to_json()
    return LatencyTable(meta, ops), cal


def check_message(table: LatencyTable, now: Fingerprint | None, where: str, reprofile: str) -> str | None:
    """One warning line when ``table`` no longer describes this machine, else None."""
    then = table_fingerprint(table)
    if then is None:
        return (f"latency table '{where}' has no fingerprint, so nothing tells whether its milliseconds hold on this "
                f"machine; re-profile with: {reprofile}")
    if now is None:
        return None
    cmp: Comparison = compare(then, now)
    if not cmp.off:
        return None
    return (f"latency table '{where}' (measured on {then.describe()}) does not match this machine: {cmp.describe()}, "
            f"so its milliseconds may not hold here; re-profile with: {reprofile} "
            f"(or calibrate it with hardware.calibrate=true, a few seconds)")


@dataclass
class TableInUse:
    """The table a run prices with, where it came from, and what the machine check found."""

    table: LatencyTable
    path: str                          # the file read (a shipped table or the user's)
    calibration: Calibration | None    # set with hardware.calibrate=true
    calibrated_path: str | None        # where the calibrated copy was written
    warning: str | None                # the one-line warning, if the machine moved
    comparison: Comparison | None
    check_seconds: float
    cached: bool                       # the reference run came from the cache

    def describe(self) -> str:
        if self.calibration is not None:
            return (f"latency table: {self.path}, calibrated to this machine with {self.calibration.describe()}; "
                    f"calibrated copy: {self.calibrated_path}")
        ratio = f"; reference ratio here {self.comparison.ratio:.2f}" if self.comparison is not None else ""
        return f"latency table: {self.path} ({self.table.describe()}{ratio})"


def this_machine(hw: HardwareSettings, device: torch.device, fresh: bool = False) -> tuple[Fingerprint, bool]:
    """This machine's fingerprint under the table's setting (its thread count applied only while measuring)."""
    with hw.threads_while_timing():
        return fingerprint.current(device, DTYPES[hw.dtype], hw.batch_size, fresh=fresh)


def use_table(table: LatencyTable, hw: HardwareSettings, path: str, reprofile: str, calibrated_path: str | None = None,
              now: Fingerprint | None = None, space: SearchSpace | None = None,
              probes: tuple[list[float], list[float], int] | None = None) -> TableInUse:
    """Check ``table`` against this machine (warn in one line if it moved) and, with ``hw.calibrate``, scale it
    by timing probe networks of ``space`` here.

    ``now`` stands in for this machine's reference run and ``probes`` for the probe timings (tests, or a caller
    that already measured them).
    """
    start = time.perf_counter()
    cached = False
    then = table_fingerprint(table)
    if now is None and (hw.calibrate or (hw.check and then is not None)):
        # a calibrated copy outlives the run: its fingerprint is a reference run of now, not one cached an hour ago
        now, cached = this_machine(hw, hw.torch_device(), fresh=hw.calibrate)
    comparison = compare(then, now) if then is not None and now is not None else None
    calibration = None
    if hw.calibrate:
        if space is None and probes is None:
            raise ValueError("use_table: hardware.calibrate needs the space whose networks it times")
        table, calibration = calibrate(table, space, hw, now, source=path, probes=probes)
        if calibrated_path is not None:
            table.save(calibrated_path)
        warning = None
    else:
        warning = check_message(table, now, path, reprofile) if hw.check else None
    return TableInUse(table, path, calibration, calibrated_path if calibration else None, warning, comparison,
                      time.perf_counter() - start, cached)
