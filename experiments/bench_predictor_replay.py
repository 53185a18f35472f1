"""Which model would have ranked a finished surrogate search's picks best? Replayed offline, no training.

    python experiments/bench_predictor_replay.py --out replay.json --run-dir <msunas run> [--run-dir ...] \\
        -- experiment=fashion_mnist_supernet_cpu dataset.data_dir=/usr/share/datasets/fashion-mnist

For each iteration of each run, every model is fitted on the rows trained before that iteration (the
archive's order, successful rows only) and predicts the val error of that iteration's networks; Kendall tau
is pooled over the iterations that start after ``--after`` evaluations, as ``bench_sample_efficiency.py``
pools the live predictions. A replay only scores the networks the run's own predictor picked: a model
that ranks them well may still pick worse ones, so a default is changed on live searches, not on this.
The overrides compose the runs' config (for the space and the input shape the features depend on).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy.stats import kendalltau

from bench_common import load_setup, machine, write_json
from aebnas.analysis import load_run
from aebnas.search.msunas import Featurizer
from aebnas.search.predictors import MODELS, make_predictor


class MeanOf:
    """The mean of several models' predictions: an ensemble to set beside the single models."""

    def __init__(self, names: Sequence[str], seed: int = 0):
        self.models = [make_predictor(n, seed) for n in names]

    def fit(self, X: np.ndarray, y: np.ndarray) -> "MeanOf":
        for m in self.models:
            m.fit(X, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.mean([m.predict(X) for m in self.models], axis=0)


def model_factories() -> dict[str, Callable[[], object]]:
    out: dict[str, Callable[[], object]] = {name: (lambda n=name: make_predictor(n, 0)) for name in MODELS}
    out["adaptive"] = lambda: make_predictor("adaptive", 0)
    out["mean_gp_trees"] = lambda: MeanOf(["gp", "trees"])
    return out


def replay(X: np.ndarray, error: np.ndarray, generation: np.ndarray, ok: np.ndarray, make: Callable[[], object],
           after: int = 100) -> float | None:
    """Pooled out-of-sample Kendall tau of predicted against measured error, over the iterations that start
    once ``after`` rows were evaluated; each iteration's model sees only the successful rows before it."""
    predicted, measured = [], []
    for g in np.unique(generation):
        before = generation < g
        if before.sum() < after or not (ok & before).any():
            continue
        new = (generation == g) & ok
        if not new.any():
            continue
        model = make().fit(X[before & ok], error[before & ok])
        predicted += list(model.predict(X[new]))
        measured += list(error[new])
    if len(measured) < 2:
        return None
    return float(kendalltau(predicted, measured).statistic)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", action="append", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--after", type=int, default=100)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    setup = load_setup(args.overrides)
    d = setup.data
    featurizer = Featurizer(setup.space, d.num_classes, d.in_channels, d.resolution)
    factories = model_factories()
    results = {}
    for run_dir in args.run_dir:
        ev = load_run(run_dir).evaluations
        X = featurizer.matrix([setup.space.parse(k) for k in ev["key"]])
        ok = (ev["status"] == "ok").to_numpy()
        error = 1.0 - ev["val_accuracy"].to_numpy(float)
        generation = ev["generation"].to_numpy(int)
        results[str(run_dir)] = {name: replay(X, error, generation, ok, make, args.after)
                                 for name, make in factories.items()}
        print(Path(run_dir), " ".join(f"{k} {v:.3f}" for k, v in results[str(run_dir)].items() if v is not None),
              flush=True)
    write_json(args.out, {"overrides": setup.overrides, "machine": machine(), "after": args.after,
                          "pooled_tau": results})


if __name__ == "__main__":
    main()
