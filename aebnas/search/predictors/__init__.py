"""Surrogate models of a search's objectives, fitted on the archive's rows (numpy in, numpy out; no torch).

The surrogate-assisted search (``search.algorithm=msunas``) trains only a few
networks per iteration and lets these models score the thousands its inner
NSGA-II proposes. Each model is a scikit-learn regressor (or, for RBF, a thin
adapter over scipy's interpolator) so cross-validation, pipelines and refits
come from scikit-learn; ``adaptive`` picks, every time it is fitted, the model
whose cross-validated Kendall tau is best, as NSGANetV2 does.
"""

from aebnas.search.predictors.adaptive import AdaptiveSwitching, kendall_tau
from aebnas.search.predictors.models import MODELS, RBFRegressor, make_model


def make_predictor(name: str, seed: int = 0, score=None, folds: int = 3):
    """The regressor ``search.predictor`` names; ``adaptive`` switches among every other model.

    ``score(y, y_pred)`` ranks models under ``adaptive`` (default: Kendall tau of
    a 1-D target).
    """
    if name == "adaptive":
        return AdaptiveSwitching(MODELS, seed=seed, score=score, folds=folds)
    return make_model(name, seed)


__all__ = ["AdaptiveSwitching", "MODELS", "RBFRegressor", "kendall_tau", "make_model", "make_predictor"]
