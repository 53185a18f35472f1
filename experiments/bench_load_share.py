"""How much of a core a batch-1 stream gets under background load, and what that leaves a budget controller.

    python experiments/bench_load_share.py --out load_share.json --load-procs 2 run=<run dir> model=0 \\
        n_images=10000 num_threads=1 progress=false data_dir=/usr/share/datasets/fashion-mnist

The key=value settings are aebnas-stream's. In one process, batch 1:

1. every operating point of the ladder on ``--point-images`` images in a row, load off, then on
   (``--load-procs`` busy loops, as in ``bench_budget.py``): per-image times and exit-path MACs;
2. ``--share-images`` images in a row at the ladder's middle point with the load on. The stream's *share* of
   a core per ``--bin-ms`` of wall clock is (the idle median time of each image's exit path) / (its time).

Then, offline, the stream of ``bench_budget.py`` (targets ``--targets`` x the static rate, load on in the
second half of each third) is replayed ``--replays`` times: each image takes an idle time recorded for the
point that runs it, divided by the recorded share at that moment of the simulated clock. The replay scores
the budget controller and every fixed point by the same rule as ``bench_budget.py`` (a 200-image window is
held within +-10 % of the target, or above it on the most accurate point), without timing noise between the
variants compared. A clairvoyant schedule, which knows the share ahead and mixes the most accurate and the
cheapest point per window, is scored by the same rule: a reference for how many windows a controller could
hold under this load. The windows of its replay that fall short even on the cheapest point throughout
measure how much of the load no choice of points could hold. ``--bin-ms 1`` keeps a single stalled image
apart from its neighbours (the load's stalls last a few milliseconds); 10 smooths them over.

``--save-recording rec.npz`` keeps the timings of step 1 and 2; ``--recording rec.npz`` replays them again
without timing anything, so two versions of the controller (another checkout of ``aebnas`` on
``PYTHONPATH``, or other ``budget.*`` settings) are compared on the very same recording.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench_budget import BackgroundLoad, load_segments, segment_windows
from bench_common import stream_network
from aebnas.runtime import AdaptiveModel
from aebnas.runtime.budget import Budget, BudgetController
from aebnas.runtime.operating_points import OperatingPoint, path_costs_with
from aebnas.runtime.stream import _cpu_name, prepare_stream, run_static, window_summary


def record_point(model: AdaptiveModel, x: torch.Tensor, paths: np.ndarray, n: int,
                 start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-image seconds and exit-path MACs of ``n`` images in a row at the model's current thresholds."""
    seconds, macs = np.empty(n), np.empty(n)
    for j in range(n):
        i = (start + j) % x.shape[0]
        t0 = time.perf_counter()
        out = model(x[i:i + 1])
        seconds[j] = time.perf_counter() - t0
        macs[j] = paths[int(out.exit_index[0])]
    return seconds, macs


def timed_idle(macs: np.ndarray, idle_macs: np.ndarray) -> np.ndarray:
    """Per image, whether its exit path (its MACs) ran in the idle recording, so has a reference time."""
    return np.isin(macs, idle_macs)


def share_per_bin(seconds: np.ndarray, macs: np.ndarray, idle_seconds: np.ndarray, idle_macs: np.ndarray,
                  bin_s: float) -> np.ndarray:
    """The share of a core per ``bin_s`` of wall clock: idle median time of each image's exit path over its
    measured time, summed per bin (at most 1; a bin no image started in repeats the one before).

    An image whose exit path never ran in the idle recording has no reference time and is left out of its
    bin (a rare path, such as a final exit that takes under 1 % of images); more than 5 % of images left out
    is refused, since the share would then rest on the easy images only."""
    median = {m: float(np.median(idle_seconds[idle_macs == m])) for m in np.unique(idle_macs)}
    known = timed_idle(macs, idle_macs)
    if (~known).mean() > 0.05:
        missing = sorted(set(np.unique(macs[~known]).tolist()))
        raise ValueError(f"exit paths {missing} ({(~known).mean():.0%} of images) never ran idle at this point; "
                         "record more images (--point-images)")
    base = np.array([median.get(m, 0.0) for m in macs])
    starts = np.concatenate([[0.0], np.cumsum(seconds)[:-1]])
    bins = (starts // bin_s).astype(int)
    share, last = [], 1.0
    for b in range(int(bins[-1]) + 1):
        m = (bins == b) & known
        if m.any():
            last = min(float(base[m].sum() / seconds[m].sum()), 1.0)
        share.append(last)
    return np.array(share)


def replay_start(seed: int, recorded: int, n_points: int, n_bins: int) -> tuple[np.ndarray, int]:
    """Where a replay starts reading each point's recorded times, and the share's bin it starts at: drawn from
    ``seed`` in one order, so the controller's replay and the clairvoyant schedule of one seed read the same."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, recorded, size=n_points), int(rng.integers(0, n_bins))


def replayed_seconds(idle_seconds: np.ndarray, cursor: np.ndarray, p: int, share: np.ndarray, bin_s: float,
                     offset: int, clock: float, loaded: bool) -> tuple[float, int]:
    """Point ``p``'s next recorded idle time (its ``cursor`` moves on), divided under load by the share of a
    core recorded at ``clock``: the one load model every replayed schedule runs on. Also the time's index."""
    j = int(cursor[p] % idle_seconds.shape[1])
    cursor[p] += 1
    t = idle_seconds[p, j]
    return (t / share[(int(clock / bin_s) + offset) % len(share)] if loaded else t), j


def replay_records(n: int) -> dict[str, np.ndarray]:
    """Per-image records of a replayed batch-1 stream, as ``window_summary`` reads them."""
    rec = {k: np.zeros(n) for k in ("seconds", "images", "correct", "macs", "point", "target", "clock")}
    rec["images"][:] = 1
    return rec


def replay(idle_seconds: np.ndarray, idle_macs: np.ndarray, share: np.ndarray, bin_s: float,
           ladder: list[OperatingPoint], rate: float, multiples: list[float], n: int,
           make: Callable[[list[OperatingPoint], Budget], BudgetController], seed: int, window: int = 200,
           calibration: int = 40) -> list[dict]:
    """One replayed stream; per (target, load) segment: windows held (``bench_budget.py``'s windows and rule),
    rate / target, mean val accuracy of the points run."""
    cursor, offset = replay_start(seed, idle_seconds.shape[1], len(ladder), len(share))
    clock = 0.0

    def take(p: int, loaded: bool) -> tuple[float, float]:
        t, j = replayed_seconds(idle_seconds, cursor, p, share, bin_s, offset, clock, loaded)
        return t, idle_macs[p, j]

    segments = load_segments(n, multiples, rate)
    controller = make(ladder, Budget("images_per_s", multiples[0] * rate))
    for j in range(calibration):
        at = len(ladder) - 1 if j < calibration // 2 else 0
        controller.observe(1, *take(at, False), point=at)
    if calibration:
        controller.finish_calibration()
    rec = replay_records(n)
    loaded = False
    for i in range(n):
        for lo, _, target, on in segments:
            if i == lo:
                if controller.budget.value != target:
                    controller.set_budget(Budget("images_per_s", target))
                loaded = on
        rec["point"][i], rec["target"][i], rec["clock"][i] = controller.index, controller.budget.value, clock
        rec["seconds"][i], rec["macs"][i] = take(controller.index, loaded)
        clock += rec["seconds"][i]
        controller.observe(1, rec["seconds"][i], rec["macs"][i])
    return segment_rows(rec, segments, ladder, rate, window)


def segment_rows(rec: dict, segments: list[tuple[int, int, float, bool]], ladder: list[OperatingPoint],
                 rate: float, window: int) -> list[dict]:
    """Per (target, load) segment of a replayed stream's per-image records: the whole windows inside it held
    and short on the cheapest point (``window_summary``'s rule), rate / target, mean val accuracy of the
    points run."""
    windows = window_summary(rec, window, "images_per_s", top_point=len(ladder) - 1)
    rows = []
    for lo, hi, target, on in segments:
        seg = segment_windows(windows, lo, hi, window)
        rows.append({"target_x_static": target / rate, "load": on, "held": sum(w["held"] for w in seg),
                     "short_at_cheapest": sum(w["short_at_cheapest"] for w in seg),
                     "windows": len(seg), "rate_over_target": float((hi - lo) / rec["seconds"][lo:hi].sum() / target),
                     "val_accuracy_run": float(np.mean([ladder[int(p)].val_accuracy for p in rec["point"][lo:hi]]))})
    return rows


def clairvoyant(idle_seconds: np.ndarray, share: np.ndarray, bin_s: float, ladder: list[OperatingPoint],
                rate: float, multiples: list[float], n: int, seed: int, window: int = 200) -> list[dict]:
    """A reference for what a controller could hold: the same replayed stream, scheduled by a rule that knows
    the share ahead. Each window runs the most accurate point for its first k images and the cheapest for the
    rest, k the largest multiple of 5 that keeps the window at or above 90 % of the target (found by trying
    each k on the recorded share); when no k does, the cheapest point throughout, and the window is short on
    the cheapest point. Scored per segment as ``replay`` is."""
    top = len(ladder) - 1
    cursor, offset = replay_start(seed, idle_seconds.shape[1], len(ladder), len(share))
    segments = load_segments(n, multiples, rate)
    target, loaded = np.empty(n), np.zeros(n, dtype=bool)
    for lo, hi, t, on in segments:
        target[lo:hi], loaded[lo:hi] = t, on
    rec = replay_records(n)
    rec["target"][:] = target

    def run(first: int, clock: float, cur: np.ndarray, k: int, keep: bool = False) -> tuple[float, np.ndarray]:
        cur = cur.copy()
        for i in range(first, first + window):
            p = top if i - first < k else 0
            t, _ = replayed_seconds(idle_seconds, cur, p, share, bin_s, offset, clock, loaded[i])
            if keep:
                rec["seconds"][i], rec["point"][i], rec["clock"][i] = t, p, clock
            clock += t
        return clock, cur

    clock = 0.0
    for first in range(0, n - window + 1, window):
        goal = float(target[first:first + window].mean())
        k_best = 0
        for k in range(0, window + 1, 5):
            end, _ = run(first, clock, cursor, k)
            if window / (end - clock) < 0.9 * goal:
                break
            k_best = k
        clock, cursor = run(first, clock, cursor, k_best, keep=True)
    return segment_rows(rec, segments, ladder, rate, window)


class FixedPoint(BudgetController):
    """A controller that never moves: the fixed points' windows, scored by the same rule."""

    def __init__(self, points, budget, index: int):
        super().__init__(points, budget)
        self.index = index

    def observe(self, images, seconds, macs, point=None):
        return self.index

    def finish_calibration(self):
        pass

    def set_budget(self, budget):
        self.budget = budget


def summarise(runs: list[list[dict]]) -> dict:
    """Windows held per (target, load) segment and under load off / on, summed over replays."""
    out: dict = {"segments": [], "held_load_off": [0, 0], "held_load_on": [0, 0]}
    for k in range(len(runs[0])):
        rows = [r[k] for r in runs]
        held, total = sum(r["held"] for r in rows), sum(r["windows"] for r in rows)
        out["segments"].append({"target_x_static": rows[0]["target_x_static"], "load": rows[0]["load"],
                                "held": int(held), "windows": int(total),
                                "short_at_cheapest": int(sum(r["short_at_cheapest"] for r in rows)),
                                "rate_over_target": float(np.mean([r["rate_over_target"] for r in rows])),
                                "val_accuracy_run": float(np.mean([r["val_accuracy_run"] for r in rows]))})
        key = "held_load_on" if rows[0]["load"] else "held_load_off"
        out[key][0] += int(held)
        out[key][1] += total
    return out


def record(model: AdaptiveModel, inputs, settings, args) -> tuple:
    """Static rate, ladder, and per-image times and MACs: every point load off and on, then the middle point
    for ``--share-images`` with the load on."""
    saved = inputs.saved
    x, labels = prepare_stream(inputs.data.test, inputs.data.mean, inputs.data.std, settings.n_images, inputs.device)
    static = run_static(model, saved.cost, x[:2000], labels[:2000], 1, settings.warmup, progress=False)
    rate = static.images_per_second
    ladder = BudgetController(inputs.points, Budget("images_per_s", rate), saved.cost).ladder
    paths = [path_costs_with(saved.cost, np.isfinite(p.threshold_array())) for p in ladder]
    shape = (2, len(ladder), args.point_images)
    seconds, macs = np.empty(shape), np.empty(shape)
    mid = len(ladder) // 2
    load = BackgroundLoad(args.load_procs)
    try:
        for li, on in enumerate((False, True)):
            (load.on if on else load.off)()
            for p, point in enumerate(ladder):
                model.set_thresholds(point.thresholds)
                seconds[li, p], macs[li, p] = record_point(model, x, paths[p], args.point_images, start=977 * p)
        model.set_thresholds(ladder[mid].thresholds)
        load.on()
        long_seconds, long_macs = record_point(model, x, paths[mid], args.share_images)
    finally:
        load.close()
    return rate, ladder, seconds, macs, long_seconds, long_macs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--load-procs", type=int, default=2)
    ap.add_argument("--point-images", type=int, default=600)
    ap.add_argument("--share-images", type=int, default=10000)
    ap.add_argument("--bin-ms", type=float, default=10.0)
    ap.add_argument("--targets", default="1.5,3,2")
    ap.add_argument("--replays", type=int, default=6)
    ap.add_argument("--save-recording", help="write the timings recorded here (.npz) for later replays")
    ap.add_argument("--recording", help="replay a saved recording of this network instead of timing anew")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    settings, inputs, model = stream_network(args.overrides)
    saved = inputs.saved
    machine = {"device": _cpu_name(), "torch": torch.__version__, "num_threads": torch.get_num_threads(),
               "load_procs": args.load_procs}
    if args.recording:
        rec = np.load(args.recording)
        rate = float(rec["rate"])
        machine = json.loads(str(rec["machine"]))  # where the times were recorded, not where they are replayed
        ladder = BudgetController(inputs.points, Budget("images_per_s", rate), saved.cost).ladder
        if [list(p.thresholds) for p in ladder] != json.loads(str(rec["thresholds"])):
            raise SystemExit(f"--recording: {args.recording} was recorded on another ladder; record this network anew")
        seconds, macs, long_seconds, long_macs = rec["seconds"], rec["macs"], rec["long_seconds"], rec["long_macs"]
    else:
        rate, ladder, seconds, macs, long_seconds, long_macs = record(model, inputs, settings, args)
    if args.save_recording:
        np.savez(args.save_recording, rate=rate, thresholds=json.dumps([list(p.thresholds) for p in ladder]),
                 machine=json.dumps(machine),
                 seconds=seconds, macs=macs, long_seconds=long_seconds, long_macs=long_macs)
    mid = len(ladder) // 2
    bin_s = args.bin_ms / 1e3
    share = share_per_bin(long_seconds, long_macs, seconds[0, mid], macs[0, mid], bin_s)
    per_100ms = share_per_bin(long_seconds, long_macs, seconds[0, mid], macs[0, mid], 0.1)
    centred = per_100ms - per_100ms.mean()
    multiples = [float(m) for m in args.targets.split(",")]
    n = settings.n_images
    window = settings.budget.window

    def replays_of(make, calibration: int) -> dict:
        return summarise([replay(seconds[0], macs[0], share, bin_s, ladder, rate, multiples, n, make, s, window,
                                 calibration) for s in range(args.replays)])

    replays = {"controller": replays_of(lambda pts, b: BudgetController(pts, b, settings=settings.budget.controller),
                                        settings.budget.calibration)}
    for p in range(len(ladder)):
        replays[f"fixed_{p}"] = replays_of(lambda pts, b, p=p: FixedPoint(pts, b, p), 0)
    replays["clairvoyant"] = summarise([clairvoyant(seconds[0], share, bin_s, ladder, rate, multiples, n, s, window)
                                        for s in range(args.replays)])
    windows_on = {p: [float(window / seconds[1, p, s:s + window].sum())
                      for s in range(0, seconds.shape[2] - window + 1, window)] for p in range(len(ladder))}
    result = {
        "run": str(inputs.run_path), **machine, "recording": args.recording, "static_images_per_s": rate,
        "ladder": [{"thresholds": list(p.thresholds), "val_accuracy": p.val_accuracy,
                    "val_expected_macs": p.expected_macs,
                    "images_per_s_load_off": float(seconds.shape[2] / seconds[0, i].sum()),
                    "images_per_s_load_on": float(seconds.shape[2] / seconds[1, i].sum()),
                    "images_per_s_load_on_per_window": windows_on[i]} for i, p in enumerate(ladder)],
        "share_per_100ms": {"percentiles_5_25_50_75_95": np.percentile(per_100ms, [5, 25, 50, 75, 95]).tolist(),
                            "lag1_autocorrelation": float(np.corrcoef(centred[:-1], centred[1:])[0, 1]),
                            "images_left_out": float(np.mean(~timed_idle(long_macs, macs[0, mid]))),
                            "bins": len(per_100ms)},
        "window": window, "replays": args.replays, "targets": multiples, "replay": replays,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    s = result["share_per_100ms"]
    print(f"static {rate:.1f} img/s; share of a core per 100 ms under load: percentiles 5/25/50/75/95 "
          + " ".join(f"{v:.2f}" for v in s["percentiles_5_25_50_75_95"])
          + f", lag-1 autocorrelation {s['lag1_autocorrelation']:.2f}")
    for name in ["controller", "clairvoyant", "fixed_0", f"fixed_{len(ladder) - 1}"]:
        r = replays[name]
        print(f"  replay {name:11s}: held load off {r['held_load_off'][0]}/{r['held_load_off'][1]}, on "
              f"{r['held_load_on'][0]}/{r['held_load_on'][1]} | " + " ".join(
                  f"{g['target_x_static']:g}x{'L' if g['load'] else ''} {g['held']}/{g['windows']}"
                  for g in r["segments"]))
    beyond = [g for g in replays["clairvoyant"]["segments"] if g["load"]]
    print(f"  loaded windows short even on the cheapest point throughout (clairvoyant's replay): "
          f"{sum(g['short_at_cheapest'] for g in beyond)}/{sum(g['windows'] for g in beyond)} | "
          + " ".join(f"{g['target_x_static']:g}xL {g['short_at_cheapest']}" for g in beyond))


if __name__ == "__main__":
    main()
