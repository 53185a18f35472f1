"""Adaptive inference: run the backbone segment by segment and let confident samples leave.

The decision rule is the one the search simulated (:mod:`aebnas.exits`):
a sample leaves at the first enabled exit whose confidence reaches that exit's
threshold, at the final classifier otherwise. Here it is applied for real: after
each exit the samples that left are removed from the batch (batch compaction),
so the deeper segments only run on the hard ones. A batch of one takes a path
with no indexing at all. Samples never interact in eval mode, so compaction gives
the predictions of running every exit on every sample and picking by the rule
(:func:`reference_exits`); the one caveat is float arithmetic: a backend may round
a sample's logits differently in batches of different size (last bit), which can
only matter for a sample whose confidence equals a threshold to that precision.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from aebnas.cost import NetworkCost, network_cost
from aebnas.nn import EarlyExitNet, build_model, fold_batchnorm
from aebnas.runtime.operating_points import OperatingPoint, OperatingPoints
from aebnas.exits import METRICS, confidence, confidence_torch, exit_indices
from aebnas.space import Genome
from aebnas.config_checks import ConfigError


@dataclass
class AdaptiveOutput:
    """Per sample: the predicted class and the exit it left at (0 = first exit, n_exits - 1 = final)."""

    prediction: torch.Tensor
    exit_index: torch.Tensor


@dataclass
class SavedModel:
    """A Pareto network as ``aebnas-search`` saved it: weights, genome and the data facts it was trained on."""

    path: Path
    net: EarlyExitNet
    meta: dict[str, Any]

    @property
    def cost(self) -> NetworkCost:
        return network_cost(self.net.genome, self.meta["num_classes"], self.meta["in_channels"],
                            self.meta["resolution"])


def load_saved_model(model_dir: str | Path, map_location: str | torch.device = "cpu") -> SavedModel:
    """Rebuild a saved Pareto network from ``models/NN_hash/`` (model.pt, genome.json, metrics.json)."""
    model_dir = Path(model_dir)
    for name in ("model.pt", "genome.json", "metrics.json"):
        if not (model_dir / name).exists():
            raise FileNotFoundError(f"model dir: no {name} in '{model_dir}'; pass a models/NN_hash directory "
                                    "written by aebnas-search")
    genome = Genome.from_json((model_dir / "genome.json").read_text())
    meta = json.loads((model_dir / "metrics.json").read_text())
    net = build_model(genome, meta["num_classes"], meta["in_channels"])
    net.load_state_dict(torch.load(model_dir / "model.pt", map_location=map_location))
    return SavedModel(model_dir, net.eval(), meta)


def _check_thresholds(thresholds: Sequence[float | None], n_early: int) -> tuple[float, ...]:
    """Floats for the decision; ``None`` or +inf (exit off) becomes +inf, which no confidence reaches."""
    if len(thresholds) != n_early:
        raise ConfigError(f"thresholds: expected {n_early} values for {n_early} early exits, got {len(thresholds)}")
    out = []
    for i, t in enumerate(thresholds):
        if t is None or (isinstance(t, float) and t == math.inf):
            out.append(math.inf)
        elif isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
            raise ConfigError(f"thresholds[{i}]: {t!r} is not a confidence in [0, 1] (or null to switch the exit off)")
        else:
            out.append(float(t))
    return tuple(out)


class AdaptiveModel(nn.Module):
    """An :class:`EarlyExitNet` run adaptively at a switchable operating point.

    ``thresholds`` has one entry per early exit; ``None`` (or +inf) switches an
    exit off, and its head is then never evaluated.
    """

    def __init__(self, net: EarlyExitNet, thresholds: Sequence[float | None] | None = None,
                 metric: str = "max_softmax", operating_points: OperatingPoints | None = None):
        super().__init__()
        if metric not in METRICS:
            raise ConfigError(f"exit_metric: unknown metric '{metric}'; use one of {list(METRICS)}")
        self.net = net.eval()
        self.metric = metric
        self.operating_points = operating_points
        self.operating_point: OperatingPoint | None = None
        self.thresholds = _check_thresholds(net.thresholds if thresholds is None else thresholds, net.n_exits - 1)

    @classmethod
    def from_saved(cls, saved: SavedModel, operating_points: OperatingPoints | None = None,
                   fold: bool = False) -> "AdaptiveModel":
        """The saved network with its genome's thresholds, under the metric of ``operating_points`` (without
        them, the metric its search used).

        ``fold``: run a copy with BatchNorm folded into the convolutions (``fold_batchnorm``), the faster
        form for inference; ``saved.net`` keeps its BatchNorm either way.
        """
        metric = operating_points.metric if operating_points else saved.meta.get("exit_metric", "max_softmax")
        return cls(fold_batchnorm(saved.net) if fold else saved.net, None, metric, operating_points)

    @property
    def n_exits(self) -> int:
        return self.net.n_exits

    def set_thresholds(self, thresholds: Sequence[float | None]) -> None:
        """Switch thresholds between batches (no state carries over from one batch to the next)."""
        self.thresholds = _check_thresholds(thresholds, self.n_exits - 1)
        self.operating_point = None

    def set_operating_point(self, name: str | None = None, min_accuracy: float | None = None,
                            max_macs: float | None = None) -> OperatingPoint:
        """Pick a stored operating point by name, accuracy floor or MACs budget, and switch to it."""
        if self.operating_points is None:
            raise ConfigError("operating_point: this model has no operating points; build it with "
                              "operating_points=compute_operating_points(...) or OperatingPoints.load(model_dir)")
        point = self.operating_points.select(name, min_accuracy, max_macs)
        self.set_thresholds(point.thresholds)
        self.operating_point = point
        return point

    def _leaves(self, logits: torch.Tensor, k: int) -> torch.Tensor:
        """The search's rule on this exit's logits (same metric, same comparison), on the logits' device."""
        return confidence_torch(logits.detach(), self.metric) >= self.thresholds[k]

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> AdaptiveOutput:
        if x.shape[0] == 1:
            return self._forward_one(x)
        return self._forward_batch(x)

    def _forward_one(self, x: torch.Tensor) -> AdaptiveOutput:
        """One sample: stop at the first exit that lets it go; no masks, no gathers."""
        last = self.n_exits - 1
        for k, (segment, head) in enumerate(zip(self.net.segments, self.net.heads)):
            x = segment(x)
            if k == last:
                logits = head(x)
                break
            if math.isinf(self.thresholds[k]):
                continue
            logits = head(x)
            if bool(self._leaves(logits, k)[0]):
                break
        return AdaptiveOutput(logits.argmax(-1), torch.full((1,), k, dtype=torch.long, device=x.device))

    def _forward_batch(self, x: torch.Tensor) -> AdaptiveOutput:
        """Batch compaction: after each enabled exit, only the samples still undecided go on.

        The host waits for the device once per enabled exit, for the number of samples leaving there (the
        next segment's batch size depends on it); the decisions and the gathers stay on the device. A boolean
        mask would wait once per indexing instead.
        """
        n, device, last = x.shape[0], x.device, self.n_exits - 1
        prediction = torch.empty(n, dtype=torch.long, device=device)
        exit_index = torch.full((n,), last, dtype=torch.long, device=device)
        alive = torch.arange(n, device=device)
        for k, (segment, head) in enumerate(zip(self.net.segments, self.net.heads)):
            x = segment(x)
            if k == last:
                prediction[alive] = head(x).argmax(-1)
                break
            if math.isinf(self.thresholds[k]):
                continue
            logits = head(x)
            leave = self._leaves(logits, k)
            n_leave = int(leave.sum())
            if n_leave == 0:
                continue
            # leaving samples first, each group in batch order: one sort instead of two masked selections
            order = torch.argsort(leave.to(torch.uint8), descending=True, stable=True)
            gone, stay = order[:n_leave], order[n_leave:]
            prediction[alive[gone]] = logits[gone].argmax(-1)
            exit_index[alive[gone]] = k
            alive, x = alive[stay], x[stay]
            if alive.numel() == 0:
                break
        return AdaptiveOutput(prediction, exit_index)


def reference_exits(net: EarlyExitNet, x: torch.Tensor, thresholds: Sequence[float | None],
                    metric: str) -> AdaptiveOutput:
    """Every exit on every sample, then the search's rule: what compaction must reproduce exactly."""
    with torch.inference_mode():
        logits = torch.stack(net.eval()(x)).float().cpu().numpy()
    idx = exit_indices(confidence(logits, metric), _check_thresholds(thresholds, net.n_exits - 1))
    pred = logits.argmax(-1)[idx, np.arange(logits.shape[1])]
    return AdaptiveOutput(torch.from_numpy(pred), torch.from_numpy(idx))
