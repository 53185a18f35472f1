"""Figures people look at instead of tables: the accuracy / expected-MACs front."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def plot_pareto(evaluations: pd.DataFrame, pareto: pd.DataFrame, path: str | Path | None = None,
                title: str = "accuracy vs expected MACs"):
    """All candidates (grey), the Pareto set (line), and each Pareto network's static full-depth reference.

    The reference is the same backbone run to its final classifier with no exit
    heads: the arrow from it to the adaptive point is what early exiting buys.
    """
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    if len(evaluations):
        ax.scatter(evaluations["expected_macs"] / 1e6, evaluations["val_accuracy"], s=12, c="0.7",
                   label=f"evaluated ({len(evaluations)})", zorder=1)
    if len(pareto):
        p = pareto.sort_values("expected_macs")
        ax.plot(p["expected_macs"] / 1e6, p["val_accuracy"], "-o", c="tab:blue", ms=5,
                label=f"Pareto set ({len(p)}), early exits", zorder=3)
        ax.scatter(p["static_macs"] / 1e6, p["static_val_accuracy"], marker="s", facecolors="none",
                   edgecolors="tab:red", s=30, label="same backbone, static full depth", zorder=2)
        for _, r in p.iterrows():
            ax.annotate("", xy=(r["expected_macs"] / 1e6, r["val_accuracy"]),
                        xytext=(r["static_macs"] / 1e6, r["static_val_accuracy"]),
                        arrowprops=dict(arrowstyle="->", color="tab:red", lw=0.6, alpha=0.6), zorder=2)
    ax.set_xlabel("expected MACs per image (millions)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
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
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)  # keeps the suffix matplotlib reads the format from
    fig.savefig(tmp)
    tmp.replace(path)
    plt.close(fig)
