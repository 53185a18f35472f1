"""A saved network's genome as people read it: a table per stage and exit, and a backbone + exits diagram.

Works from ``genome.json`` (genome text + space) with ``aebnas.space`` alone,
so notebooks need no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

from aebnas.space import Genome  # noqa: E402
from aebnas.space.layer_kinds import layer_kind  # noqa: E402


def load_genome(model_dir: str | Path) -> Genome:
    """The genome a saved Pareto network was built from (``models/NN_hash/genome.json``)."""
    return Genome.from_json((Path(model_dir) / "genome.json").read_text())


def genome_table(genome: Genome) -> pd.DataFrame:
    """One row per backbone stage and per exit position, in network order."""
    space = genome.space
    exits = {e.stage: e for e in genome.exits}
    rows = []
    for s, blocks in enumerate(genome.stages, start=1):
        spec = space.stages[s - 1]
        rows.append({"part": f"stage {s}", "width": spec.width, "stride": spec.stride, "depth": len(blocks),
                     "layers": ", ".join(f"MBConv k{b.kernel} x{b.expansion}" for b in blocks), "threshold": ""})
        e = exits.get(s)
        if e is None:
            continue
        if not e.active:
            rows.append({"part": f"exit after stage {s}", "width": "", "stride": "", "depth": 0,
                         "layers": "off", "threshold": ""})
            continue
        layers = [("2x2 " + l.pool + "-pool, " if l.pool != "none" else "") + f"{layer_kind(l.type).display_name} "
                  f"{l.width}ch k{l.kernel}" for l in e.layers]
        rows.append({"part": f"exit after stage {s}", "width": e.layers[-1].width, "stride": "",
                     "depth": len(e.layers), "layers": ", ".join(layers + ["global pool, linear"]),
                     "threshold": e.threshold})
    rows.append({"part": "final classifier", "width": space.final_head_channels or "", "stride": "", "depth": "",
                 "layers": (f"1x1 conv {space.final_head_channels}ch, " if space.final_head_channels else "")
                 + "global pool, linear", "threshold": ""})
    return pd.DataFrame(rows)


def plot_genome(genome: Genome, exit_rates: Sequence[float] | None = None, title: str | None = None):
    """Backbone stages left to right, each active exit hanging below its stage with its threshold.

    Box widths grow with stage depth; with ``exit_rates`` (early exits first,
    final last) each exit is labelled with the share of inputs that leave there.
    """
    space = genome.space
    fig, ax = plt.subplots(figsize=(2.2 * (space.n_stages + 2), 3.6), dpi=110)
    x = 0.0
    active = [e.stage for e in genome.active_exits]
    rates = list(exit_rates) if exit_rates is not None else None

    def box(x0, y0, w, h, text, color):
        ax.add_patch(FancyBboxPatch((x0, y0), w, h, boxstyle="round,pad=0.02", fc=color, ec="0.3"))
        ax.text(x0 + w / 2, y0 + h / 2, text, ha="center", va="center", fontsize=7)

    box(x, 1.0, 0.8, 1.0, f"stem\n{space.stem_channels}ch", "0.85")
    ax.annotate("", xy=(1.0, 1.5), xytext=(0.8, 1.5), arrowprops=dict(arrowstyle="->"))
    x += 1.0
    for s, blocks in enumerate(genome.stages, start=1):
        w = 0.6 + 0.35 * len(blocks)
        spec = space.stages[s - 1]
        box(x, 1.0, w, 1.0, f"stage {s}\n{spec.width}ch /{spec.stride}\n" +
            "\n".join(f"k{b.kernel}e{b.expansion}" for b in blocks), "#cfe2f3")
        if s in active:
            e = next(e for e in genome.active_exits if e.stage == s)
            label = "\n".join(l.to_text() for l in e.layers) + f"\nt={e.threshold:g}"
            if rates is not None:
                label += f"\n{100 * rates[active.index(s)]:.0f}% leave"
            box(x, -0.9, w, 1.3, label, "#fce5cd")
            ax.annotate("", xy=(x + w / 2, 0.4), xytext=(x + w / 2, 1.0), arrowprops=dict(arrowstyle="->"))
        ax.annotate("", xy=(x + w + 0.2, 1.5), xytext=(x + w, 1.5), arrowprops=dict(arrowstyle="->"))
        x += w + 0.2
    final = "final\nclassifier" + (f"\n{100 * rates[-1]:.0f}% leave" if rates is not None else "")
    box(x, 1.0, 1.0, 1.0, final, "#d9ead3")
    ax.set_xlim(-0.2, x + 1.2)
    ax.set_ylim(-1.1, 2.2)
    ax.axis("off")
    ax.set_title(title or "backbone (top) and early exits (below)", fontsize=9)
    fig.tight_layout()
    return fig
