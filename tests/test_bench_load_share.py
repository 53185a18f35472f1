"""experiments/bench_load_share.py: the share of a core and the replay, on hand-made recordings."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from aebnas.runtime.budget import BudgetController
from aebnas.runtime.operating_points import OperatingPoint
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
bench = pytest.importorskip("bench_load_share")

# two exit paths: 0.5M MACs take 0.4 ms idle, 7M take 2 ms
IDLE_MACS = np.array([0.5e6, 7e6] * 50)
IDLE_SECONDS = np.where(IDLE_MACS < 1e6, 0.4e-3, 2e-3)


def test_share_is_idle_time_over_time_taken_per_bin_of_wall_clock():
    # times in powers of two, so the clock falls on bin edges exactly: 128 images at full speed (1/16 s,
    # 8 bins of 1/128 s), then the same 128 at half speed (1/8 s, 16 bins)
    idle_macs, idle_seconds = np.full(5, 0.5e6), np.full(5, 2.0 ** -11)
    macs = np.full(256, 0.5e6)
    seconds = np.concatenate([np.full(128, 2.0 ** -11), np.full(128, 2.0 ** -10)])
    share = bench.share_per_bin(seconds, macs, idle_seconds, idle_macs, 2.0 ** -7)
    assert len(share) == 24
    assert np.all(share[:8] == 1.0) and np.all(share[8:] == 0.5)


def test_share_refuses_a_path_never_timed_idle_unless_it_is_rare():
    with pytest.raises(ValueError, match="never ran idle"):
        bench.share_per_bin(np.full(3, 1e-3), np.full(3, 3e6), IDLE_SECONDS, IDLE_MACS, 0.01)
    # 2 of 100 images on a path never timed idle, each 50 times slower than anything: left out, so every bin
    # shows the half share that the known images ran at
    macs = np.full(100, 0.5e6)
    macs[[10, 60]] = 3e6
    seconds = np.where(macs == 3e6, 1e-1, 0.8e-3)
    share = bench.share_per_bin(seconds, macs, IDLE_SECONDS, IDLE_MACS, 1.0)
    assert share.tolist() == [0.5]
    # over several bins: full speed, then a bin holding only the unknown path's image (it repeats the bin
    # before), then half speed
    macs = np.concatenate([np.full(40, 0.5e6), [3e6], np.full(40, 0.5e6)])
    seconds = np.concatenate([np.full(40, 0.4e-3), [2e-2], np.full(40, 0.8e-3)])
    share = bench.share_per_bin(seconds, macs, IDLE_SECONDS, IDLE_MACS, 0.016)
    assert share.tolist() == [1.0, 1.0, 0.5, 0.5, 0.5]
    # 5 % left out is the most allowed
    macs = np.full(100, 0.5e6)
    macs[:5] = 3e6
    bench.share_per_bin(np.full(100, 1e-3), macs, IDLE_SECONDS, IDLE_MACS, 1.0)
    macs[5] = 3e6
    with pytest.raises(ValueError, match="6% of images"):
        bench.share_per_bin(np.full(100, 1e-3), macs, IDLE_SECONDS, IDLE_MACS, 1.0)


def _ladder():
    """Cheapest first: the share of images that go on to the 7M path grows from 0 to 50 %."""
    return [OperatingPoint((0.5,), 0.88 + 0.004 * i, 0.5e6 + 6.5e6 * i / 20, (1 - i / 20, i / 20)) for i in range(11)]


def _recordings(ladder, n=400):
    """Per point, idle times whose mix of the two paths follows the point's exit rates."""
    seconds, macs = np.empty((len(ladder), n)), np.empty((len(ladder), n))
    for p, point in enumerate(ladder):
        late = (np.arange(n) * 0.618034) % 1.0 < point.exit_rates[1]
        macs[p] = np.where(late, 7e6, 0.5e6)
        seconds[p] = np.where(late, 2e-3, 0.4e-3)
    return seconds, macs


def test_replay_holds_what_a_fixed_point_cannot_and_a_half_share_halves_the_rate():
    ladder = _ladder()
    seconds, macs = _recordings(ladder)
    rate = 1 / 1.2e-3  # the dearest point's idle rate
    half = np.full(100, 0.5)
    kw = dict(idle_seconds=seconds, idle_macs=macs, share=half, bin_s=0.01, ladder=ladder, rate=rate,
              multiples=[1.2, 1.2], n=4000, seed=0)
    cheapest = bench.replay(make=lambda pts, b: bench.FixedPoint(pts, b, 0), calibration=0, **kw)
    # the cheapest point runs at 1 / 0.4 ms idle, 1 / 0.8 ms at half a core
    assert cheapest[0]["rate_over_target"] == pytest.approx(2500 / (1.2 * rate), rel=1e-9)
    assert cheapest[1]["rate_over_target"] == pytest.approx(1250 / (1.2 * rate), rel=1e-9)
    controlled = bench.replay(make=lambda pts, b: BudgetController(pts, b), **kw)
    assert cheapest[0]["held"] == 0 and controlled[0]["held"] == controlled[0]["windows"] > 0
    assert controlled[0]["val_accuracy_run"] > cheapest[0]["val_accuracy_run"]
    summary = bench.summarise([controlled, controlled])
    off = [r for r in controlled if not r["load"]]
    assert summary["held_load_off"] == [2 * sum(r["held"] for r in off), 2 * sum(r["windows"] for r in off)]


def test_clairvoyant_reference_holds_what_the_cheapest_point_reaches_and_no_more():
    ladder = _ladder()
    seconds, _ = _recordings(ladder)
    rate = 1 / 1.2e-3  # the dearest point's idle rate; the cheapest runs at 2500 images/s idle, 1250 at half a core
    half = np.full(100, 0.5)

    def run(multiple):
        return bench.clairvoyant(seconds, half, 0.01, ladder, rate, [multiple, multiple], 4000, seed=0)

    # 1.2x (1000 images/s): a mix of the dearest and the cheapest point lands every window in the band
    reach = run(1.2)
    assert all(r["held"] == r["windows"] > 0 and r["short_at_cheapest"] == 0 for r in reach)
    assert all(0.9 <= r["rate_over_target"] <= 1.1 for r in reach)
    assert all(ladder[0].val_accuracy < r["val_accuracy_run"] < ladder[-1].val_accuracy for r in reach)
    # 2x (1667 images/s): beyond the cheapest point at half a core, within its reach idle
    beyond = run(2.0)
    assert [r["held"] == r["windows"] for r in beyond] == [True, False, True, False]
    assert [r["short_at_cheapest"] == r["windows"] for r in beyond] == [False, True, False, True]
    # 0.5x: the dearest point alone beats the target everywhere, which counts as held
    slack = run(0.5)
    assert all(r["held"] == r["windows"] for r in slack)
    assert all(r["val_accuracy_run"] == pytest.approx(ladder[-1].val_accuracy) for r in slack)
