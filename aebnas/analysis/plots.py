"""Figures people look at instead of tables: the accuracy / expected-cost front, latency-table checks."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from aebnas.atomic_write import atomic_path  # noqa: E402
from .pareto import non_dominated_mask  # noqa: E402


# cost column -> (column of the static full-depth reference, axis scale, axis label)
COST_AXES = {
    "expected_macs": ("static_macs", 1e-6, "expected MACs per image (millions)"),
    "expected_latency_ms": ("static_latency_ms", 1.0, "expected latency per image (ms, from the latency table)"),
}


def plot_pareto(evaluations: pd.DataFrame, pareto: pd.DataFrame, path: str | Path | None = None,
                title: str = "accuracy vs expected MACs", cost: str = "expected_macs"):
    """All candidates (grey), the Pareto front they form, and each answer network's static full-depth reference.

    Every line drawn is a true front of the points it joins. After a final training
    (``search.final_epochs``, marked by ``search_*`` columns in ``pareto``) the saved
    networks have new accuracies and costs, so they are drawn as a second, separately
    named set beside the search-time front: a dotted arrow from each network's search-time
    point to its final one, a line through those final networks that no other final
    network dominates, and hollow markers for the ones that another does.

    The static reference is the same backbone run to its final classifier with no exit
    heads: the red arrow from it to the adaptive point is what early exiting buys.
    """
    static, scale, label = COST_AXES[cost]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    if len(evaluations):
        ax.scatter(evaluations[cost] * scale, evaluations["val_accuracy"], s=12, c="0.7",
                   label=f"search: evaluated ({_count(len(evaluations), 'candidate')})", zorder=1)
    final = len(pareto) > 0 and f"search_{cost}" in pareto.columns and "search_val_accuracy" in pareto.columns
    if len(pareto):
        p = pareto.sort_values(cost)
        if final:
            searched = p[[f"search_{cost}", "search_val_accuracy"]].dropna()
            searched = searched.iloc[front_mask(searched["search_val_accuracy"], searched[f"search_{cost}"])]
            searched = searched.sort_values(f"search_{cost}")
            ax.plot(searched[f"search_{cost}"] * scale, searched["search_val_accuracy"], "-o", c="tab:blue", ms=5,
                    label=f"search: Pareto front ({_count(len(searched), 'network')})", zorder=3)
            for _, r in p.iterrows():
                ax.annotate("", xy=(r[cost] * scale, r["val_accuracy"]),
                            xytext=(r[f"search_{cost}"] * scale, r["search_val_accuracy"]),
                            arrowprops=dict(arrowstyle="->", color="tab:green", lw=0.6, ls=":"), zorder=2)
            epochs = _final_epochs(p)
            keep = front_mask(p["val_accuracy"], p[cost])
            ax.plot(p[cost][keep] * scale, p["val_accuracy"][keep], "-D", c="tab:green", ms=5,
                    label=f"after final training{epochs}: front ({_count(int(keep.sum()), 'network')})", zorder=4)
            if (~keep).any():
                ax.scatter(p[cost][~keep] * scale, p["val_accuracy"][~keep], marker="D", facecolors="none",
                           edgecolors="tab:green", s=28, zorder=4,
                           label=f"after final training: dominated ({_count(int((~keep).sum()), 'network')})")
        else:
            keep = front_mask(p["val_accuracy"], p[cost])
            ax.plot(p[cost][keep] * scale, p["val_accuracy"][keep], "-o", c="tab:blue", ms=5,
                    label=f"Pareto front, early exits ({_count(int(keep.sum()), 'network')})", zorder=3)
        ax.scatter(p[static] * scale, p["static_val_accuracy"], marker="s", facecolors="none",
                   edgecolors="tab:red", s=30, label="same backbone, static full depth", zorder=2)
        for _, r in p.iterrows():
            ax.annotate("", xy=(r[cost] * scale, r["val_accuracy"]),
                        xytext=(r[static] * scale, r["static_val_accuracy"]),
                        arrowprops=dict(arrowstyle="->", color="tab:red", lw=0.6, alpha=0.6), zorder=2)
    ax.set_xlabel(label)
    ax.set_ylabel("validation accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _finish(fig, path)


def front_mask(accuracy: pd.Series, cost: pd.Series) -> np.ndarray:
    """Which rows no other row beats in both accuracy (higher) and cost (lower): the front to draw a line through."""
    F = np.column_stack([-np.asarray(accuracy, dtype=float), np.asarray(cost, dtype=float)])
    return non_dominated_mask(F) if len(F) else np.zeros(0, dtype=bool)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _final_epochs(pareto: pd.DataFrame) -> str:
    epochs = pareto["final_epochs"].dropna().unique() if "final_epochs" in pareto.columns else []
    epochs = [int(e) for e in epochs if e]
    return f" ({epochs[0]} more epoch{'' if epochs[0] == 1 else 's'})" if len(set(epochs)) == 1 else ""


def plot_latency_check(rows: pd.DataFrame, summary: dict, path: str | Path | None = None, title: str = ""):
    """Predicted (latency table) vs measured latency of every exit path of the validation networks."""
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    early, final = rows[~rows["final"]], rows[rows["final"]]
    ax.scatter(early["measured_ms"], early["predicted_ms"], s=10, c="tab:orange", label="early-exit paths")
    ax.scatter(final["measured_ms"], final["predicted_ms"], s=12, c="tab:blue", label="full networks")
    lo = min(rows["measured_ms"].min(), rows["predicted_ms"].min()) * 0.9
    hi = max(rows["measured_ms"].max(), rows["predicted_ms"].max()) * 1.1
    ax.plot([lo, hi], [lo, hi], c="0.5", lw=0.8, ls="--", label="prediction = measurement")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers at 1, 2, 5 x 10^k instead of crowded powers of ten
        axis.set_major_formatter(mticker.FormatStrFormatter("%g"))
        axis.set_minor_locator(mticker.LogLocator(subs=(2, 5)))
        axis.set_minor_formatter(mticker.FormatStrFormatter("%g"))
    a = summary["all_paths"]
    ax.set_title(f"{title}\nMAPE {a['mape_pct']:.1f}%, Spearman rho {a['spearman_rho']:.3f} "
                 f"({summary['paths']} paths, {summary['networks']} networks)", fontsize=9)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", fontsize=8)
    return _finish(fig, path)


def _finish(fig, path: str | Path | None):
    fig.tight_layout()
    if path is not None:
        _save(fig, path)
    return fig


def plot_fronts(fronts: dict[str, dict[str, pd.DataFrame]], targets: dict[str, float | None],
                path: str | Path | None = None):
    """One panel per dataset, each method's accuracy / expected-MACs front overlaid (staircase, cheapest first).

    ``fronts[dataset][method]`` holds the non-dominated candidates (val_accuracy,
    expected_macs) of that method's runs pooled over seeds; the dashed line marks
    the dataset's target average MACs.
    """
    n = max(len(fronts), 1)
    fig, axes = plt.subplots(1, n, figsize=(6.5 * n, 4.5), dpi=120, squeeze=False)
    for ax, (dataset, by_method) in zip(axes[0], fronts.items()):
        for method, front in by_method.items():
            if len(front):
                f = front.sort_values("expected_macs")
                ax.step(f["expected_macs"] / 1e6, f["val_accuracy"], where="post", marker="o", ms=4, label=method)
        if targets.get(dataset):
            ax.axvline(targets[dataset] / 1e6, ls="--", c="0.4", lw=1, label="target")
        ax.set_xlabel("expected MACs per image (millions)")
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"{dataset}: Pareto fronts, seeds pooled")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    if path is not None:
        _save(fig, path)
    return fig


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:  # keeps the suffix matplotlib reads the format from
        fig.savefig(tmp)
    plt.close(fig)
