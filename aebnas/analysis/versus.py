"""Each method against a baseline method: differences of the report's means, their standard error, seeds won.

A table of means +- std leaves the reader to judge whether a lead of 0.8
points over three seeds is real. On the CPU one supernet per seed moves a
method's outcome as much as the method does (docs/results.md), so the
comparison a paper needs is the difference with its uncertainty:

* difference: the method's mean minus the baseline's, over the seeds each has;
* standard error of that difference, Welch's sqrt(s_m^2/n_m + s_b^2/n_b)
  (runs of two methods share a seed, not a supernet: each method's exit heads
  are trained into its own supernet, so the runs are treated as independent);
  NaN where either side has fewer than two seeds;
* seeds won: paired by seed, how often the method's figure is above the
  baseline's, out of the seeds where both have one (a tie is not a win); not
  counted where either method ran a seed more than once, as pairs would be guessed.

Reads the per-run table of :func:`aebnas.analysis.report.collect`; no torch.
"""

from __future__ import annotations

import math

import pandas as pd

from aebnas.analysis.report import DIGITS, HEADERS, ReportError, method_key

COMPARED = ("val_accuracy_at_target", "test_accuracy_of_val_choice", "test_accuracy_at_target", "hypervolume")


def _difference(method: pd.Series, baseline: pd.Series) -> tuple[float, float]:
    m, b = method.dropna().to_numpy(float), baseline.dropna().to_numpy(float)
    if not len(m) or not len(b):
        return float("nan"), float("nan")
    diff = float(m.mean() - b.mean())
    se = math.sqrt(m.var(ddof=1) / len(m) + b.var(ddof=1) / len(b)) if len(m) > 1 and len(b) > 1 else float("nan")
    return diff, se


def versus(per_run: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One row per (dataset, method other than ``baseline``): difference, standard error and seeds won per figure.

    Raises ReportError naming the methods present when a dataset has no run of ``baseline``.
    """
    rows = []
    for dataset, runs in per_run.groupby("dataset", sort=True):
        methods = sorted(runs["method"].unique(), key=method_key)
        if baseline not in methods:
            raise ReportError(f"--versus: no run of method '{baseline}' on {dataset}; its methods are "
                              f"{', '.join(methods)}")
        base = runs[runs["method"] == baseline]
        for method in methods:
            if method == baseline:
                continue
            mine = runs[runs["method"] == method]
            row = {"dataset": dataset, "method": method, "baseline": baseline, "seeds": len(mine),
                   "baseline_seeds": len(base)}
            # seeds pair runs only where each side ran a seed once; repeated seeds leave the wins uncounted
            unique = not mine["seed"].duplicated().any() and not base["seed"].duplicated().any()
            paired = mine.merge(base, on="seed", suffixes=("", "_base")) if unique else mine.iloc[:0]
            for metric in COMPARED:
                diff, se = _difference(mine[metric], base[metric])
                both = paired[[metric, f"{metric}_base"]].dropna() if unique else pd.DataFrame()
                row[f"{metric}_diff"] = diff
                row[f"{metric}_se"] = se
                row[f"{metric}_won"] = int((both[metric] > both[f"{metric}_base"]).sum()) if len(both) else 0
                row[f"{metric}_paired"] = len(both)
            rows.append(row)
    return pd.DataFrame(rows)


def _cell(diff: float, se: float, won: int, paired: int, digits: int) -> str:
    if math.isnan(diff):
        return "-"
    text = f"{diff:+.{digits}f}"
    if not math.isnan(se):
        text += f" ± {se:.{digits}f}"
    return f"{text} ({won}/{paired})" if paired else text


def versus_markdown(table: pd.DataFrame) -> str:
    """The differences as Markdown; a cell reads 'difference ± standard error (seeds won/seeds paired)'."""
    header = ["dataset", "method", "vs", "seeds (method/baseline)"] + [f"Δ {HEADERS[m]}" for m in COMPARED]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    for _, r in table.iterrows():
        cells = [str(r["dataset"]), str(r["method"]), str(r["baseline"]), f"{r['seeds']}/{r['baseline_seeds']}"]
        cells += [_cell(r[f"{m}_diff"], r[f"{m}_se"], int(r[f"{m}_won"]), int(r[f"{m}_paired"]), DIGITS[m])
                  for m in COMPARED]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("\nΔ: method's mean minus the baseline's; ± the standard error of that difference (Welch); "
            "(w/n): seeds where the method is above the baseline, of the n seeds both have.\n")
    return "\n".join(lines) + "\n" + note


__all__ = ["COMPARED", "versus", "versus_markdown"]
