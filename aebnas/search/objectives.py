"""Objective and constraint vectors handed to pymoo (both minimised)."""

from __future__ import annotations

from aebnas.search.settings import SearchSettings


def objective_values(settings: SearchSettings, val_accuracy: float, expected_macs: float) -> list[float]:
    """``error_macs``: (error, E[MACs]); ``aebnas``: (error + w * MAPE, MAPE) against the target MACs."""
    error = 1.0 - val_accuracy
    if settings.objective == "error_macs":
        return [error, float(expected_macs)]
    mape = abs(expected_macs - settings.target_macs) / settings.target_macs  # type: ignore[operator]
    return [error + settings.mape_weight * mape, mape]


def constraint_values(settings: SearchSettings, expected_macs: float) -> list[float]:
    """pymoo's ``G <= 0`` form of the optional hard budget on expected MACs."""
    if settings.max_expected_macs is None:
        return []
    return [float(expected_macs) - float(settings.max_expected_macs)]


def objective_names(settings: SearchSettings) -> list[str]:
    return ["val_error", "expected_macs"] if settings.objective == "error_macs" else ["error_plus_mape", "macs_mape"]
