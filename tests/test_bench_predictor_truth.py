"""experiments/bench_predictor_truth.py: its rank agreements and spreads, on hand-made scores."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
bench = pytest.importorskip("bench_predictor_truth")


def test_summary_separates_ranking_val_from_ranking_the_precise_score():
    # the predictor follows val exactly; val orders the networks the reverse of test within each iteration
    val = [0.80, 0.81, 0.82, 0.83, 0.70, 0.71, 0.72, 0.73]
    test = [0.79, 0.78, 0.77, 0.76, 0.69, 0.68, 0.67, 0.66]
    rows = pd.DataFrame({"generation": [3] * 4 + [4] * 4, "predicted": val, "val": val, "test": test})
    s = bench.summarise(rows)
    assert s["networks"] == 8
    assert s["tau_predicted_val"] == pytest.approx(1.0)
    assert s["mean_per_iteration_tau_predicted_val"] == pytest.approx(1.0)
    assert s["mean_per_iteration_tau_predicted_test"] == pytest.approx(-1.0)
    # pooled, the two iterations' offset agrees on both splits: 16 of 28 pairs concordant, 12 discordant
    assert s["tau_predicted_test"] == pytest.approx((16 - 12) / 28)
    assert s["mean_val_minus_test_points"] == pytest.approx(100 * (sum(val) - sum(test)) / 8)
    assert s["mae_predicted_val_points"] == 0.0
