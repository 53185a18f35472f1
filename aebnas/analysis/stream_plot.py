"""The stream benchmark at a glance: throughput static vs adaptive, the throttling curve (val accuracy with its
standard error beside test accuracy), where images leave, and a budget-controlled pass over time.

Reads the ``stream.json`` dict that ``aebnas-stream`` writes; no torch import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_stream(result: Mapping[str, Any], path: str | Path | None = None):
    comparisons = result["comparisons"]
    table = result.get("operating_points", [])
    budget = result.get("budget")
    fig, axes = plt.subplots(1, 4 if budget else 3, figsize=(17.5 if budget else 13, 3.8), dpi=110)
    ax = axes[0]
    labels = [f"batch {c['batch_size']}" for c in comparisons]
    xs = range(len(comparisons))
    ax.bar([x - 0.2 for x in xs], [c["static"]["images_per_second"] for c in comparisons], 0.4,
           label="static full depth", color="tab:red")
    ax.bar([x + 0.2 for x in xs], [c["adaptive"]["images_per_second"] for c in comparisons], 0.4,
           label="adaptive", color="tab:blue")
    for x, c in zip(xs, comparisons):
        ax.annotate(f"{c['speedup']:.2f}x", (x + 0.2, c["adaptive"]["images_per_second"]), ha="center",
                    va="bottom", fontsize=8)
    ax.set_xticks(list(xs), labels)
    ax.set_yscale("log")  # batch 1 and large batches differ by orders of magnitude
    ax.set_ylabel("images / s (log scale)")
    ax.set_title("throughput, same images")
    ax.legend(fontsize=8)
    ax = axes[1]
    if table:
        line = sorted(table, key=lambda r: r["images_per_second"])  # the names are not in order of speed
        ax.plot([r["images_per_second"] for r in line], [r["accuracy"] for r in line], "-o", c="tab:blue",
                label="test")
        if all("val_accuracy_se" in r for r in table):
            ax.errorbar([r["images_per_second"] for r in table], [r["val_accuracy"] for r in table],
                        yerr=[r["val_accuracy_se"] for r in table], fmt="none", ecolor="tab:gray", capsize=3,
                        label="val +- 1 SE")
        for r in table:
            ax.annotate(r["operating_point"], (r["images_per_second"], r["accuracy"]), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        one = [c for c in comparisons if c["batch_size"] == 1]  # the table runs at batch 1; so must its reference
        if one:
            s = one[0]["static"]
            ax.scatter([s["images_per_second"]], [s["accuracy"]], marker="s", c="tab:red", label="static (batch 1)")
            ax.legend(fontsize=8)
    ax.set_xlabel("images / s (batch 1)")
    ax.set_ylabel("test accuracy")
    ax.set_title("operating points")
    ax.grid(alpha=0.3)
    ax = axes[2]
    hist = comparisons[0]["adaptive"]["exit_histogram"]
    ax.bar(range(len(hist)), hist, color="tab:blue")
    ax.set_xticks(range(len(hist)), [f"exit {k}" for k in range(len(hist) - 1)] + ["final"])
    ax.set_ylabel("images")
    ax.set_title(f"where images leave ({result.get('operating_point_label', 'adaptive')})")
    if budget:
        plot_budget_windows(axes[3], budget)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
        plt.close(fig)
    return fig


def plot_budget_windows(ax, budget: Mapping[str, Any]) -> None:
    """The controlled pass: the measured quantity per window against its target (+-10 % band) over the stream."""
    windows = budget["windows"]
    target = budget["target"]
    x = [w["first_image"] + w["images"] / 2 for w in windows]
    ax.plot(x, [w["value"] for w in windows], "-o", ms=3, c="tab:blue", label="measured per window")
    ax.step(x, [w["target"] for w in windows], where="mid", c="k", lw=1, label="target")
    ax.fill_between(x, [w["target"] * 0.9 for w in windows], [w["target"] * 1.1 for w in windows], step="mid",
                    color="k", alpha=0.1, label="+-10 %")
    for s in budget.get("switches", []):
        ax.axvline(s["image"], c="tab:orange", lw=0.4, alpha=0.5)
    ax.set_xlabel("image")
    ax.set_ylabel(f"{target['kind']} ({target['unit']})")
    ax.set_title(f"budget {target['kind']}={target['value']:g}: {budget['switch_count']} switches")
    ax.legend(fontsize=7)
