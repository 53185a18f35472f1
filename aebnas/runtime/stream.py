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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from aebnas.cost import NetworkCost
from aebnas.data import ArraySplit, normalize
from aebnas.nn import EarlyExitNet
from aebnas.runtime.adaptive import AdaptiveModel
from aebnas.runtime.budget import Budget, BudgetController, ControllerSettings, KINDS, budget_from
from aebnas.runtime.operating_points import (NAMES, OperatingPoint, binomial_se, paired_standard_errors,
                                             path_costs_with)
from aebnas.runtime.run_network import (RunChoiceSettings, load_run_network, operating_point_setting,
                                        point_label)
from aebnas.atomic_write import write_text_atomic
from aebnas.config_checks import Settings, check_int, setting

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
    # per image, right or wrong: kept for paired comparisons between passes, not written to stream.json
    correct: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "correct"}


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
                        effective_macs=float(costs.mean()), exit_histogram=[int(c) for c in histogram],
                        correct=np.asarray(correct, dtype=bool))


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


def points_lost(val_reference: float | None, point: OperatingPoint, static_correct: np.ndarray | None,
                adaptive_correct: np.ndarray | None) -> dict[str, float]:
    """Accuracy points a named point gives up against the static network, as val predicted and as the test
    images show, each with its standard error paired over the same images (val's from the stored point).

    Side by side they show a val split that flattered the point: the test loss far beyond the val one.
    ``val_reference`` is the final exit's val accuracy (the points' ``reference_accuracy``).
    """
    out: dict[str, float] = {}
    if val_reference is not None:
        out["val_points_lost"] = (val_reference - point.val_accuracy) * 100
        if point.se_vs_reference is not None:
            out["val_points_lost_se"] = point.se_vs_reference * 100
    if static_correct is not None and adaptive_correct is not None:
        if len(static_correct) != len(adaptive_correct):
            raise ValueError(f"points_lost: {len(static_correct)} static answers against {len(adaptive_correct)} "
                             "adaptive ones; both passes must stream the same images")
        out["test_points_lost"] = float(static_correct.mean() - adaptive_correct.mean()) * 100
        out["test_points_lost_se"] = float(paired_standard_errors(adaptive_correct[None, :], static_correct)[0]) * 100
    return out


def stream_benchmark(model: AdaptiveModel, cost: NetworkCost, x: torch.Tensor, labels: np.ndarray,
                     batch_sizes: Sequence[int], warmup: int = 10, table_points: Sequence[str] = (),
                     progress: bool = True) -> dict:
    """Static vs adaptive at each batch size, then the adaptive model at each named point (batch 1).

    The model keeps the operating point it came with; the table switches points
    between passes, as a runtime would between batches.
    """
    model.net.to(x.device)
    comparisons = []
    static_correct = None
    for b in batch_sizes:
        static = run_static(model, cost, x, labels, b, warmup, progress)
        if static_correct is None or b == 1:
            static_correct = static.correct
        adaptive = run_adaptive(model, cost, x, labels, b, warmup, progress)
        comparisons.append({"batch_size": b, "static": static.to_dict(), "adaptive": adaptive.to_dict(),
                            "speedup": adaptive.images_per_second / static.images_per_second,
                            "macs_reduction": static.effective_macs / adaptive.effective_macs,
                            "accuracy_change": adaptive.accuracy - static.accuracy})
    table = []
    chosen, chosen_point = model.thresholds, model.operating_point
    reference = model.operating_points.reference_accuracy if model.operating_points is not None else None
    for name in table_points:
        point = model.set_operating_point(name)
        r = run_adaptive(model, cost, x, labels, 1, warmup, progress)
        table.append({"operating_point": name, "thresholds": list(point.thresholds),
                      "val_accuracy": point.val_accuracy, "val_accuracy_se": point.val_accuracy_se,
                      "val_se_vs_best": point.se_vs_best, "val_expected_macs": point.expected_macs, **r.to_dict(),
                      "accuracy_se": binomial_se(r.accuracy, r.images),
                      **points_lost(reference, point, static_correct, r.correct)})
    model.set_thresholds([None if np.isinf(t) else t for t in chosen])
    model.operating_point = chosen_point
    return {"comparisons": comparisons, "operating_points": table}


def run_controlled(model: AdaptiveModel, cost: NetworkCost, x: torch.Tensor, labels: np.ndarray,
                   controller: BudgetController, batch_size: int = 1, calibration: int = 40,
                   before_batch: Callable[[int], None] | None = None, progress: bool = False) -> dict:
    """The stream under a :class:`BudgetController`: it names the point for each batch from what was measured.

    First ``calibration`` images (the stream's first ones, untimed as results) run half at the most accurate
    and half at the cheapest point, so the controller's cost model spans the ladder; a target no point
    reaches is refused there. Each batch's time is wall time from its start to the next one's, the
    controller's own work included. ``before_batch(image_index)`` runs outside the clock (a benchmark changes
    the target or the machine's load there). Returns per-batch records and the switch log.
    """
    ladder = controller.ladder
    paths = [path_costs_with(cost, np.isfinite(p.threshold_array())) for p in ladder]
    device = x.device
    half = max(calibration // 2, 1) if calibration else 0
    for j, at in enumerate([len(ladder) - 1] * half + [0] * half):
        model.set_thresholds(ladder[at].thresholds)
        s = (j * batch_size) % x.shape[0]
        t0 = time.perf_counter()
        out = model(x[s:s + batch_size])
        _sync(device)
        seconds = time.perf_counter() - t0
        controller.observe(int(out.exit_index.numel()), seconds, float(paths[at][out.exit_index.cpu().numpy()].sum()),
                           point=at)
    if calibration:
        controller.finish_calibration()
    current = controller.index
    model.set_thresholds(ladder[current].thresholds)
    starts = list(range(0, x.shape[0], batch_size))
    rec = {k: np.zeros(len(starts)) for k in ("seconds", "images", "correct", "macs", "point", "target", "clock")}
    preds = []
    overhead = 0.0
    t_begin = time.perf_counter()
    for b, s in enumerate(tqdm(starts, desc="budget", unit="batch", disable=not progress, leave=False,
                               dynamic_ncols=True)):
        if before_batch is not None:
            before_batch(s)
        t0 = time.perf_counter()
        out = model(x[s:s + batch_size])
        _sync(device)
        where = out.exit_index.cpu().numpy()
        pred = out.prediction.cpu().numpy()
        macs = float(paths[current][where].sum())
        t1 = time.perf_counter()
        n = where.size
        rec["point"][b], rec["target"][b] = current, controller.budget.value
        nxt = controller.observe(n, (t1 - t0) + overhead, macs)
        if nxt != current:
            model.set_thresholds(ladder[nxt].thresholds)
            current = nxt
        t2 = time.perf_counter()
        overhead = t2 - t1
        rec["seconds"][b], rec["images"][b], rec["macs"][b] = t2 - t0, n, macs
        rec["correct"][b] = int((pred == labels[s:s + n]).sum())
        rec["clock"][b] = t0 - t_begin
        preds.append(pred)
    return {"records": {k: v.tolist() for k, v in rec.items()}, "switches": [w.to_dict() for w in controller.switches],
            "ladder": [{"thresholds": list(p.thresholds), "val_accuracy": p.val_accuracy,
                        "val_accuracy_se": p.val_accuracy_se, "val_expected_macs": p.expected_macs}
                       for p in ladder]}


def window_summary(records: Mapping[str, Sequence[float]], window: int, kind: str = "images_per_s",
                   skip: int = 0, top_point: int | None = None) -> list[dict]:
    """Per window of ``window`` images (after the first ``skip``): the measured quantity against the target,
    accuracy, MACs and the points used; ``within_10pct`` for the target's +-10 % band. A window holds the
    batches that start in it, so with a batch size that does not divide ``window`` its image count varies.

    ``held`` also counts a window that beats the target while it ran only the most accurate point
    (``top_point``, the ladder's last index): there the controller has no dearer point to spend the slack on.
    ``short_at_cheapest`` marks the mirror case, a window outside the band on the losing side (below it for
    images/s, above it for latency or MACs) while it ran only the cheapest point (index 0): nothing on the
    ladder was cheap enough then (a busy machine for a time target, hard images for a MACs target), so no
    choice of points could have held that window.
    """
    r = {k: np.asarray(v, dtype=float) for k, v in records.items()}
    first = np.cumsum(r["images"]) - r["images"]  # image index each batch starts at
    out = []
    edges = np.arange(skip, first[-1] + 1 if len(first) else 0, window) if len(first) else []
    total = r["images"].sum()
    for lo in edges:
        m = (first >= lo) & (first < lo + window)
        # a window holds the whole batches that start in it (at batch 64, 256 images or 192); only a last window
        # the stream ended inside is left out
        if m.sum() == 0 or (r["images"][m].sum() < window and total < lo + window):
            continue
        n, t = r["images"][m].sum(), r["seconds"][m].sum()
        value = {"images_per_s": n / t, "latency_ms": t / m.sum() * 1e3,
                 "p99_latency_ms": float(np.percentile(r["seconds"][m], 99)) * 1e3,
                 "macs_per_image": r["macs"][m].sum() / n}[kind]
        if kind == "images_per_s":  # the rate that spends, image by image, the time each image's target allows
            target = float(n / np.sum(r["images"][m] / r["target"][m]))
        else:
            target = float(np.average(r["target"][m], weights=r["images"][m]))
        within = bool(abs(value / target - 1) <= 0.10)
        points = sorted(set(int(p) for p in r["point"][m]))
        beats = bool(value > target if KINDS[kind][1] else value < target)
        meets = bool(value >= target * 0.9 if KINDS[kind][1] else value <= target * 1.1)
        out.append({"first_image": int(lo), "images": int(n), "start_s": float(r["clock"][m][0]),
                    "value": float(value), "target": target, "ratio": float(value / target),
                    "within_10pct": within,
                    "meets": meets,
                    "held": within or (top_point is not None and points == [top_point] and beats),
                    "short_at_cheapest": not meets and points == [0],
                    "accuracy": float(r["correct"][m].sum() / n), "macs_per_image": float(r["macs"][m].sum() / n),
                    "points": points})
    return out


def _batch_sizes(value: Any, name: str, error: type[Exception]) -> int | tuple[int, ...]:
    """One batch size or several (``batch_size=[256,1024]``): a GPU's throughput depends on it, so one run sweeps."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise error(f"{name}: an empty list; give a batch size such as 256, or a list such as [256,1024]")
        return tuple(check_int(v, f"{name}[{i}]", lo=1, error=error) for i, v in enumerate(value))
    return check_int(value, name, lo=1, error=error)


@dataclass(frozen=True)
class BudgetSettings(Settings):
    """The ``budget`` section of ``aebnas-stream``: one target (or none) and how the controller looks."""

    section: ClassVar[str] = "budget"

    images_per_s: float | None = setting(None, lo=0.0, lo_open=True, help="Hold at least this many images/s.")
    latency_ms: float | None = setting(None, lo=0.0, lo_open=True, help="Hold the mean latency per batch at most "
                                                                        "this (ms).")
    p99_latency_ms: float | None = setting(None, lo=0.0, lo_open=True, help="Hold the p99 latency per batch at "
                                                                            "most this (ms).")
    macs_per_image: float | None = setting(None, lo=0.0, lo_open=True, help="Hold the MACs spent per image at "
                                                                            "most this.")
    window: int = setting(200, lo=2, help="Images per reported window; the controller holds each one.")
    interval: int = setting(1, lo=1, help="Images between the controller's decisions (and one at each window's "
                                          "start).")
    margin: float = setting(0.0, lo=0.0, hi=0.5, help="Aim this far inside the target (0: the window's average "
                                                      "sits on it).")
    fit_window: int = setting(200, lo=2, help="Images the controller's time model is fitted on.")
    calibration: int = setting(40, lo=2, help="Untimed images before the controlled pass, half at the most "
                                              "accurate and half at the cheapest point.")

    def check_together(self) -> None:
        """At most one target."""
        budget_from({k: getattr(self, k) for k in KINDS})

    @property
    def budget(self) -> Budget | None:
        return budget_from({k: getattr(self, k) for k in KINDS})

    @property
    def controller(self) -> ControllerSettings:
        return ControllerSettings(self.window, self.interval, self.margin, self.fit_window)


def _budget_settings(value: Any, name: str, error: type[Exception]) -> BudgetSettings:
    return value if isinstance(value, BudgetSettings) else BudgetSettings.from_dict(value or {})


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
    operating_point_table: bool = setting(True, help="Also time each named operating point at batch 1.")
    progress: bool = setting(True, help="Progress bars.")
    fold_batchnorm: bool = setting(True, help="Run both networks with BatchNorm folded into the convolutions, as a "
                                              "deployment would (answers change only by float rounding).")
    operating_point: str | None = operating_point_setting("bounded_loss")
    budget: BudgetSettings = setting(BudgetSettings(), check=_budget_settings, allowed="a budget section",
                                     help="A target held at run time by switching operating points "
                                          "(budget.images_per_s=..., budget.latency_ms=..., ...): see BudgetSettings.")

    @property
    def batch_sizes(self) -> list[int]:
        """Batch sizes in the order they are timed: 1 first (unless ``batch_one`` is off), then ``batch_size``."""
        sizes = [self.batch_size] if isinstance(self.batch_size, int) else list(self.batch_size)
        head = [1] if self.batch_one else []
        return head + [b for b in dict.fromkeys(sizes) if not (self.batch_one and b == 1)]


def controlled_stream(model: AdaptiveModel, cost: NetworkCost, x: torch.Tensor, labels: np.ndarray, budget: Budget,
                      settings: BudgetSettings, batch_size: int, progress: bool = False) -> dict:
    """The stream under the budget controller, summarised per window: what ``stream.json``'s ``budget`` holds."""
    assert model.operating_points is not None
    controller = BudgetController(model.operating_points, budget, cost, batch_size, settings.controller)
    run = run_controlled(model, cost, x, labels, controller, batch_size, settings.calibration, progress=progress)
    r = {k: np.asarray(v) for k, v in run["records"].items()}
    n = r["images"].sum()
    return {"target": {"kind": budget.kind, "value": budget.value, "unit": KINDS[budget.kind][0]},
            "batch_size": batch_size, "images": int(n), "images_per_second": float(n / r["seconds"].sum()),
            "accuracy": float(r["correct"].sum() / n), "accuracy_se": binomial_se(float(r["correct"].sum() / n), int(n)),
            "effective_macs": float(r["macs"].sum() / n), "switch_count": len(run["switches"]),
            "settings": {f.name: getattr(settings, f.name) for f in fields(settings)},
            "windows": window_summary(run["records"], settings.window, budget.kind,
                                      top_point=len(run["ladder"]) - 1), **run}


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
                              settings.recompute_operating_points, settings.exit_metric)
    saved, data, device = inputs.saved, inputs.data, inputs.device
    model = AdaptiveModel.from_saved(saved, inputs.points, fold=settings.fold_batchnorm)  # static and adaptive alike
    point = model.set_operating_point(settings.operating_point, settings.min_accuracy, settings.max_macs)
    x, labels = prepare_stream(data.test, data.mean, data.std, settings.n_images, device)
    bench = stream_benchmark(model, saved.cost, x, labels, settings.batch_sizes, settings.warmup,
                             NAMES if settings.operating_point_table else (), settings.progress)
    label = point_label(settings.operating_point, settings.min_accuracy, settings.max_macs)
    budget = settings.budget.budget
    controlled = None
    if budget is not None:
        controlled = controlled_stream(model, saved.cost, x, labels, budget, settings.budget, settings.batch_sizes[0],
                                       settings.progress)
        model.set_operating_point(settings.operating_point, settings.min_accuracy, settings.max_macs)
    result = {
        "run": str(inputs.run_path), "model_dir": str(saved.path), "genome": saved.net.genome.to_text(),
        "dataset": data.name, "test_images": int(x.shape[0]), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "num_threads": torch.get_num_threads(), "exit_metric": model.metric,
        "fold_batchnorm": settings.fold_batchnorm,
        "operating_point_label": label, "operating_point": {"thresholds": list(point.thresholds),
                                                            "val_accuracy": point.val_accuracy,
                                                            "val_accuracy_se": point.val_accuracy_se,
                                                            "val_se_vs_best": point.se_vs_best,
                                                            "val_se_vs_reference": point.se_vs_reference,
                                                            "val_expected_macs": point.expected_macs},
        "val_images": inputs.points.n_val, "named_drops_se": inputs.points.named_drops,
        "loss_bound": inputs.points.loss_bound,
        "static_macs": saved.cost.static_macs, "path_macs": list(saved.cost.path_macs), **bench,
    }
    if controlled is not None:
        result["budget"] = controlled
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "stream.json", json.dumps(result, indent=2))
    try:
        from aebnas.analysis.stream_plot import plot_stream

        plot_stream(result, out_dir / "stream.png")
    except Exception as exc:  # a plot must never cost the results
        log.warning("could not draw stream.png: %s", exc)
    return result
