"""The budget controller on a stream whose target and machine load change under it.

    python experiments/bench_budget.py --out budget.json run=<run dir> n_images=10000 num_threads=2 \\
        data_dir=/usr/share/datasets/fashion-mnist

The key=value settings are aebnas-stream's (conf/stream.yaml, ``budget.*`` included for
the controller's window and interval). In one process, batch 1:

1. the static network's images/s on the first ``--static-images`` images (the reference rate R);
2. every operating point of the ladder, fixed, on ``--point-images`` images, with the
   background load off and on: the fixed points' throughput in both conditions;
3. the controlled stream over ``n_images`` images: target ``--targets`` x R (default
   1.5, 3 and 2, one third of the stream each); the background load (``--load-procs``
   busy-loop processes, stopped and continued with SIGSTOP/SIGCONT) is on during the
   second half of each third.

Per window of ``budget.window`` images: measured images/s against the target, accuracy,
load and points used. Per (target, load) segment: the controller's test accuracy
against the most accurate *fixed* point whose measured throughput in that load meets
the target, on the same images (fixed points' answers from the all-exit rule, exactly
what the adaptive model returns). Writes the JSON and a plot over time (``--plot``).
CPU timing on a shared machine is noisy; the JSON keeps every window.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import stream_network
from aebnas.runtime import AdaptiveModel
from aebnas.runtime.budget import Budget, BudgetController
from aebnas.runtime.operating_points import binomial_se
from aebnas.runtime.stream import (_cpu_name, prepare_stream, run_controlled, run_static,
                                   window_summary)
from aebnas.exits import confidence, exit_indices


class BackgroundLoad:
    """``n`` busy-loop processes, started stopped; ``on()``/``off()`` continue and stop them at once.

    Each loop watches its parent and ends when the bench dies without reaching ``close()`` (killed from
    outside), so a cut-short run does not leave busy loops skewing the next measurement."""

    # checks its parent every 10**6 iterations (10-20 ms), a cost lost in the load it makes; a stopped loop (load
    # off) checks when it is continued, and uses no CPU until then
    LOOP = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    for _ in range(10**6): pass\n"

    def __init__(self, n: int):
        self.procs = [subprocess.Popen([sys.executable, "-c", self.LOOP]) for _ in range(n)]
        self.state = True
        self.off()

    def _signal(self, sig) -> None:
        for p in self.procs:
            os.kill(p.pid, sig)

    def on(self) -> None:
        if not self.state:
            self._signal(signal.SIGCONT)
            self.state = True

    def off(self) -> None:
        if self.state:
            self._signal(signal.SIGSTOP)
            self.state = False

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


def load_segments(n: int, multiples: list[float], rate: float) -> list[tuple[int, int, float, bool]]:
    """(first image, end, target images/s, load on) per segment: the stream in one third per target multiple,
    the load off in the first half of each third and on in the second."""
    third = n // len(multiples)
    segments = []
    for k, m in enumerate(multiples):
        lo, hi = k * third, n if k == len(multiples) - 1 else (k + 1) * third
        segments += [(lo, (lo + hi) // 2, m * rate, False), ((lo + hi) // 2, hi, m * rate, True)]
    return segments


def segment_windows(windows: list[dict], lo: int, hi: int, window: int) -> list[dict]:
    """The windows of ``window_summary`` that lie wholly inside images ``lo``..``hi``."""
    return [w for w in windows if lo <= w["first_image"] and w["first_image"] + window <= hi]


def point_predictions(net, x: torch.Tensor, ladder, metric: str) -> np.ndarray:
    """[points, images] predictions of each fixed point, from every exit's logits (the rule the model applies)."""
    with torch.inference_mode():
        logits = torch.stack([torch.cat(o) for o in zip(*[net(x[i:i + 1000]) for i in range(0, len(x), 1000)])])
    logits = logits.float().numpy()
    conf = confidence(logits, metric)
    cols = np.arange(logits.shape[1])
    top = logits.argmax(-1)
    return np.stack([top[exit_indices(conf, p.threshold_array()), cols] for p in ladder])


def fixed_point_rates(model: AdaptiveModel, cost, x, labels, ladder, n_images: int, load: BackgroundLoad,
                      loaded: bool) -> list[float]:
    """Each ladder point's images/s at batch 1 on the first ``n_images`` images, load on or off."""
    (load.on if loaded else load.off)()
    rates = []
    for p in ladder:
        model.set_thresholds(p.thresholds)
        t0 = time.perf_counter()
        for i in range(n_images):
            model(x[i:i + 1])
        rates.append(n_images / (time.perf_counter() - t0))
    load.off()
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--plot", default=None)
    ap.add_argument("--targets", default="1.5,3,2", help="targets as multiples of the static rate, in order")
    ap.add_argument("--static-images", type=int, default=2000)
    ap.add_argument("--point-images", type=int, default=200)
    ap.add_argument("--load-procs", type=int, default=1)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    settings, inputs, model = stream_network(args.overrides)
    saved, data = inputs.saved, inputs.data
    x, labels = prepare_stream(data.test, data.mean, data.std, settings.n_images, inputs.device)
    n = x.shape[0]
    load = BackgroundLoad(args.load_procs)
    try:
        static = run_static(model, saved.cost, x[:args.static_images], labels[:args.static_images], 1,
                            settings.warmup, progress=False)
        rate = static.images_per_second
        probe = BudgetController(inputs.points, Budget("images_per_s", rate), saved.cost)
        ladder = probe.ladder
        preds = point_predictions(model.net, x, ladder, model.metric)
        fixed_off = fixed_point_rates(model, saved.cost, x, labels, ladder, args.point_images, load, False)
        fixed_on = fixed_point_rates(model, saved.cost, x, labels, ladder, args.point_images, load, True)

        multiples = [float(m) for m in args.targets.split(",")]
        segments = load_segments(n, multiples, rate)

        controller = BudgetController(inputs.points, Budget("images_per_s", multiples[0] * rate), saved.cost, 1,
                                      settings.budget.controller)

        def before_batch(i: int) -> None:
            for lo, hi, target, loaded in segments:
                if i == lo:
                    if controller.budget.value != target:
                        controller.set_budget(Budget("images_per_s", target))
                    (load.on if loaded else load.off)()

        run = run_controlled(model, saved.cost, x, labels, controller, 1, settings.budget.calibration, before_batch)
    finally:
        load.close()

    rec = {k: np.asarray(v) for k, v in run["records"].items()}
    correct = rec["correct"]
    window = settings.budget.window
    windows = window_summary(run["records"], window, "images_per_s", top_point=len(ladder) - 1)
    for w in windows:
        w["load"] = any(lo <= w["first_image"] < hi and loaded for lo, hi, _, loaded in segments)
    seg_rows = []
    for lo, hi, target, loaded in segments:
        rates = np.array(fixed_on if loaded else fixed_off)
        ok = np.flatnonzero(rates >= target)
        fixed = int(ok.max()) if len(ok) else None  # the ladder is ordered by accuracy
        fixed_acc = float((preds[fixed, lo:hi] == labels[lo:hi]).mean()) if fixed is not None else None
        seg_w = segment_windows(windows, lo, hi, window)
        seg_rows.append({
            "images": [lo, hi], "target_images_per_s": target, "target_x_static": target / rate, "load": loaded,
            "images_per_s": float((hi - lo) / rec["seconds"][lo:hi].sum()),
            "accuracy": float(correct[lo:hi].mean()),
            "accuracy_se": binomial_se(float(correct[lo:hi].mean()), hi - lo),
            "fixed_point": fixed, "fixed_point_images_per_s": None if fixed is None else float(rates[fixed]),
            "fixed_point_accuracy": fixed_acc,
            "windows": len(seg_w), "windows_within_10pct": sum(w["within_10pct"] for w in seg_w),
            "windows_within_10pct_after_first": sum(w["within_10pct"] for w in seg_w[1:]),
            "windows_held": sum(w["held"] for w in seg_w),
            "windows_short_at_cheapest": sum(w["short_at_cheapest"] for w in seg_w),
            "switches": sum(lo <= s["image"] < hi for s in run["switches"]),
        })
    after = [w for w in windows if w["first_image"] >= 200]
    result = {
        "run": str(inputs.run_path), "genome": saved.net.genome.to_text(), "dataset": data.name,
        "images": int(n), "device": _cpu_name(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
        "num_threads": torch.get_num_threads(), "load_procs": args.load_procs, "window": window,
        "controller": {"window": settings.budget.window, "interval": settings.budget.interval,
                       "margin": settings.budget.margin, "fit_window": settings.budget.fit_window,
                       "calibration": settings.budget.calibration},
        "static": static.to_dict(), "static_images_per_s": rate, "target_multiples": multiples,
        "ladder": [{"thresholds": list(p.thresholds), "val_accuracy": p.val_accuracy, "val_accuracy_se":
                    p.val_accuracy_se, "val_expected_macs": p.expected_macs,
                    "test_accuracy": float((preds[i] == labels).mean()), "images_per_s_no_load": fixed_off[i],
                    "images_per_s_load": fixed_on[i]} for i, p in enumerate(ladder)],
        "stream": {"images_per_s": float(n / rec["seconds"].sum()), "accuracy": float(correct.mean()),
                   "switches": len(run["switches"]),
                   "windows_after_warmup": len(after), "windows_within_10pct": sum(w["within_10pct"] for w in after),
                   "windows_meeting_target": sum(w["meets"] for w in after),
                   "windows_held": sum(w["held"] for w in after),
                   "windows_short_at_cheapest": sum(w["short_at_cheapest"] for w in after)},
        "segments": seg_rows, "windows": windows, "switches": run["switches"],
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"static {rate:.1f} img/s; controlled {result['stream']['images_per_s']:.1f} img/s acc "
          f"{result['stream']['accuracy']:.4f}, {len(run['switches'])} switches, "
          f"{result['stream']['windows_within_10pct']}/{len(after)} windows within +-10 % after 200 images, "
          f"{result['stream']['windows_held']} held (within, or above it on the most accurate point), "
          f"{result['stream']['windows_short_at_cheapest']} short of it on the cheapest point")
    for s in seg_rows:
        print(f"  images {s['images'][0]:5d}-{s['images'][1]:5d} target {s['target_x_static']:.1f}x "
              f"({s['target_images_per_s']:.0f}) load {'on ' if s['load'] else 'off'}: {s['images_per_s']:6.1f} img/s "
              f"acc {s['accuracy']:.4f} | fixed point {s['fixed_point']} "
              f"{s['fixed_point_images_per_s'] or float('nan'):6.1f} img/s acc {s['fixed_point_accuracy'] or float('nan'):.4f}"
              f" | windows within 10 %: {s['windows_within_10pct']}/{s['windows']}, held {s['windows_held']}, "
              f"short on the cheapest {s['windows_short_at_cheapest']}, switches {s['switches']}")
    if args.plot:
        plot(result, args.plot)


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = result["windows"]
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(11, 6), dpi=110, sharex=True, height_ratios=[2, 1])
    x = [v["first_image"] + v["images"] / 2 for v in w]
    for seg in result["segments"]:
        if seg["load"]:
            for a in (ax, ax2):
                a.axvspan(*seg["images"], color="tab:red", alpha=0.08, lw=0)
    ax.plot(x, [v["value"] for v in w], "-o", ms=3, c="tab:blue", label="controller, per window")
    ax.step(x, [v["target"] for v in w], where="mid", c="k", lw=1, label="target")
    ax.fill_between(x, [v["target"] * 0.9 for v in w], [v["target"] * 1.1 for v in w], step="mid", color="k",
                    alpha=0.12, label="+-10 %")
    ax.axhline(result["static_images_per_s"], c="tab:gray", ls=":", label="static network")
    ax.set_ylabel("images / s (batch 1)")
    ax.set_title(f"budget controller: target {' -> '.join(f'{m:g}x' for m in result['target_multiples'])} "
                 f"static; red: busy-loop load on; {result['stream']['switches']} switches")
    ax.legend(fontsize=7, ncol=4)
    ax2.plot(x, [v["accuracy"] for v in w], "-", c="tab:green", lw=1, label="test accuracy per window")
    ax2.set_ylabel("accuracy")
    ax2.set_xlabel("image")
    ax3 = ax2.twinx()
    sw = result["switches"]
    if sw:
        ax3.step([0] + [s["image"] for s in sw], [sw[0]["from_point"]] + [s["to_point"] for s in sw], where="post",
                 c="tab:orange", lw=0.8)
    ax3.set_ylabel("operating point (0 = cheapest)", color="tab:orange")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    main()
