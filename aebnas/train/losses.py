"""Joint training loss of all exits: a weighted sum of cross-entropies, with optional self-distillation.

Self-distillation lets each early exit learn the final classifier's softened predictions besides the
labels. An early exit decides on far fewer features than the final one, and the final exit's class
similarities may be an easier target for it than one-hot labels. Whether it pays depends on the network:
on the stream benchmark's network it made every exit less accurate (docs/results/adaptive-runtime.md), so
it is off unless asked for.
"""

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
                    label_smoothing: float = 0.0, distill: float = 0.0, temperature: float = 1.0) -> torch.Tensor:
    """Weighted sum of the exits' losses; the final exit (last) always learns from the labels alone.

    With ``distill`` > 0 each early exit's loss is ``(1 - distill) * CE + distill * T^2 * KL(final || exit)``
    at temperature ``T``, the final exit's softened predictions taken as a fixed target (no gradient flows
    back into the final exit through them).
    """
    total = logits[0].new_zeros((), dtype=torch.float32)
    last = len(logits) - 1
    teacher = None
    if distill and last > 0:
        teacher = F.log_softmax(logits[last].detach().float() / temperature, dim=1)
    for k, (w, out) in enumerate(zip(weights, logits)):
        if not w:
            continue
        ce = F.cross_entropy(out.float(), target, label_smoothing=label_smoothing)
        if teacher is not None and k < last:
            student = F.log_softmax(out.float() / temperature, dim=1)
            kd = F.kl_div(student, teacher, reduction="batchmean", log_target=True) * temperature ** 2
            ce = (1.0 - distill) * ce + distill * kd
        total = total + w * ce
    return total
