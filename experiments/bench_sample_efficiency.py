"""Sample efficiency: hypervolume against the number of trained networks, surrogate search vs NSGA-II vs random.

    python experiments/bench_sample_efficiency.py --out sample_efficiency.json [--seeds 0 1 2]
        [--searches msunas nsga2 random] [--work-dir bench_runs/sample_efficiency] [hydra overrides ...]

Each (seed, search) is one ``aebnas-search`` run of ``experiment=fashion_mnist_supernet_cpu`` (AEBNAS's genome and
objective, 340 candidates) with ``search.final_epochs=0`` (the answer's extra training does not change which
networks the search trained); the three searches of a seed share that seed's cached supernet. Runs go one at a
time, each under ``flock -x /tmp/aebnas-cpu.lock``; the JSON is rewritten after every run, so an interrupted
benchmark keeps what it measured, and a rerun skips finished runs and resumes a killed one.

Two hypervolumes after each evaluation, in the archive's order, over the successful candidates' front against
(1, 1): ``curve`` in the objectives the search minimised (``objective_0``, ``objective_1`` of evaluations.csv:
for AEBNAS's ``macs_target``, error + 0.1 MAPE and MAPE against the target MACs), the one the targets are judged
on, since a search is only asked to improve what it optimises; and ``curve_error_macs`` in (val error, expected
MACs / largest static MACs), the report's (aebnas-report), which rewards cheap networks that ``macs_target``
deliberately does not seek. With ``search.objective=avg_macs`` the two coincide up to the cost's scale. A figure
(``--out`` with .png) shows both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aebnas.analysis import load_run
from aebnas.analysis.pareto import hypervolume_2d, non_dominated_mask

SEARCHES = {  # search name -> the overrides that select it (AEBNAS genome and objective throughout)
    "msunas": ["method=aebnas", "search=msunas"],
    "nsga2": ["method=aebnas", "search=nsga2"],
    "random": ["method=random", "search=nsga2"],
}
BASE = ["experiment=fashion_mnist_supernet_cpu", "dataset.data_dir=/usr/share/datasets/fashion-mnist",
        "search.final_epochs=0", "progress=false"]
LOCK = "/tmp/aebnas-cpu.lock"


def hypervolume_curve(F: np.ndarray, ok: np.ndarray, networks: list[str]) -> list[list[float]]:
    """[evaluations, trained networks, hypervolume against (1, 1)] after each evaluation of rows ``F``
    (objectives, minimised), in archive order; failed rows (``ok`` false) do not count."""
    seen, curve, front = set(), [], np.zeros((0, 2))
    for i in range(len(F)):
        seen.add(networks[i])
        if ok[i]:
            pts = np.vstack([front, F[i]])
            front = pts[non_dominated_mask(pts)]
        curve.append([i + 1, len(seen), round(hypervolume_2d(front, (1.0, 1.0)), 6)])
    return curve


def curves(evaluations: pd.DataFrame, objective: str, macs_ref: float) -> dict[str, list[list[float]]]:
    """The search's own objectives' curve and the (val error, E[MACs] / largest) one."""
    ok = (evaluations["status"] == "ok").to_numpy()
    networks = evaluations["network_key"].tolist()
    own = evaluations[["objective_0", "objective_1"]].to_numpy(float)
    if objective == "avg_macs":  # MACs scaled as the report scales them, so the reference point (1, 1) fits
        own = own / np.array([1.0, macs_ref])
    report = np.column_stack([1.0 - evaluations["val_accuracy"].to_numpy(float),
                              evaluations["expected_macs"].to_numpy(float) / macs_ref])
    return {"curve": hypervolume_curve(own, ok, networks), "curve_error_macs": hypervolume_curve(report, ok, networks)}


def predictor_quality(run_dir: Path, after: int = 100) -> dict[str, Any]:
    """Out-of-sample Kendall tau of the accuracy predictor, pooled over the networks trained once ``after``
    were, and per iteration (from predictions.csv and generations.csv)."""
    from scipy.stats import kendalltau

    path = run_dir / "predictions.csv"
    if not path.exists():
        return {}
    pred = pd.read_csv(path)
    gens = pd.read_csv(run_dir / "generations.csv")
    before = dict(zip(gens["generation"], gens["evaluations"].shift(1)))  # evaluations before each iteration
    late = pred[(pred["status"] == "ok") & pred["generation"].map(lambda g: before.get(g, 0) >= after)]
    pooled = kendalltau(late["val_accuracy"], late["predicted_val_accuracy"]).statistic if len(late) > 1 else None
    return {"pooled_tau_after": after, "pooled_tau": None if pooled is None else round(float(pooled), 4),
            "pooled_n": int(len(late)),
            "per_iteration": gens[["generation", "evaluations", "predictor", "predictor_tau", "predictor_mae",
                                   "cost_predictor", "cost_predictor_tau", "fit_seconds", "inner_seconds"]]
            .dropna(subset=["predictor"]).to_dict("records")}


def run_one(run_dir: Path, overrides: list[str]) -> float:
    """One search (resumed when a killed one is there); wall seconds of this call."""
    start = time.perf_counter()
    if (run_dir / "summary.json").exists():
        return 0.0
    args = [f"resume={run_dir}"] if (run_dir / "archive.sqlite").exists() else [*overrides, f"hydra.run.dir={run_dir}"]
    cmd = ["flock", "-x", LOCK, sys.executable, "-m", "aebnas.cli.search", *args]
    print(" ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """The three sample-efficiency targets over the seeds that have both searches, on the search's own
    objectives (``curve``) and, for comparison, on the report's (``curve_error_macs``)."""
    out: dict[str, Any] = {}
    for name in ("curve", "curve_error_macs"):
        reach, above, final = [], {}, {}
        for seed, runs in results["runs"].items():
            if all(name in runs.get(s, {}) for s in ("msunas", "nsga2")):
                goal = runs["nsga2"][name][-1][2]
                first = next((c[0] for c in runs["msunas"][name] if c[2] >= goal), None)
                reach.append(first if first is not None else float("inf"))
                above[seed] = runs["msunas"][name][-1][2] > goal
                final[seed] = {s: r[name][-1][2] for s, r in runs.items() if name in r}
        out[name] = {"seeds_compared": len(reach), "msunas_reaches_nsga2_final_hv_at": reach,
                     "median_evaluations_for_msunas_to_reach_nsga2_final_hv":
                         statistics.median(reach) if reach else None,
                     "msunas_above_nsga2_at_end": above, "final_hv": final}
    out["accuracy_predictor_pooled_tau_after_100"] = [
        r["msunas"]["predictor"].get("pooled_tau") for r in results["runs"].values() if "msunas" in r]
    return out


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"msunas": "tab:blue", "nsga2": "tab:orange", "random": "tab:gray"}
    titles = {"curve": "objectives the search minimised", "curve_error_macs": "(val error, E[MACs] / largest)"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (name, title) in zip(axes, titles.items()):
        labelled = set()
        for runs in results["runs"].values():
            for search, r in runs.items():
                if name not in r:
                    continue
                c = np.array(r[name])
                ax.plot(c[:, 0], c[:, 2], color=colours.get(search), lw=1.2, alpha=0.8,
                        label=None if search in labelled else search)
                labelled.add(search)
        ax.set_xlabel("candidates trained and evaluated")
        ax.set_ylabel("hypervolume against (1, 1)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend()
    extra = " ".join(results["overrides"][len(BASE):])
    fig.suptitle(f"Fashion-MNIST, tiny space, seeds {', '.join(results['runs'])}" + (f"; {extra}" if extra else ""),
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="sample_efficiency.json")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--searches", nargs="+", default=list(SEARCHES), choices=list(SEARCHES))
    p.add_argument("--work-dir", default="bench_runs/sample_efficiency")
    p.add_argument("overrides", nargs="*", help="hydra overrides added to every run")
    args = p.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_common import machine, write_json

    out, work = Path(args.out), Path(args.work_dir)
    results: dict[str, Any] = {"benchmark": "sample_efficiency", "overrides": BASE + args.overrides,
                               "searches": {s: SEARCHES[s] for s in args.searches}, "machine": machine(), "runs": {}}
    if out.exists():
        results["runs"] = json.loads(out.read_text()).get("runs", {})
    for seed in args.seeds:
        for search in args.searches:
            run_dir = (work / f"seed{seed}" / search).resolve()
            wall = run_one(run_dir, [*BASE, *args.overrides, *SEARCHES[search], f"seed={seed}"])
            run = load_run(run_dir)
            entry = {"run_dir": str(run_dir), "search_seconds": run.summary.get("search_seconds"),
                     "wall_seconds_this_call": round(wall, 1), "evaluations": len(run.evaluations),
                     **curves(run.evaluations, run.config["search"]["objective"],
                               float(run.summary["largest_static_macs"])),
                     "finished_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
            if search == "msunas":
                entry["predictor"] = predictor_quality(run_dir)
            results["runs"].setdefault(str(seed), {})[search] = entry
            results["summary"] = summarise(results)
            write_json(out, results)
            plot(results, out.with_suffix(".png"))
            print(f"seed {seed} {search}: HV {entry['curve'][-1][2]:.4f} (own objectives), "
                  f"{entry['curve_error_macs'][-1][2]:.4f} (val error, E[MACs]) after {entry['evaluations']} "
                  "evaluations", flush=True)


if __name__ == "__main__":
    main()
