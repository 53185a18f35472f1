"""The stream benchmark at a glance: throughput static vs adaptive, the throttling curve, where images leave.

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
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=110)
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
        ax.plot([r["images_per_second"] for r in table], [r["accuracy"] for r in table], "-o", c="tab:blue")
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
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
        plt.close(fig)
    return fig
