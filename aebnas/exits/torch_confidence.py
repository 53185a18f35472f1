"""The confidence metrics in torch ops, for the networks that decide on their own device (the adaptive runtime
and its exported graphs)."""

from __future__ import annotations

import math

import torch


def confidence_torch(logits: torch.Tensor, metric: str) -> torch.Tensor:
    """The metrics of :func:`aebnas.exits.thresholds.confidence` in torch ops, on the logits' device and in
    float64 as there: the adaptive model decides without sending logits to the host, and a scripted graph can
    hold them. A test holds the two together to 1e-12."""
    p = torch.softmax(logits.double(), dim=-1)
    if metric == "max_softmax":
        return p.max(dim=-1).values
    if metric == "margin":
        top2 = torch.topk(p, 2, dim=-1).values
        return top2[..., 0] - top2[..., 1]
    h = -(p * torch.log(torch.clamp(p, min=1e-12, max=1.0))).sum(dim=-1)
    return 1.0 - h / math.log(p.shape[-1])
