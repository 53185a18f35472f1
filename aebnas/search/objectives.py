"""Objective and constraint vectors handed to pymoo (both minimised)."""

from __future__ import annotations

from aebnas.search.settings import SearchSettings


def objective_values(settings: SearchSettings, val_accuracy: float, expected_macs: float,
                     expected_latency_ms: float | None = None) -> list[float]:
    """``avg_macs``: (error, E[MACs]); ``avg_latency``: (error, E[latency ms]) from the device's table;
    ``macs_target``: (error + w * MAPE, MAPE) against the target MACs."""
    error = 1.0 - val_accuracy
    if settings.objective == "avg_macs":
        return [error, float(expected_macs)]
    if settings.objective == "avg_latency":
        return [error, float(expected_latency_ms)]  # type: ignore[arg-type]
    mape = abs(expected_macs - settings.target_macs) / settings.target_macs  # type: ignore[operator]
    return [error + settings.mape_weight * mape, mape]


def constraint_values(settings: SearchSettings, expected_macs: float,
                      expected_latency_ms: float | None = None) -> list[float]:
    """pymoo's ``G <= 0`` form of the optional hard budgets on expected MACs and expected latency."""
    g = []
    if settings.max_expected_macs is not None:
        g.append(float(expected_macs) - float(settings.max_expected_macs))
    if settings.max_expected_latency_ms is not None:
        g.append(float(expected_latency_ms) - float(settings.max_expected_latency_ms))  # type: ignore[arg-type]
    return g


def n_constraints(settings: SearchSettings) -> int:
    return (settings.max_expected_macs is not None) + (settings.max_expected_latency_ms is not None)


def objective_names(settings: SearchSettings) -> list[str]:
    return {"avg_macs": ["val_error", "expected_macs"], "avg_latency": ["val_error", "expected_latency_ms"],
            "macs_target": ["error_plus_mape", "macs_mape"]}[settings.objective]
