"""Export a found network for runtimes outside this package.

Three forms, for three kinds of runtime:

* ONNX of the whole network with **every exit as an output** (``exit_0`` ...
  ``exit_{n-1}``, final last): for runtimes that evaluate all heads and decide
  outside the graph, and for checking the weights against torch.
* ONNX per **segment + exit** (``segment_k.onnx``: features in, ``features`` and
  ``logits`` out): for runtimes that run segment by segment and stop early.
* **TorchScript** of the adaptive model itself (decision rule and batch
  compaction inside the graph), loadable with ``torch.jit.load`` without aebnas.

ONNX needs the ``export`` extra (``pip install -e ".[export]"``: onnx, onnxscript,
onnxruntime).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from aebnas.nn import EarlyExitNet
from aebnas.runtime.adaptive import AdaptiveModel, confidence_torch


class _AllExits(nn.Module):
    def __init__(self, net: EarlyExitNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.net(x))


class SegmentExit(nn.Module):
    """Segment k followed by exit k's head: returns the features for segment k+1 and exit k's logits."""

    def __init__(self, segment: nn.Module, head: nn.Module):
        super().__init__()
        self.segment = segment
        self.head = head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.segment(x)
        return features, self.head(features)


def _require_onnx(dynamo: bool) -> None:
    try:
        import onnx  # noqa: F401
        if dynamo:
            import onnxscript  # noqa: F401
    except ImportError:
        raise ImportError("ONNX export needs the export extra: pip install -e \".[export]\" "
                          "(onnx, onnxscript, onnxruntime)") from None


def _export(module: nn.Module, example: torch.Tensor, path: Path, output_names: list[str], dynamo: bool) -> Path:
    """Batch size stays dynamic. ``dynamo=False`` uses torch's older TorchScript-based exporter: deprecated,
    but about ten times faster to run, which the tests use for the per-segment graphs."""
    _require_onnx(dynamo)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    module = module.eval()
    if dynamo:
        torch.onnx.export(module, (example,), tmp, input_names=["input"], output_names=output_names,
                          dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}}, external_data=False,
                          verbose=False)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module, (example,), tmp, input_names=["input"], output_names=output_names,
                              dynamic_axes={"input": {0: "batch"}}, dynamo=False)
    tmp.replace(path)
    return path


def export_onnx_all_exits(net: EarlyExitNet, example: torch.Tensor, path: str | Path, dynamo: bool = True) -> Path:
    """One ONNX graph, input ``input`` [batch, C, H, W], outputs ``exit_0`` ... (final classifier last)."""
    with torch.no_grad():
        return _export(_AllExits(net.eval()), example, Path(path), [f"exit_{k}" for k in range(net.n_exits)], dynamo)


def export_onnx_segments(net: EarlyExitNet, example: torch.Tensor, out_dir: str | Path,
                         dynamo: bool = True) -> list[Path]:
    """``segment_k.onnx`` per exit: features in, ``features`` and ``logits`` out (the last one's features unused)."""
    out_dir = Path(out_dir)
    paths = []
    x = example
    with torch.no_grad():
        for k, (segment, head) in enumerate(zip(net.eval().segments, net.heads)):
            module = SegmentExit(segment, head)
            paths.append(_export(module, x, out_dir / f"segment_{k}.onnx", ["features", "logits"], dynamo))
            x = segment(x)
    return paths


class _Stage(nn.Module):
    def __init__(self, segment: nn.Module, head: nn.Module):
        super().__init__()
        self.segment = segment
        self.head = head


class ScriptableAdaptive(nn.Module):
    """The adaptive model's rule and compaction in scriptable torch: ``forward(x) -> (prediction, exit_index)``."""

    def __init__(self, net: EarlyExitNet, thresholds: Sequence[float], metric: str):
        super().__init__()
        self.stages = nn.ModuleList([_Stage(s, h) for s, h in zip(net.segments, net.heads)])
        self.thresholds = [float(t) for t in thresholds] + [0.0]  # never empty: TorchScript infers List[float]
        self.metric = metric

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        last = len(self.thresholds) - 1
        prediction = torch.zeros(n, dtype=torch.long, device=x.device)
        exit_index = torch.full((n,), last, dtype=torch.long, device=x.device)
        alive = torch.arange(n, device=x.device)
        k = 0
        for stage in self.stages:
            x = stage.segment(x)
            threshold = self.thresholds[k]
            if k == last:
                prediction[alive] = stage.head(x).argmax(-1)
            elif threshold <= 1.0 and alive.numel() > 0:
                logits = stage.head(x)
                leave = confidence_torch(logits, self.metric) >= threshold
                gone = alive[leave]
                prediction[gone] = logits[leave].argmax(-1)
                exit_index[gone] = k
                stay = ~leave
                alive = alive[stay]
                x = x[stay]
            k += 1
        return prediction, exit_index


def script_adaptive(model: AdaptiveModel, path: str | Path | None = None) -> torch.jit.ScriptModule:
    """TorchScript of the adaptive model at its current thresholds; saved to ``path`` when given."""
    thresholds = [t if not math.isinf(t) else 2.0 for t in model.thresholds]  # > 1: exit off
    scripted = torch.jit.script(ScriptableAdaptive(model.net, thresholds, model.metric).eval())
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        scripted.save(str(tmp))
        tmp.replace(path)
    return scripted
