"""How well does a surrogate search's accuracy predictor rank the networks it picked, against a precise score?

    python experiments/bench_predictor_truth.py --run-dir <msunas run dir> --out truth.json \\
        experiment=fashion_mnist_supernet_cpu method=aebnas search=msunas seed=0 search.final_epochs=0 \\
        dataset.data_dir=/usr/share/datasets/fashion-mnist

A diagnostic, not a selection: the search's own val split is small (1,000 images in the CPU preset), so the
out-of-sample Kendall tau that ``predictions.csv`` allows mixes the predictor's error with the split's noise.
Every network of ``predictions.csv`` (each one predicted before it was trained) is scored again exactly as
the search scored it (inherited supernet weights, BatchNorm recalibrated, its genome's thresholds), on the
10,000-image test split; the first ``--check`` are also scored again on the search's val split, a check that
the search's scores are reproduced. The overrides must compose the run's own config, so the supernet comes
from the cache the run filled.

Reported: Kendall tau of predicted against val, of predicted against test and of val against test, pooled
and per iteration; the spread of the picks' accuracies on both splits and of their difference.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pandas as pd
from scipy.stats import kendalltau

from bench_common import load_setup, machine, write_json
from aebnas.search.evaluator import CandidateEvaluator
from aebnas.train.supernet import prepare_supernet


def tau(a, b) -> float:
    return float(kendalltau(a, b)[0])


def summarise(rows: pd.DataFrame) -> dict:
    """Pooled and per-iteration rank agreement of predicted, val and test accuracy; spreads in points."""
    per_iteration = rows.groupby("generation").apply(
        lambda g: pd.Series({"predicted_val": tau(g.predicted, g.val), "predicted_test": tau(g.predicted, g.test)}),
        include_groups=False)
    return {
        "networks": len(rows),
        "tau_predicted_val": tau(rows.predicted, rows.val),
        "tau_predicted_test": tau(rows.predicted, rows.test),
        "tau_val_test": tau(rows.val, rows.test),
        "mean_per_iteration_tau_predicted_val": float(per_iteration.predicted_val.mean()),
        "mean_per_iteration_tau_predicted_test": float(per_iteration.predicted_test.mean()),
        "sd_val_points": float(rows.val.std() * 100), "sd_test_points": float(rows.test.std() * 100),
        "sd_val_minus_test_points": float((rows.val - rows.test).std() * 100),
        "mean_val_minus_test_points": float((rows.val - rows.test).mean() * 100),
        "mae_predicted_val_points": float((rows.predicted - rows.val).abs().mean() * 100),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--check", type=int, default=5, help="networks whose val score is reproduced first")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    setup = load_setup(args.overrides)
    supernet, info = prepare_supernet(setup.space, setup.data, setup.supernet, setup.trainer, setup.device,
                                      setup.seed, progress=False)
    if not info.cached:
        print("note: the supernet was not in the cache and was trained now; the run's scores may not reproduce")
    on_val = CandidateEvaluator(setup.data, setup.trainer, setup.settings, setup.device, seed=setup.seed,
                                supernet=supernet)
    on_test = CandidateEvaluator(replace(setup.data, val=setup.data.test), setup.trainer, setup.settings,
                                 setup.device, seed=setup.seed, supernet=supernet)
    predictions = pd.read_csv(Path(args.run_dir) / "predictions.csv")
    predictions = predictions[predictions.status == "ok"]
    rows = []
    for i, r in enumerate(predictions.itertuples()):
        genome = setup.space.parse(r.key)
        if i < args.check and abs(on_val.evaluate(genome).val_accuracy - r.val_accuracy) > 1e-9:
            raise SystemExit(f"{r.key}: val accuracy not reproduced; do the overrides compose the run's config?")
        rows.append({"generation": int(r.generation), "key": r.key, "predicted": float(r.predicted_val_accuracy),
                     "val": float(r.val_accuracy), "test": on_test.evaluate(genome).val_accuracy})
        if (i + 1) % 40 == 0:
            print(f"{i + 1}/{len(predictions)} networks scored", flush=True)
    table = pd.DataFrame(rows)
    result = {"run_dir": str(args.run_dir), "overrides": setup.overrides, "machine": machine(),
              "val_images": len(setup.data.val), "test_images": len(setup.data.test),
              "val_scores_reproduced": min(args.check, len(rows)), "summary": summarise(table), "networks": rows}
    write_json(args.out, result)
    s = result["summary"]
    print(f"{s['networks']} networks: tau predicted-val "
          f"{s['tau_predicted_val']:.3f}, predicted-test {s['tau_predicted_test']:.3f}, val-test "
          f"{s['tau_val_test']:.3f}; sd val {s['sd_val_points']:.2f} pt, test {s['sd_test_points']:.2f} pt, "
          f"val - test {s['mean_val_minus_test_points']:+.2f} +- {s['sd_val_minus_test_points']:.2f} pt")


if __name__ == "__main__":
    main()
