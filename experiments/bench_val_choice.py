"""Why a named point chosen on val misses on test, and how other choices fare. No timing: logits only.

    python experiments/bench_val_choice.py --out val_choice.json [--halves 20] [--point max_accuracy] \\
        [--metric margin] run=<run dir> model=0 data_dir=/usr/share/datasets/fashion-mnist

The key=value settings are aebnas-stream's. A named point is chosen on val, the way ``operating_points.json``
is computed, and a run cannot give it more val images without training again. This script lends it some:
the test set is split at random into halves A and B ``--halves`` times; the point is chosen once on val
alone and once on val + A, and both choices are scored on B, against the final exit on B: accuracy lost
(points) and fewer expected MACs than the static network. No timing: the figures come from logits, so the
counts of how often each choice meets the adaptive runtime's targets (<= 0.5 points lost, >= 4x fewer MACs)
carry no timing noise.

Three more figures, on the whole test set:

- **exit gaps**: each early exit's accuracy minus the final exit's, paired over the same images, on val and
  on test, with standard errors and how many combined standard errors apart the two estimates are. A gap
  that val overstates is what leads a choice on val astray.
- **ceiling**: per MACs saving (4x, 5x, ...), the least accuracy lost on test by any threshold vector of the
  grid that saves at least that much (the cheapest among equally accurate ones), chosen on test itself. No
  rule that chooses on val can do better on accuracy and MACs; speed is not timed here.
- **anchored rules**: an alternative to the named points' rule. The cheapest vector whose val loss against
  the final exit, plus ``z`` paired standard errors, is within an allowed loss; chosen on val and scored on
  test, for z in 1, 1.64, 2 and allowed losses of 0.25 and 0.5 points.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from bench_common import machine, stream_settings, write_json
from aebnas.cost import NetworkCost
from aebnas.exits.thresholds import METRICS, confidence, simulate_exits
from aebnas.runtime.operating_points import (NAMES, GridOutcomes, compute_operating_points,
                                             grid_outcomes, paired_standard_errors, path_costs_with)
from aebnas.train import predict_logits

MAX_LOSS_POINTS, MIN_FEWER_MACS = 0.5, 4.0
EPS = 1e-9  # losses are whole images over a split: 50 of 10,000 is 0.5 points, not 0.5000000000000004
CEILING_SAVINGS = (4.0, 5.0, 6.0, 7.0)
ANCHORED_RULES = tuple((z, allowed) for z in (1.0, 1.64, 2.0) for allowed in (0.25, 0.5))


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
                         "loses_over_limit": int((loss > MAX_LOSS_POINTS + EPS).sum()),
                         "saves_under_limit": int((fewer < MIN_FEWER_MACS).sum()),
                         "meets_both": int(((loss <= MAX_LOSS_POINTS + EPS) & (fewer >= MIN_FEWER_MACS)).sum()),
                         "halves": halves}
    return {"summary": summary, "rows": rows}


def _thresholds(vector: np.ndarray) -> list[float | None]:
    return [None if np.isinf(t) else float(t) for t in vector]


def _scored(scored: GridOutcomes, g: int, static_macs: float) -> dict[str, Any]:
    """Vector ``g`` of the grid as the scored split sees it."""
    loss = (scored.final_hits.mean() - scored.hits[g].mean()) * 100
    return {"thresholds": _thresholds(scored.vectors[g]), "loss_points": float(loss),
            "fewer_macs": float(static_macs / scored.expected_macs[g])}


def exit_gaps(val_logits: np.ndarray, val_labels: np.ndarray, test_logits: np.ndarray,
              test_labels: np.ndarray) -> list[dict[str, float | None]]:
    """Per early exit (numbered from 1): its accuracy minus the final exit's (points), paired over the same images,
    on val and on test, with standard errors, and how many combined standard errors the two estimates are apart."""
    rows = []
    for k in range(val_logits.shape[0] - 1):
        gap: dict[str, float | None] = {}
        for name, logits, labels in (("val", val_logits, val_labels), ("test", test_logits, test_labels)):
            correct = logits.argmax(-1) == labels[None, :]
            gap[name] = float(correct[k].mean() - correct[-1].mean()) * 100
            gap[f"{name}_se"] = float(paired_standard_errors(correct[k][None, :], correct[-1])[0]) * 100
        se = float(np.hypot(gap["val_se"], gap["test_se"]))
        apart = gap["val"] - gap["test"]
        gap["z_apart"] = apart / se if se > 0 else (0.0 if apart == 0 else None)  # None: apart with no noise
        rows.append({"early_exit": k + 1, **gap})
    return rows


def _most_accurate(outcomes: GridOutcomes, among: np.ndarray) -> int:
    """The most accurate of the vectors ``among``, the cheapest of them on a tie."""
    return int(among[np.lexsort((outcomes.expected_macs[among], -outcomes.accuracy[among]))[0]])


def ceiling(scored: GridOutcomes, static_macs: float,
            savings: tuple[float, ...] = CEILING_SAVINGS) -> list[dict[str, Any]]:
    """Per saving: the grid vector that loses least on the scored split while saving at least that much."""
    fewer = static_macs / scored.expected_macs
    rows = []
    for need in savings:
        ok = np.flatnonzero(fewer >= need)
        if len(ok) == 0:
            rows.append({"at_least": need, "thresholds": None, "loss_points": None, "fewer_macs": None})
            continue
        rows.append({"at_least": need, **_scored(scored, _most_accurate(scored, ok), static_macs)})
    return rows


def anchored_choice(chosen_on: GridOutcomes, z: float, allowed_points: float) -> int:
    """Cheapest vector whose loss against the final exit, plus ``z`` paired standard errors, is within
    ``allowed_points``; the most accurate vector when none is."""
    loss = chosen_on.final_hits.mean() - chosen_on.accuracy
    se = paired_standard_errors(chosen_on.hits, chosen_on.final_hits)
    ok = np.flatnonzero(loss + z * se <= allowed_points / 100 + 1e-12)
    if len(ok) == 0:
        return _most_accurate(chosen_on, np.arange(len(loss)))
    return int(ok[np.lexsort((-chosen_on.accuracy[ok], chosen_on.expected_macs[ok]))[0]])


def anchored_rules(chosen_on: GridOutcomes, scored: GridOutcomes, static_macs: float,
                   rules: tuple[tuple[float, float], ...] = ANCHORED_RULES) -> list[dict[str, Any]]:
    """Each anchored rule's choice on one split, scored on the other (both over the same grid)."""
    if not np.array_equal(chosen_on.vectors, scored.vectors):
        raise ValueError("anchored_rules: the two splits' outcomes cover different threshold grids")
    return [{"z": z, "allowed_points": allowed, **_scored(scored, anchored_choice(chosen_on, z, allowed), static_macs)}
            for z, allowed in rules]


def whole_test_figures(val_logits: np.ndarray, val_labels: np.ndarray, test_logits: np.ndarray,
                       test_labels: np.ndarray, cost: NetworkCost, point: str = "max_accuracy",
                       metric: str = "max_softmax") -> dict[str, Any]:
    """The named point, the exit gaps, the ceiling and the anchored rules, each on the whole test set."""
    val = grid_outcomes(val_logits, val_labels, cost, metric)
    test = grid_outcomes(test_logits, test_labels, cost, metric)
    static = float(cost.static_macs)
    return {"named_point": score_choice(val_logits, val_labels, test_logits, test_labels, cost, point, metric),
            "exit_gaps": exit_gaps(val_logits, val_labels, test_logits, test_labels),
            "ceiling": ceiling(test, static), "anchored_rules": anchored_rules(val, test, static)}


def _row(r: dict[str, Any]) -> str:
    if r["thresholds"] is None:
        return "none"
    marks = " ".join("off" if t is None else f"{t:g}" for t in r["thresholds"])
    return f"{marks}: {r['loss_points']:.2f} points lost, {r['fewer_macs']:.2f}x fewer MACs"


def print_whole_test(figures: dict[str, Any], point: str) -> None:
    print(f"{point} chosen on val, on the whole test set: {_row(figures['named_point'])}")
    for g in figures["exit_gaps"]:
        print(f"early exit {g['early_exit']} minus final, paired: val {g['val']:+.2f} +- {g['val_se']:.2f}, "
              f"test {g['test']:+.2f} +- {g['test_se']:.2f} points ("
              f"{'no noise' if g['z_apart'] is None else format(g['z_apart'], '+.2f') + ' SE'} apart)")
    for c in figures["ceiling"]:
        print(f"ceiling at >= {c['at_least']:g}x fewer MACs (chosen on test): {_row(c)}")
    for r in figures["anchored_rules"]:
        print(f"anchored rule z={r['z']:g}, allowed {r['allowed_points']:g} points: {_row(r)}")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a count; use 1 or more")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--halves", type=positive_int, default=20, help="random splits of the test set")
    parser.add_argument("--point", default="max_accuracy", choices=NAMES,
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
    whole = whole_test_figures(logits["val"], net.data.val.y.numpy(), logits["test"], net.data.test.y.numpy(),
                               net.saved.cost, args.point, metric)
    print_whole_test(whole, args.point)
    result["whole_test"] = whole
    write_json(args.out, {"machine": machine(), "run": str(net.run_path), "model": settings.model,
                          "point": args.point, "metric": metric, "val_images": int(logits["val"].shape[1]),
                          "test_images": int(logits["test"].shape[1]), **result})
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
