"""pareto.png draws only true fronts, and names search-time and final networks apart."""

from __future__ import annotations

import numpy as np
import pandas as pd

from aebnas.analysis.plots import front_mask, plot_pareto


def _lines(fig) -> dict[str, np.ndarray]:
    ax = fig.axes[0]
    return {line.get_label(): np.asarray(line.get_xydata()) for line in ax.get_lines()}


def _evaluations() -> pd.DataFrame:
    return pd.DataFrame({"expected_macs": [1e5, 2e5, 3e5, 4e5, 2.5e5], "val_accuracy": [0.80, 0.86, 0.90, 0.91, 0.84]})


def test_front_mask_drops_dominated_rows():
    mask = front_mask(pd.Series([0.80, 0.90, 0.85, 0.90]), pd.Series([1.0, 2.0, 3.0, 2.0]))
    assert mask.tolist() == [True, True, False, True]  # 0.85 at cost 3 is beaten by 0.90 at cost 2


def test_final_training_is_drawn_apart_from_the_search_front_and_its_line_is_a_true_front():
    # The search front is the three candidates at 1e5, 2e5, 4e5 (+ 3e5); after final training the network that
    # had 2e5 MACs got cheaper but worse than the one that had 1e5 does now: it is dominated.
    pareto = pd.DataFrame({
        "search_expected_macs": [1e5, 2e5, 3e5, 4e5], "search_val_accuracy": [0.80, 0.86, 0.90, 0.91],
        "expected_macs": [0.9e5, 1.0e5, 2.8e5, 3.9e5], "val_accuracy": [0.88, 0.87, 0.93, 0.95],
        "static_macs": [2e5, 3e5, 4e5, 5e5], "static_val_accuracy": [0.85, 0.88, 0.92, 0.93],
        "final_epochs": [4, 4, 4, 4],
    })
    lines = _lines(plot_pareto(_evaluations(), pareto))
    assert set(lines) == {"search: Pareto front (4 networks)",
                          "after final training (4 more epochs): front (3 networks)"}
    final = lines["after final training (4 more epochs): front (3 networks)"]
    assert np.allclose(final[:, 0], [0.09, 0.28, 0.39]) and final[:, 1].tolist() == [0.88, 0.93, 0.95]
    # every line is non-dominated and sorted by cost
    for xy in lines.values():
        assert front_mask(pd.Series(xy[:, 1]), pd.Series(xy[:, 0])).all() and np.all(np.diff(xy[:, 0]) > 0)
    labels = [t.get_text() for t in plot_pareto(_evaluations(), pareto).axes[0].get_legend().get_texts()]
    assert "after final training: dominated (1 network)" in labels
    assert "search: evaluated (5 candidates)" in labels


def test_without_final_training_one_front_with_counts_that_agree():
    pareto = pd.DataFrame({"expected_macs": [1e5], "val_accuracy": [0.8], "static_macs": [2e5],
                           "static_val_accuracy": [0.82]})
    lines = _lines(plot_pareto(_evaluations(), pareto))
    assert list(lines) == ["Pareto front, early exits (1 network)"]
