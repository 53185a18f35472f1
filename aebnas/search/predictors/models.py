"""The four surrogate models: MLP, RBF, Gaussian process and a tree ensemble.

Inputs are standardised (the integer genes and log-MACs live on different
scales) and so are targets where the model is scale-sensitive. Settings are
sized for a few hundred rows and tens of features, where one fit takes well
under a second on a small CPU.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import RBFInterpolator
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

MODELS = ("mlp", "rbf", "gp", "trees")


class RBFRegressor(RegressorMixin, BaseEstimator):
    """scipy's RBF interpolator behind scikit-learn's fit/predict, on standardised inputs.

    A little smoothing lets it pass near, not through, noisy training targets
    (two networks with equal features may score differently) and keeps the
    system solvable when rows repeat; the linear tail extrapolates the trend.
    """

    def __init__(self, kernel: str = "cubic", smoothing: float = 1e-2, degree: int = 1):
        self.kernel = kernel
        self.smoothing = smoothing
        self.degree = degree

    def fit(self, X: np.ndarray, y: np.ndarray) -> "RBFRegressor":
        X = np.asarray(X, dtype=float)
        self.scaler_ = StandardScaler().fit(X)
        y = np.asarray(y, dtype=float)
        self.y_mean_, self.y_scale_ = y.mean(axis=0), y.std(axis=0) + 1e-12
        # the linear tail needs more rows than features; with fewer (an early archive), a linear kernel on a
        # constant, which needs no tail to be well-posed
        kernel, degree = (self.kernel, self.degree) if len(X) > X.shape[1] + 1 else ("linear", 0)
        self.rbf_ = RBFInterpolator(self.scaler_.transform(X), (y - self.y_mean_) / self.y_scale_,
                                    kernel=kernel, smoothing=self.smoothing, degree=degree)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.rbf_(self.scaler_.transform(np.asarray(X, dtype=float))) * self.y_scale_ + self.y_mean_


def make_model(name: str, seed: int = 0):
    """A fresh, unfitted regressor; ``seed`` fixes its randomness, so refits on equal data agree."""
    if name == "mlp":
        mlp = MLPRegressor(hidden_layer_sizes=(32,), solver="lbfgs", alpha=0.1, max_iter=300, random_state=seed)
        return make_pipeline(StandardScaler(), TransformedTargetRegressor(mlp, transformer=StandardScaler()))
    if name == "rbf":
        return RBFRegressor()
    if name == "gp":
        # Fixed hyperparameters (one Cholesky per fit, not tens of seconds of marginal-likelihood search at a few
        # hundred rows): unit signal on normalised targets, a length scale near sqrt(#features) of standardised
        # inputs (tens of genes), some noise, since equal-looking networks train to different accuracies.
        kernel = ConstantKernel(1.0, "fixed") * RBF(8.0, "fixed") + WhiteKernel(0.1, "fixed")
        return make_pipeline(StandardScaler(), GaussianProcessRegressor(kernel, normalize_y=True, optimizer=None,
                                                                        random_state=seed))
    if name == "trees":
        return ExtraTreesRegressor(n_estimators=50, min_samples_leaf=2, max_features=0.5, random_state=seed,
                                   n_jobs=1)
    raise ValueError(f"predictor: '{name}' is not one of {list(MODELS)} or 'adaptive'")
