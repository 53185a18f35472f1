"""NSGANetV2's adaptive switching: each fit, the model that ranks held-out rows best is the one used."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy.stats import kendalltau
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.model_selection import KFold, cross_val_predict
from threadpoolctl import threadpool_limits

Score = Callable[[np.ndarray, np.ndarray], float]


def kendall_tau(y: np.ndarray, y_pred: np.ndarray) -> float:
    """Rank agreement of predictions with truth (a search only needs the order right); NaN counts as 0."""
    tau = kendalltau(np.ravel(y), np.ravel(y_pred)).statistic
    return 0.0 if not np.isfinite(tau) else float(tau)


class AdaptiveSwitching(RegressorMixin, BaseEstimator):
    """Fit every candidate model with k-fold cross-validation, keep the best by ``score``, refit it on all rows.

    ``score(y, y_pred)`` sees the out-of-fold predictions of all rows in their
    order (default: Kendall tau), so a caller can rank models on a quantity
    derived from the target (expected cost from predicted exit rates, say).
    ``chosen_`` names the model in use and ``cv_scores_`` holds every model's
    score, for the search's log.
    """

    def __init__(self, names: Sequence[str], seed: int = 0, score: Score | None = None, folds: int = 3):
        self.names = names
        self.seed = seed
        self.score = score
        self.folds = folds

    def fit(self, X: np.ndarray, y: np.ndarray) -> "AdaptiveSwitching":
        from aebnas.search.predictors.models import make_model

        with threadpool_limits(1):  # small models: a BLAS pool on a busy CPU made CV ~20x slower in measurements
            return self._fit(X, y, make_model)

    def _fit(self, X: np.ndarray, y: np.ndarray, make_model) -> "AdaptiveSwitching":
        score = self.score or kendall_tau
        folds = KFold(min(self.folds, len(X)), shuffle=True, random_state=self.seed)
        self.cv_scores_ = {}
        for name in self.names:
            try:
                y_pred = cross_val_predict(make_model(name, self.seed), X, y, cv=folds)
                self.cv_scores_[name] = float(score(y, y_pred))
            except (ValueError, np.linalg.LinAlgError):  # too few or degenerate rows for this model
                self.cv_scores_[name] = float("-inf")
        self.chosen_ = max(self.names, key=lambda n: self.cv_scores_[n])  # first listed wins a tie
        self.model_ = clone(make_model(self.chosen_, self.seed)).fit(X, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(X)
