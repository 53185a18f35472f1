"""experiments/bench_sample_efficiency.py: the hypervolume curves its targets are judged on."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
bench = pytest.importorskip("bench_sample_efficiency")


def test_curve_grows_only_with_successful_rows_and_counts_networks_once():
    F = np.array([[0.5, 0.5], [0.1, 0.1], [0.4, 0.2], [0.2, 0.4], [0.4, 0.2]])
    ok = np.array([True, False, True, True, True])
    curve = bench.hypervolume_curve(F, ok, ["a", "b", "c", "d", "c"])
    assert [c[0] for c in curve] == [1, 2, 3, 4, 5]
    assert [c[1] for c in curve] == [1, 2, 3, 4, 4]  # the repeated network counts once
    # (0.5, 0.5) alone: 0.25; the failed (0.1, 0.1) adds nothing; (0.4, 0.2) and (0.2, 0.4) dominate it
    assert [c[2] for c in curve] == pytest.approx([0.25, 0.25, 0.48, 0.60, 0.60])


def test_avg_macs_runs_are_scaled_like_the_report_and_macs_target_runs_are_not():
    ev = pd.DataFrame({"status": ["ok", "ok"], "network_key": ["a", "b"], "val_accuracy": [0.8, 0.9],
                       "expected_macs": [100.0, 300.0], "objective_0": [0.2, 0.1], "objective_1": [100.0, 300.0]})
    avg = bench.curves(ev, "avg_macs", 400.0)
    assert avg["curve"] == avg["curve_error_macs"]  # the same front once MACs are scaled by the largest network
    target = bench.curves(ev.assign(objective_0=[0.3, 0.2], objective_1=[0.5, 0.0]), "macs_target", 400.0)
    assert target["curve"][-1][2] == pytest.approx(0.8)  # (0.2, 0.0) dominates: 0.8 x 1.0
    assert target["curve_error_macs"][-1][2] == pytest.approx(avg["curve_error_macs"][-1][2])
