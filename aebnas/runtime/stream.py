"""Stream benchmark: the same test images through the static network and the adaptive model.

Images arrive in order, in batches of a fixed size (1 for a camera-like stream).
Inputs are normalised and resident on the device before the clock starts, so
the timing covers the network and its exit decisions only; every batch is
synchronised on CUDA, and a few warm-up batches run untimed first.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from aebnas.cost import NetworkCost
from aebnas.data import ArraySplit, normalize
from aebnas.nn import EarlyExitNet
from aebnas.runtime.adaptive import AdaptiveModel
from aebnas.runtime.operating_points import NAMES, path_costs_with
from aebnas.runtime.run_network import RunChoiceSettings, load_run_network, point_label
from aebnas.search.archive import write_text_atomic
from aebnas.config_checks import check_int, setting

log = logging.getLogger("aebnas.runtime")


@dataclass
class StreamResult:
    """One pass of the stream through one model at one batch size."""

    model: str                       # "static" or "adaptive"
    batch_size: int
    images: int
    seconds: float
    images_per_second: float
    mean_latency_ms: float           # per batch
    median_latency_ms: float         # per batch; robust to the odd stall on a shared machine
    p99_latency_ms: float            # per batch
    accuracy: float
    effective_macs: float            # mean MACs actually spent per image
    exit_histogram: list[int]        # images per exit, final last (static: all at the final one)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_stream(step: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]], x: torch.Tensor,
                 batch_size: int, warmup: int, desc: str, progress: bool = False):
    """Run ``step`` over ``x`` in order, batch by batch; per-batch wall times and the concatenated outputs."""
    device = x.device
    starts = list(range(0, x.shape[0], batch_size))
    for i in range(min(warmup, len(starts))):
        step(x[starts[i]:starts[i] + batch_size])
    _sync(device)
    times, preds, exits = [], [], []
    for s in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False, dynamic_ncols=True):
        t0 = time.perf_counter()
        pred, where = step(x[s:s + batch_size])
        _sync(device)
        times.append(time.perf_counter() - t0)
        preds.append(pred)
        if where is not None:
            exits.append(where)
    pred = torch.cat(preds).cpu().numpy()
    where = torch.cat(exits).cpu().numpy() if exits else None
    return np.asarray(times), pred, where


def static_step(net: EarlyExitNet) -> Callable[[torch.Tensor], tuple[torch.Tensor, None]]:
    """One batch through the network to full depth, final classifier only: the static baseline of a stream."""

    def step(xb):
        with torch.inference_mode():
            return net.forward_static(xb).argmax(-1), None

    return step


def adaptive_step(model: AdaptiveModel) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """One batch through the adaptive model: (prediction, exit index) per sample."""

    def step(xb):
        out = model(xb)
        return out.prediction, out.exit_index

    return step


def _result(name: str, batch_size: int, times: np.ndarray, correct: np.ndarray, costs: np.ndarray,
            histogram: np.ndarray) -> StreamResult:
    total = float(times.sum())
    return StreamResult(model=name, batch_size=batch_size, images=int(correct.size), seconds=total,
                        images_per_second=correct.size / total, mean_latency_ms=float(times.mean() * 1e3),
                        median_latency_ms=float(np.median(times) * 1e3),
                        p99_latency_ms=float(np.percentile(times, 99) * 1e3), accuracy=float(correct.mean()),
                        effective_macs=float(costs.mean()), exit_histogram=[int(c) for c in histogram])


def prepare_stream(split: ArraySplit, mean, std, n_images: int, device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """The first ``n_images`` test images, normalised, on ``device``; and their labels."""
    n = min(n_images, len(split))
    return normalize(split.x[:n].to(device), mean, std), split.y[:n].numpy()


def run_static(model: AdaptiveModel, cost: NetworkCost, x: torch.Tensor, labels: np.ndarray, batch_size: int,
               warmup: int = 10, progress: bool = True) -> StreamResult:
    """The same backbone to full depth with the final classifier only (no exit heads, no decisions)."""
    net = model.net
    times, pred, _ = timed_stream(static_step(net), x, batch_size, warmup, f"static b{batch_size}", progress)
    hist = np.zeros(net.n_exits, dtype=int)
    hist[-1] = pred.size
    return _result("static", batch_size, times, pred == labels, np.full(pred.size, float(cost.static_macs)), hist)


def run_adaptive(model: AdaptiveModel, cost: NetworkCost, x: torch.Tensor, labels: np.ndarray, batch_size: int,
                 warmup: int = 10, progress: bool = True) -> StreamResult:
    """The adaptive model at its current thresholds; MACs counted from where each image really left."""
    times, pred, where = timed_stream(adaptive_step(model), x, batch_size, warmup, f"adaptive b{batch_size}",
                                      progress)
    paths = path_costs_with(cost, np.isfinite(model.thresholds))
    hist = np.bincount(where, minlength=model.n_exits)
    return _result("adaptive", batch_size, times, pred == labels, paths[where], hist)


def stream_benchmark(model: AdaptiveModel, cost: NetworkCost, x: torch.Tensor, labels: np.ndarray,
                     batch_sizes: Sequence[int], warmup: int = 10, table_points: Sequence[str] = (),
                     progress: bool = True) -> dict:
    """Static vs adaptive at each batch size, then the adaptive model at each named point (batch 1).

    The model keeps the operating point it came with; the table switches points
    between passes, as a runtime would between batches.
    """
    model.net.to(x.device)
    comparisons = []
    for b in batch_sizes:
        static = run_static(model, cost, x, labels, b, warmup, progress)
        adaptive = run_adaptive(model, cost, x, labels, b, warmup, progress)
        comparisons.append({"batch_size": b, "static": static.to_dict(), "adaptive": adaptive.to_dict(),
                            "speedup": adaptive.images_per_second / static.images_per_second,
                            "macs_reduction": static.effective_macs / adaptive.effective_macs,
                            "accuracy_change": adaptive.accuracy - static.accuracy})
    table = []
    chosen, chosen_point = model.thresholds, model.operating_point
    for name in table_points:
        point = model.set_operating_point(name)
        r = run_adaptive(model, cost, x, labels, 1, warmup, progress)
        table.append({"operating_point": name, "thresholds": list(point.thresholds),
                      "val_accuracy": point.val_accuracy, "val_expected_macs": point.expected_macs, **r.to_dict()})
    model.set_thresholds([None if np.isinf(t) else t for t in chosen])
    model.operating_point = chosen_point
    return {"comparisons": comparisons, "operating_points": table}


def _batch_sizes(value: Any, name: str, error: type[Exception]) -> int | tuple[int, ...]:
    """One batch size or several (``batch_size=[256,1024]``): a GPU's throughput depends on it, so one run sweeps."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise error(f"{name}: an empty list; give a batch size such as 256, or a list such as [256,1024]")
        return tuple(check_int(v, f"{name}[{i}]", lo=1, error=error) for i, v in enumerate(value))
    return check_int(value, name, lo=1, error=error)


@dataclass(frozen=True)
class StreamSettings(RunChoiceSettings):
    """The ``aebnas-stream`` config (conf/stream.yaml), checked field by field before any work starts."""

    section: ClassVar[str] = "stream"

    num_threads: int | None = setting(2, lo=1, help="torch's CPU threads (recorded in stream.json; null: torch's "
                                                    "default).")
    n_images: int = setting(2000, lo=1, help="The stream: the first n_images test images.")
    batch_size: int | tuple[int, ...] = setting(256, check=_batch_sizes, allowed="an integer >= 1 or a list of them",
                                                help="Batch size of the batched stream, or a list such as "
                                                     "[256,1024,4096] (a GPU's throughput depends on it).")
    batch_one: bool = setting(True, help="Also stream at batch 1 (false: batched only).")
    warmup: int = setting(20, lo=0, help="Untimed batches before timing.")
    operating_point_table: bool = setting(True, help="Also time the three named operating points at batch 1.")
    progress: bool = setting(True, help="Progress bars.")
    fold_batchnorm: bool = setting(True, help="Run both networks with BatchNorm folded into the convolutions, as a "
                                              "deployment would (answers change only by float rounding).")

    @property
    def batch_sizes(self) -> list[int]:
        """Batch sizes in the order they are timed: 1 first (unless ``batch_one`` is off), then ``batch_size``."""
        sizes = [self.batch_size] if isinstance(self.batch_size, int) else list(self.batch_size)
        head = [1] if self.batch_one else []
        return head + [b for b in dict.fromkeys(sizes) if not (self.batch_one and b == 1)]


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_stream(settings: StreamSettings, out_dir: Path) -> dict:
    """The whole ``aebnas-stream`` job: load the run's network and test split, benchmark, write stream.json/png."""
    inputs = load_run_network(settings.run, settings.model, settings.device, settings.num_threads, settings.data_dir,
                              settings.recompute_operating_points)
    saved, data, device = inputs.saved, inputs.data, inputs.device
    model = AdaptiveModel.from_saved(saved, inputs.points, fold=settings.fold_batchnorm)  # static and adaptive alike
    point = model.set_operating_point(settings.operating_point, settings.min_accuracy, settings.max_macs)
    x, labels = prepare_stream(data.test, data.mean, data.std, settings.n_images, device)
    bench = stream_benchmark(model, saved.cost, x, labels, settings.batch_sizes, settings.warmup,
                             NAMES if settings.operating_point_table else (), settings.progress)
    label = point_label(settings.operating_point, settings.min_accuracy, settings.max_macs)
    result = {
        "run": str(inputs.run_path), "model_dir": str(saved.path), "genome": saved.net.genome.to_text(),
        "dataset": data.name, "test_images": int(x.shape[0]), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "num_threads": torch.get_num_threads(), "exit_metric": model.metric,
        "fold_batchnorm": settings.fold_batchnorm,
        "operating_point_label": label, "operating_point": {"thresholds": list(point.thresholds),
                                                            "val_accuracy": point.val_accuracy,
                                                            "val_expected_macs": point.expected_macs},
        "static_macs": saved.cost.static_macs, "path_macs": list(saved.cost.path_macs), **bench,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "stream.json", json.dumps(result, indent=2))
    try:
        from aebnas.analysis.stream_plot import plot_stream

        plot_stream(result, out_dir / "stream.png")
    except Exception as exc:  # a plot must never cost the results
        log.warning("could not draw stream.png: %s", exc)
    return result
