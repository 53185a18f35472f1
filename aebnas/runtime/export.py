"""Export a found network for runtimes outside this package.

Four forms, for four kinds of runtime:

* ONNX of the whole network with **every exit as an output** (``exit_0`` ...
  ``exit_{n-1}``, final last): for runtimes that evaluate all heads and decide
  outside the graph, and for checking the weights against torch.
* ONNX per **segment + exit** (``segment_k.onnx``: features in, ``features`` and
  ``logits`` out): for runtimes that run segment by segment and stop early.
* **torch.export** of the adaptive model itself (decision rule and batch
  compaction inside the program, BatchNorm folded into the convolutions): a
  ``.pt2`` file that ``torch.export.load`` runs without aebnas (AOTInductor
  miscompiles it in torch 2.14.1: see ``export_adaptive``).
* **TorchScript** of the same, for LibTorch (C++) runtimes: deprecated by
  torch 2.14, but today the compiled form of the adaptive model that works.

ONNX needs the ``export`` extra (``pip install -e ".[export]"``: onnx, onnxscript,
onnxruntime).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from aebnas.atomic_write import atomic_path
from aebnas.nn import EarlyExitNet, fold_batchnorm
from aebnas.exits import confidence_torch
from aebnas.runtime.adaptive import AdaptiveModel


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


def require_onnx(dynamo: bool) -> None:
    """ImportError with the install line when the export extra is missing."""
    try:
        import onnx  # noqa: F401
        if dynamo:
            import onnxscript  # noqa: F401
    except ImportError:
        raise ImportError("ONNX export needs the export extra: pip install -e \".[export]\" "
                          "(onnx, onnxscript, onnxruntime)") from None


# The batch dimension of the forward's input ``x`` left free in every exported graph.
_DYNAMIC_BATCH = {"x": {0: torch.export.Dim("batch", min=1)}}


def dynamic_batch_example(example: torch.Tensor) -> torch.Tensor:
    """A copy of ``example`` with at least two images: from one, torch.export would fix the batch size at 1.

    A copy, too, because an exported program keeps its example, and a slice would bring the whole batch it views.
    """
    return (example[:1].repeat(2, *[1] * (example.dim() - 1)) if example.shape[0] == 1 else example).clone()


def _export(module: nn.Module, example: torch.Tensor, path: Path, output_names: list[str], dynamo: bool) -> Path:
    """Batch size stays dynamic. ``dynamo=False`` uses torch's older TorchScript-based exporter: deprecated,
    but about ten times faster to run, which the tests use for the per-segment graphs."""
    require_onnx(dynamo)
    module = module.eval()
    example = dynamic_batch_example(example)

    def write(tmp: Path) -> None:
        if dynamo:
            torch.onnx.export(module, (example,), tmp, input_names=["input"], output_names=output_names,
                              dynamic_shapes=_DYNAMIC_BATCH, external_data=False,
                              verbose=False)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(module, (example,), tmp, input_names=["input"], output_names=output_names,
                                  dynamic_axes={"input": {0: "batch"}}, dynamo=False)

    _save_whole(path, write)
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
        _save_whole(Path(path), lambda tmp: scripted.save(str(tmp)))
    return scripted


def _save_whole(path: Path, write: Callable[[Path], None]) -> None:
    """Write in a temporary folder beside ``path``, then move: an interrupted save leaves no half-written model.

    The file keeps its own name there: torch.export.save names the archive's root after it.
    """
    with atomic_path(path, keep_name=True) as tmp:
        write(tmp)


class ExportableAdaptive(nn.Module):
    """The adaptive model as ``torch.export`` can trace it: ``forward(x) -> (prediction, exit_index)``.

    Compaction gives the later segments a batch of data-dependent size. The rest of the network
    after each enabled exit sits in a ``torch.cond`` that runs it only while some samples stay: a
    batch that has all left stops there (at batch 1 that is the whole saving) instead of running
    the later segments on no samples. Expects BatchNorm folded (``fold_batchnorm``): torch.export
    cannot trace a BatchNorm on a batch of data-dependent size.
    """

    def __init__(self, net: EarlyExitNet, thresholds: Sequence[float], metric: str):
        super().__init__()
        self.segments, self.heads = net.segments, net.heads
        self.thresholds = [float(t) for t in thresholds]  # > 1 (or inf): that exit is off
        self.metric = metric

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        prediction = torch.zeros(n, dtype=torch.long, device=x.device)
        exit_index = torch.full((n,), len(self.segments) - 1, dtype=torch.long, device=x.device)
        return self._from(0, x, torch.arange(n, device=x.device), prediction, exit_index)

    def _from(self, k: int, x: torch.Tensor, alive: torch.Tensor, prediction: torch.Tensor,
              exit_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Segments k.. on the samples ``alive`` (indices into the batch), writing their results out of place."""
        x = self.segments[k](x)
        if k == len(self.segments) - 1:
            return prediction.index_put((alive,), self.heads[k](x).argmax(-1)), exit_index.clone()
        if not self.thresholds[k] <= 1.0:
            return self._from(k + 1, x, alive, prediction, exit_index)
        logits = self.heads[k](x)
        leave = confidence_torch(logits, self.metric) >= self.thresholds[k]
        gone = alive[leave]
        prediction = prediction.index_put((gone,), logits[leave].argmax(-1))
        exit_index = exit_index.index_put((gone,), torch.full_like(gone, k))
        stay = ~leave

        def go_on(x, alive, prediction, exit_index):
            return self._from(k + 1, x, alive, prediction, exit_index)

        def stop(x, alive, prediction, exit_index):
            return prediction.clone(), exit_index.clone()

        return torch.cond(stay.any(), go_on, stop, (x[stay], alive[stay], prediction, exit_index))


def export_adaptive(model: AdaptiveModel, example: torch.Tensor,
                    path: str | Path | None = None) -> torch.export.ExportedProgram:
    """``torch.export`` of the adaptive model at its current thresholds, batch size dynamic; saved to ``path``.

    BatchNorm is folded first (``fold_batchnorm``), so the program computes what
    ``AdaptiveModel(fold_batchnorm(model.net), model.thresholds, model.metric)`` computes. Run it with
    ``torch.export.load(path).module()(x)``; it returns ``(prediction, exit_index)``.

    Do not compile it with AOTInductor on torch 2.14.1: ``experiments/bench_export.py --aoti`` measured
    wrong exits from the compiled program at batch 1 and a refused batch of 256 (docs/results/runtime.md).
    """
    module = ExportableAdaptive(fold_batchnorm(model.net), model.thresholds, model.metric).eval()
    example = dynamic_batch_example(example)
    with torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes=_DYNAMIC_BATCH,
                                      strict=False)
    if path is not None:
        _save_whole(Path(path), lambda tmp: torch.export.save(program, tmp))
    return program
