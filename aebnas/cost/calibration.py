"""Carry a latency table over to this machine from its reference set, and warn when it no longer fits.

The table's fingerprint holds the reference operators' times on the day it was
measured; this machine runs the same operators now. The fit

    now_i = factor * then_i + offset_ms,   factor > 0, offset_ms >= 0

in relative error (a 5 us operator counts as much as a 1 ms one) gives the
factor every table entry is scaled by. The per-call offset is kept only where
it is physical: a machine that adds a fixed cost to every call (a slower kernel
launch, a busier dispatcher) shows it on the dispatch-bound reference
operators, and it must make the fit clearly better than the factor alone to
be kept. It is never negative: a negative per-call time cannot exist, and a
fit that wants one is telling about noise, not about the machine.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from scipy.optimize import lsq_linear

from aebnas.cost import fingerprint
from aebnas.cost.fingerprint import Comparison, Fingerprint, compare
from aebnas.cost.latency import LatencyTable, LatencyTableError
from aebnas.cost.profiler import DTYPES, HardwareSettings
# The offset is kept only if it cuts the factor-only fit's squared relative error by at least this share.
OFFSET_GAIN = 0.25


@dataclass(frozen=True)
class Calibration:
    """The fitted map from the table's machine to this one, and how well it fits the reference set."""

    factor: float
    offset_ms: float
    fit_mape_pct: float          # MAPE of the fitted map over the reference operators
    factor_only_mape_pct: float  # the same with the factor alone (offset 0)
    operators: int
    ratio: float                 # geometric mean of now / then, for comparison with the check's figure

    def describe(self) -> str:
        offset = f" + {self.offset_ms * 1e3:.1f} us per operator" if self.offset_ms > 0 else ""
        return (f"factor {self.factor:.3f}{offset} (fit over {self.operators} reference operators: MAPE "
                f"{self.fit_mape_pct:.1f}%, factor alone {self.factor_only_mape_pct:.1f}%)")


def _mape(pred: np.ndarray, meas: np.ndarray) -> float:
    return float(100.0 * np.mean(np.abs(pred - meas) / meas))


def fit(then: dict[str, float], now: dict[str, float]) -> Calibration:
    """Factor (and a non-negative per-call offset, where it earns its place) from ``then`` to ``now`` timings."""
    keys = [k for k in then if k in now and then[k] > 0 and now[k] > 0]
    if len(keys) < 3:
        raise LatencyTableError(f"calibration: {len(keys)} reference operators in common, at least 3 needed; "
                                "re-profile the table to give it a fingerprint")
    t = np.array([then[k] for k in keys])
    n = np.array([now[k] for k in keys])
    # relative residuals: (a * t + b - n) / n, i.e. rows [t/n, 1/n] . [a, b] ~ 1
    a_only = lsq_linear((t / n)[:, None], np.ones_like(n), bounds=([1e-9], [np.inf])).x[0]
    both = lsq_linear(np.column_stack([t / n, 1 / n]), np.ones_like(n), bounds=([1e-9, 0.0], [np.inf, np.inf])).x
    err_a = float(np.sum((a_only * t / n - 1) ** 2))
    err_ab = float(np.sum(((both[0] * t + both[1]) / n - 1) ** 2))
    factor, offset = (float(both[0]), float(both[1])) if err_ab < (1 - OFFSET_GAIN) * err_a else (float(a_only), 0.0)
    return Calibration(factor, offset, _mape(factor * t + offset, n), _mape(a_only * t, n), len(keys),
                       float(np.exp(np.mean(np.log(n / t)))))


def table_fingerprint(table: LatencyTable) -> Fingerprint | None:
    data = table.meta.get("fingerprint")
    if not data:
        return None
    try:
        return Fingerprint.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None


def calibrate(table: LatencyTable, now: Fingerprint, source: str = "") -> tuple[LatencyTable, Calibration]:
    """The table carried over to the machine that measured ``now``: every entry scaled by the fitted map."""
    then = table_fingerprint(table)
    if then is None:
        raise LatencyTableError(f"hardware.calibrate: the table{f' {source!r}' if source else ''} has no fingerprint "
                                "(reference timings), so there is nothing to scale it by; re-profile it with "
                                "aebnas-profile, or set hardware.calibrate=false")
    cal = fit(then.reference_ms, now.reference_ms)
    a, b = cal.factor, cal.offset_ms
    ops = {sig: replace(op, median_ms=a * op.median_ms + b, mean_ms=a * op.mean_ms + b, std_ms=a * op.std_ms)
           for sig, op in table.ops.items()}
    meta = {k: v for k, v in table.meta.items() if k != "validation"}
    meta.update({
        "overhead_ms": a * table.overhead_ms,
        "fingerprint": now.to_json(),
        "calibration": {**asdict(cal), "source": source, "source_fingerprint": then.to_json(),
                        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
    })
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
            f"so its milliseconds are off by about that ratio; re-profile with: {reprofile} "
            f"(or scale it with hardware.calibrate=true)")


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
    saved = torch.get_num_threads()
    hw.apply_threads()
    try:
        return fingerprint.current(device, DTYPES[hw.dtype], hw.batch_size, fresh=fresh)
    finally:
        torch.set_num_threads(saved)


def use_table(table: LatencyTable, hw: HardwareSettings, path: str, reprofile: str, calibrated_path: str | None = None,
              now: Fingerprint | None = None) -> TableInUse:
    """Check ``table`` against this machine (warn in one line if it moved) and, with ``hw.calibrate``, scale it.

    ``now`` stands in for this machine's reference run (tests, or a caller that already measured it).
    """
    start = time.perf_counter()
    cached = False
    then = table_fingerprint(table)
    if now is None and (hw.calibrate or (hw.check and then is not None)):
        # a calibrated copy outlives the run: scale it by a reference run of now, not one cached an hour ago
        now, cached = this_machine(hw, hw.torch_device(), fresh=hw.calibrate)
    comparison = compare(then, now) if then is not None and now is not None else None
    calibration = None
    if hw.calibrate:
        table, calibration = calibrate(table, now, source=path)
        if calibrated_path is not None:
            table.save(calibrated_path)
        warning = None
    else:
        warning = check_message(table, now, path, reprofile) if hw.check else None
    return TableInUse(table, path, calibration, calibrated_path if calibration else None, warning, comparison,
                      time.perf_counter() - start, cached)
