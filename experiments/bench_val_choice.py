"""Does a larger val split choose a better named point? The choice on val against val plus half the test set.

    python experiments/bench_val_choice.py --out val_choice.json [--halves 20] [--point max_accuracy] \\
        [--metric margin] run=<run dir> model=0 data_dir=/usr/share/datasets/fashion-mnist

The key=value settings are aebnas-stream's. A named point is chosen on val, the way ``operating_points.json``
is computed, and a run cannot give it more val images without training again. This script lends it some:
the test set is split at random into halves A and B ``--halves`` times; the point is chosen once on val
alone and once on val + A, and both choices are scored on B, against the final exit on B: accuracy lost
(points) and fewer expected MACs than the static network. No timing: the figures come from logits, so the
counts of how often each choice meets the adaptive runtime's targets (<= 0.5 points lost, >= 4x fewer MACs)
carry no timing noise.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from bench_common import machine, stream_settings, write_json
from aebnas.cost import NetworkCost
from aebnas.exits.thresholds import METRICS, confidence, simulate_exits
from aebnas.runtime.operating_points import DEFAULT_NAMED_DROPS, compute_operating_points, path_costs_with
from aebnas.train import predict_logits

MAX_LOSS_POINTS, MIN_FEWER_MACS = 0.5, 4.0


def score_choice(choose_logits: np.ndarray, choose_labels: np.ndarray, score_logits: np.ndarray,
                 score_labels: np.ndarray, cost: NetworkCost, point: str = "max_accuracy",
                 metric: str = "max_softmax") -> dict[str, Any]:
    """The named point chosen on one set of exit logits ([n_exits, N, C]) and scored on another."""
    points = compute_operating_points(choose_logits, choose_labels, cost, metric)
    chosen = points.points[points.named[point]]
    thresholds = chosen.threshold_array()
    correct = score_logits.argmax(-1) == score_labels[None, :]
    outcome = simulate_exits(confidence(score_logits, metric), correct, thresholds,
                             path_costs_with(cost, np.isfinite(thresholds)))
    reference = float(correct[-1].mean())
    return {"thresholds": list(chosen.thresholds), "loss_points": (reference - outcome.accuracy) * 100,
            "fewer_macs": float(cost.static_macs) / outcome.expected_cost}


def split_test_set(n: int, halves: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``halves`` random splits of ``n`` test images: (A, lent to the choice; B, scored), disjoint, all of them."""
    rng = np.random.default_rng(seed)
    splits = []
    for _ in range(halves):
        order = rng.permutation(n)
        splits.append((order[: n // 2], order[n // 2:]))
    return splits


def compare_val_sizes(val_logits: np.ndarray, val_labels: np.ndarray, test_logits: np.ndarray,
                      test_labels: np.ndarray, cost: NetworkCost, halves: int, seed: int = 0,
                      point: str = "max_accuracy", metric: str = "max_softmax") -> dict[str, Any]:
    """Per random half B of the test set: the choice on val and on val + the other half, both scored on B."""
    rows: dict[str, list[dict[str, Any]]] = {"val": [], "val_plus_half_test": []}
    for lend, score in split_test_set(test_logits.shape[1], halves, seed):
        wider = (np.concatenate([val_logits, test_logits[:, lend]], axis=1),
                 np.concatenate([val_labels, test_labels[lend]]))
        for name, (logits, labels) in (("val", (val_logits, val_labels)), ("val_plus_half_test", wider)):
            rows[name].append(score_choice(logits, labels, test_logits[:, score], test_labels[score], cost, point,
                                           metric))
    summary = {}
    for name, r in rows.items():
        loss = np.array([x["loss_points"] for x in r])
        fewer = np.array([x["fewer_macs"] for x in r])
        summary[name] = {"loss_points_median": float(np.median(loss)), "fewer_macs_median": float(np.median(fewer)),
                         "loses_over_limit": int((loss > MAX_LOSS_POINTS).sum()),
                         "saves_under_limit": int((fewer < MIN_FEWER_MACS).sum()),
                         "meets_both": int(((loss <= MAX_LOSS_POINTS) & (fewer >= MIN_FEWER_MACS)).sum()),
                         "halves": halves}
    return {"summary": summary, "rows": rows}


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a count; use 1 or more")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--halves", type=positive_int, default=20, help="random splits of the test set")
    parser.add_argument("--point", default="max_accuracy", choices=sorted(DEFAULT_NAMED_DROPS),
                        help="the named point chosen")
    parser.add_argument("--metric", choices=sorted(METRICS), default=None,
                        help="the exit confidence metric (default: the one the run was searched with)")
    parser.add_argument("overrides", nargs="*", help="aebnas-stream settings: run=... model=... data_dir=...")
    args = parser.parse_args()
    from aebnas.runtime.run_network import load_run_network

    settings = stream_settings(args.overrides)
    if args.metric and settings.exit_metric and args.metric != settings.exit_metric:
        parser.error(f"--metric {args.metric} and exit_metric={settings.exit_metric} disagree; give one")
    net = load_run_network(settings.run, settings.model, "cpu", settings.num_threads, settings.data_dir,
                           exit_metric=args.metric or settings.exit_metric)
    metric = net.points.metric
    logits = {s: predict_logits(net.saved.net, getattr(net.data, s), net.data.mean, net.data.std,
                                torch.device("cpu"), amp=False) for s in ("val", "test")}
    result = compare_val_sizes(logits["val"], net.data.val.y.numpy(), logits["test"], net.data.test.y.numpy(),
                               net.saved.cost, args.halves, point=args.point, metric=metric)
    for name, s in result["summary"].items():
        print(f"chosen on {name:18s}: loss median {s['loss_points_median']:.2f} points "
              f"(over {MAX_LOSS_POINTS}: {s['loses_over_limit']}/{args.halves}), fewer MACs median "
              f"{s['fewer_macs_median']:.2f}x (under {MIN_FEWER_MACS:g}x: {s['saves_under_limit']}/{args.halves}), "
              f"both targets met {s['meets_both']}/{args.halves}")
    write_json(args.out, {"machine": machine(), "run": str(net.run_path), "model": settings.model,
                          "point": args.point, "metric": metric, "val_images": int(logits["val"].shape[1]),
                          "test_images": int(logits["test"].shape[1]), **result})
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
