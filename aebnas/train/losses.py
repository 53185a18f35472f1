"""Joint training loss of all exits: a weighted sum of cross-entropies."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from aebnas.config_checks import ConfigError


def exit_loss_weights(n_exits: int, scheme: str | Sequence[float] = "uniform",
                      field: str = "trainer.exit_weights") -> list[float]:
    """Per-exit loss weights; ``linear`` favours deep exits (k / n), lists are taken as given.

    A list names weights for the early exits and the final one; it is matched to
    the network's active exits from the end, so one list serves genomes with
    fewer exits (the final classifier always takes the last weight).
    """
    if isinstance(scheme, str):
        if scheme == "uniform":
            return [1.0] * n_exits
        if scheme == "linear":
            return [(k + 1) / n_exits for k in range(n_exits)]
        raise ConfigError(f"{field}: unknown scheme '{scheme}'; use uniform, linear or a list of numbers")
    try:
        weights = [float(w) for w in scheme]
    except (TypeError, ValueError):
        raise ConfigError(f"{field}: expected uniform, linear or a list of numbers, got {scheme!r}") from None
    if not weights or any(w < 0 for w in weights):
        raise ConfigError(f"{field}: a list must hold non-negative numbers")
    if len(weights) >= n_exits:
        return weights[len(weights) - n_exits:]
    return [weights[0]] * (n_exits - len(weights)) + weights


def joint_exit_loss(logits: Sequence[torch.Tensor], target: torch.Tensor, weights: Sequence[float],
                    label_smoothing: float = 0.0) -> torch.Tensor:
    total = logits[0].new_zeros((), dtype=torch.float32)
    for w, out in zip(weights, logits):
        if w:
            total = total + w * F.cross_entropy(out.float(), target, label_smoothing=label_smoothing)
    return total
