"""Time of one surrogate iteration (predictor fitting + inner NSGA-II + selection) at a given archive size.

    python experiments/bench_surrogate_step.py --out surrogate_step.json [--rows 340] [--run-dir RUN]
        [--predictors adaptive mlp rbf gp trees] [--cost-models exit_rates direct] [hydra overrides ...]

With ``--run-dir`` the archive is a real search's (its first ``--rows`` successful evaluations) and every
predictor and cost model is also scored by 5-fold cross-validated Kendall tau on it; without, a synthetic
archive of Latin-hypercube genomes of the configured space, whose accuracy and exit rates are smooth functions
of the genes (timing only: their taus say nothing about real networks).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from aebnas.cost import expected_cost, network_cost
from aebnas.search import Evaluation
from aebnas.search.msunas import Featurizer, Surrogate, latin_hypercube, propose
from aebnas.search.objectives import constraint_values, objective_values


class ArchiveOnly:
    """What the surrogate step reads of an evaluator: the evaluations so far and the candidate key rule."""

    def __init__(self, evaluations: list[Evaluation]):
        self.evaluations = evaluations

    @staticmethod
    def candidate_key_of(ev: Evaluation) -> str:
        return ev.key

    @staticmethod
    def candidate_key(genome) -> str:
        return genome.key


def synthetic_archive(setup, rows: int, seed: int) -> list[Evaluation]:
    rng = np.random.default_rng(seed)
    space, data = setup.space, setup.data
    w = rng.normal(size=space.n_var)
    out = []
    for x in latin_hypercube(space, rows, rng):
        genome = space.decode(x)
        cost = network_cost(genome, data.num_classes, data.in_channels, data.resolution)
        acc = float(np.clip(0.6 + 0.05 * np.log(cost.static_macs) / 10 + 0.02 * np.tanh(w @ space.encode(genome) / 20)
                            + rng.normal(0, 0.01), 0, 1))
        ts = list(genome.thresholds)
        rates, left = [], 1.0
        for t in ts:
            r = left * (1.0 - t) * 0.8
            rates.append(r)
            left -= r
        rates.append(left)
        macs = expected_cost(rates, cost.path_macs)
        ev = Evaluation(key=genome.key, network_key=genome.network_key, generation=1, val_accuracy=acc,
                        expected_macs=macs, static_macs=cost.static_macs, total_macs=cost.total_macs, params=0,
                        n_exits=len(ts), exit_stages=[e.stage for e in genome.active_exits], thresholds=ts,
                        path_macs=list(cost.path_macs), exit_rates=rates, exit_accuracies=[acc] * len(rates),
                        head_accuracies=[acc] * len(rates), static_val_accuracy=acc, train_seconds=0.0,
                        eval_seconds=0.0)
        ev.objectives = objective_values(setup.settings, acc, macs)
        ev.constraints = constraint_values(setup.settings, macs)
        out.append(ev)
    return out


def cross_validated(setup, evaluations: list[Evaluation], predictors, cost_models, seed: int) -> list[dict[str, Any]]:
    """5-fold Kendall tau of each predictor x cost model on held-out rows of a real archive."""
    import warnings
    from dataclasses import replace

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import KFold

    warnings.simplefilter("ignore", ConvergenceWarning)  # the MLP's lbfgs stops at max_iter by design, as in the search

    from aebnas.search.predictors import kendall_tau

    space = setup.space
    featurizer = Featurizer(space, setup.data.num_classes, setup.data.in_channels, setup.data.resolution)
    genomes = [space.parse(e.key) for e in evaluations]
    rows = []
    for cost_model in cost_models:
        for name in predictors:
            settings = replace(setup.settings, predictor=name, cost_predictor=name, cost_model=cost_model,
                               algorithm="msunas")
            acc_pred, cost_pred = np.zeros(len(genomes)), np.zeros(len(genomes))
            start = time.perf_counter()
            for train, test in KFold(5, shuffle=True, random_state=seed).split(genomes):
                s = Surrogate(settings, featurizer, seed)
                s.fit([evaluations[i] for i in train], [genomes[i] for i in train])
                p = s.predict([genomes[i] for i in test])
                acc_pred[test], cost_pred[test] = p["val_accuracy"], p["expected_macs"]
            acc = np.array([e.val_accuracy for e in evaluations])
            macs = np.array([e.expected_macs for e in evaluations])
            rows.append({"predictor": name, "cost_model": cost_model,
                         "accuracy_tau": round(kendall_tau(acc, acc_pred), 4),
                         "accuracy_mae": round(float(np.abs(acc - acc_pred).mean()), 5),
                         "expected_macs_tau": round(kendall_tau(macs, cost_pred), 4),
                         "expected_macs_mape": round(float(np.mean(np.abs(cost_pred - macs) / macs)), 4),
                         "seconds": round(time.perf_counter() - start, 2)})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="surrogate_step.json")
    p.add_argument("--rows", type=int, default=340)
    p.add_argument("--run-dir", default=None)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--predictors", nargs="+", default=["adaptive", "mlp", "rbf", "gp", "trees"])
    p.add_argument("--cost-models", nargs="+", default=["exit_rates", "direct"])
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_common import load_setup, machine, write_json
    from dataclasses import replace

    overrides = args.overrides or ["experiment=fashion_mnist_supernet_cpu",
                                   "dataset.data_dir=/usr/share/datasets/fashion-mnist"]
    setup = load_setup(overrides)
    if args.run_dir:
        from aebnas.search.archive import EvaluationArchive

        recs = [Evaluation.from_record(r) for r in EvaluationArchive(Path(args.run_dir) / "archive.sqlite").rows()]
        evaluations = [e for e in recs if e.status == "ok"][:args.rows]
    else:
        evaluations = synthetic_archive(setup, args.rows, setup.seed)
    settings = replace(setup.settings, algorithm="msunas")
    featurizer = Featurizer(setup.space, setup.data.num_classes, setup.data.in_channels, setup.data.resolution)
    steps = []
    for r in range(args.repeats):
        start = time.perf_counter()
        step = propose(setup.space, ArchiveOnly(evaluations), settings, featurizer, setup.seed, 2 + r,
                       settings.per_iteration)
        steps.append({"seconds": round(time.perf_counter() - start, 3), **{k: step.info[k] for k in (
            "fit_seconds", "inner_seconds", "inner_networks", "predictor", "cost_predictor")}})
        print(steps[-1], flush=True)
    result = {"benchmark": "surrogate_step", "rows": len(evaluations), "archive": args.run_dir or "synthetic",
              "overrides": overrides, "settings": {k: getattr(settings, k) for k in (
                  "predictor", "cost_predictor", "cost_model", "inner_pop_size", "inner_generations",
                  "per_iteration")},
              "steps": steps, "machine": machine()}
    if args.run_dir:
        result["cross_validated"] = cross_validated(setup, evaluations, args.predictors, args.cost_models, setup.seed)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
