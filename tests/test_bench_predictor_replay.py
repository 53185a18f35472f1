"""experiments/bench_predictor_replay.py: the offline replay's pooling, on a known function."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
bench = pytest.importorskip("bench_predictor_replay")


class _Reversed(LinearRegression):
    """Ranks exactly backwards: what a replay must report as tau -1."""

    def predict(self, X):
        return -super().predict(X)


def _archive(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(160, 5))
    error = X @ np.array([0.5, -0.3, 0.2, 0.0, 0.1])
    generation = np.concatenate([np.ones(100, int), np.repeat(np.arange(2, 8), 10)])
    return X, error, generation, np.ones(160, bool)


def test_replay_pools_only_iterations_after_the_sample_and_fits_on_rows_before():
    X, error, generation, ok = _archive()
    assert bench.replay(X, error, generation, ok, LinearRegression) == pytest.approx(1.0)
    assert bench.replay(X, error, generation, ok, _Reversed) == pytest.approx(-1.0)
    assert bench.replay(X, error, generation, ok, LinearRegression, after=200) is None  # no iteration qualifies


def test_replay_leaves_failed_rows_out_of_fitting_and_scoring():
    X, error, generation, ok = _archive()
    junk = error.copy()
    junk[:30] = 1.0  # failed candidates' placeholder error, no measurement of their network
    ok[:30] = False
    assert bench.replay(X, junk, generation, ok, LinearRegression) == pytest.approx(1.0)
    assert bench.replay(X, junk, generation, np.ones(160, bool), LinearRegression) < 0.99
    junk[[105, 125, 145]] = 1.0  # failures among the scored networks: kept out of the pooled tau too
    ok[[105, 125, 145]] = False
    assert bench.replay(X, junk, generation, ok, LinearRegression) == pytest.approx(1.0)


def test_model_factories_cover_every_predictor_and_the_mean():
    X, error, generation, ok = _archive(1)
    from sklearn.ensemble import ExtraTreesRegressor
    from aebnas.search.predictors import AdaptiveSwitching, RBFRegressor

    factories = bench.model_factories()
    assert {"mlp", "rbf", "gp", "trees", "adaptive", "mean_gp_trees"} <= set(factories)
    # each name builds its own model (a late-bound loop variable would make them all the last one)
    assert isinstance(factories["rbf"](), RBFRegressor) and isinstance(factories["trees"](), ExtraTreesRegressor)
    assert isinstance(factories["adaptive"](), AdaptiveSwitching)
    assert bench.replay(X, error, generation, ok, factories["mean_gp_trees"]) > 0.6
