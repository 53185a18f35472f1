"""Figures people look at instead of tables: the accuracy / expected-cost front, latency-table checks."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import pandas as pd  # noqa: E402

from aebnas.atomic_write import atomic_path  # noqa: E402


# cost column -> (column of the static full-depth reference, axis scale, axis label)
COST_AXES = {
    "expected_macs": ("static_macs", 1e-6, "expected MACs per image (millions)"),
    "expected_latency_ms": ("static_latency_ms", 1.0, "expected latency per image (ms, from the latency table)"),
}


def plot_pareto(evaluations: pd.DataFrame, pareto: pd.DataFrame, path: str | Path | None = None,
                title: str = "accuracy vs expected MACs", cost: str = "expected_macs"):
    """All candidates (grey), the Pareto set (line), and each Pareto network's static full-depth reference.

    The reference is the same backbone run to its final classifier with no exit
    heads: the arrow from it to the adaptive point is what early exiting buys.
    """
    static, scale, label = COST_AXES[cost]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    if len(evaluations):
        ax.scatter(evaluations[cost] * scale, evaluations["val_accuracy"], s=12, c="0.7",
                   label=f"evaluated ({len(evaluations)})", zorder=1)
    if len(pareto):
        p = pareto.sort_values(cost)
        ax.plot(p[cost] * scale, p["val_accuracy"], "-o", c="tab:blue", ms=5,
                label=f"Pareto set ({len(p)}), early exits", zorder=3)
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
