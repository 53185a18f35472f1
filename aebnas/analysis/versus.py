"""Each method against a baseline method: differences of the report's means, their standard errors, seeds won.

A table of means +- std leaves the reader to judge whether a lead of 0.8
points over three seeds is real. On the CPU one supernet per seed moves a
method's outcome as much as the method does (docs/results/method-comparison.md), so the
comparison a paper needs is the difference with its uncertainty:

* difference: the method's mean minus the baseline's, each over the runs that
  have the figure;
* standard error of that difference, Welch's sqrt(s_m^2/n_m + s_b^2/n_b), which
  treats the runs as independent; NaN where either side has fewer than two;
* paired standard error, sd(d)/sqrt(n) of the per-seed differences d, where
  every run of both methods pairs by seed (each seed once, the same seeds, no
  figure missing). Runs of one seed start from the same initial supernet
  weights (the backbone is built first, from the seed), so their outcomes
  correlate and pairing usually gives the tighter, fairer error;
* p: the two-sided p-value of a t-test of a zero difference, Welch's (with
  the Welch-Satterthwaite degrees of freedom) beside the Welch error and the
  paired one (n - 1 degrees of freedom) beside the paired error, so that
  "2.8 standard errors on 3 seeds" need not be looked up by hand; NaN where
  the error is NaN or zero;
* seeds won: paired by seed, how often the method's figure is above the
  baseline's, out of the seeds where both have one (a tie counts for neither);
  not counted where either method ran a seed more than once, as pairs would
  be guessed, and runs without a seed never pair.

Reads the per-run table of :func:`aebnas.analysis.report.collect`; no torch.
"""

from __future__ import annotations

import math
import warnings

import pandas as pd
from scipy import stats

from aebnas.analysis.report import DIGITS, HEADERS, ReportError, markdown_table, method_key

COMPARED = ("val_accuracy_at_target", "test_accuracy_at_target", "test_accuracy_of_val_choice", "hypervolume")


def _figures(mine: pd.DataFrame, base: pd.DataFrame, pairs: pd.DataFrame | None,
             metric: str) -> dict[str, float | int]:
    m, b = mine[metric].dropna(), base[metric].dropna()
    diff, se, p = float("nan"), float("nan"), float("nan")
    if len(m) and len(b):
        diff = float(m.mean() - b.mean())
        if len(m) > 1 and len(b) > 1:
            se = math.sqrt(m.var(ddof=1) / len(m) + b.var(ddof=1) / len(b))
            if se:  # without spread there is no test (the Welch-Satterthwaite degrees of freedom are 0/0)
                with warnings.catch_warnings():  # equal samples: scipy warns of cancellation in a zero difference
                    warnings.simplefilter("ignore", RuntimeWarning)
                    p = float(stats.ttest_ind(m, b, equal_var=False).pvalue)
    both = (pairs if pairs is not None else pd.DataFrame(columns=[metric, f"{metric}_base"], dtype=float))[
        [metric, f"{metric}_base"]].dropna()
    d = both[metric] - both[f"{metric}_base"]
    complete = len(d) == len(m) == len(b) >= 2  # every run with the figure is in a pair
    paired_se = float(d.std(ddof=1) / math.sqrt(len(d))) if complete else float("nan")
    paired_p = float("nan")
    if complete and paired_se:
        paired_p = float(stats.ttest_rel(both[metric], both[f"{metric}_base"]).pvalue)
    return {"diff": diff, "se": se, "p": p, "paired_se": paired_se, "paired_p": paired_p,
            "won": int((d > 0).sum()), "paired": len(d), "n": len(m), "n_base": len(b)}


def versus(per_run: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """One row per (dataset, method other than ``baseline``) with, per compared figure, ``<figure>_diff``,
    ``_se`` and ``_p`` (Welch), ``_paired_se`` and ``_paired_p``, ``_won`` and ``_paired`` (seeds compared),
    ``_n`` and ``_n_base`` (runs with the figure).

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
            repeated = bool(mine["seed"].dropna().duplicated().any() or base["seed"].dropna().duplicated().any())
            # runs without a seed never pair
            pairs = None if repeated else mine.dropna(subset=["seed"]).merge(
                base.dropna(subset=["seed"]), on="seed", suffixes=("", "_base"))
            row = {"dataset": dataset, "method": method, "baseline": baseline, "runs": len(mine),
                   "baseline_runs": len(base), "seed_repeated": repeated}
            for metric in COMPARED:
                row.update({f"{metric}_{k}": v for k, v in _figures(mine, base, pairs, metric).items()})
            rows.append(row)
    return pd.DataFrame(rows)


def _p_text(p: float) -> str:
    # two decimals down to 0.1 (0.30, not 0.3), two significant digits below it (0.014)
    return "p < 0.001" if p < 0.001 else f"p {p:.2f}" if p >= 0.095 else f"p {p:.2g}"


def _cell(r: pd.Series, metric: str) -> str:
    diff, se, paired_se = r[f"{metric}_diff"], r[f"{metric}_se"], r[f"{metric}_paired_se"]
    if math.isnan(diff):
        return "-"
    digits = DIGITS[metric]
    text = f"{diff:+.{digits}f}"
    if not math.isnan(se):
        text += f" ± {se:.{digits}f}"
        if not math.isnan(r[f"{metric}_p"]):
            text += f", {_p_text(r[f'{metric}_p'])}"
    notes = []
    if not math.isnan(paired_se):
        paired = f"paired ± {paired_se:.{digits}f}"
        paired_p = r[f"{metric}_paired_p"]
        notes.append(paired if math.isnan(paired_p) else f"{paired}, {_p_text(paired_p)}")
    if r["seed_repeated"]:
        notes.append("a seed repeated: no pairs")
    elif r[f"{metric}_paired"]:
        notes.append(f"{int(r[f'{metric}_won'])}/{int(r[f'{metric}_paired'])}")
    if r[f"{metric}_n"] < r["runs"] or r[f"{metric}_n_base"] < r["baseline_runs"]:
        notes.append(f"over {int(r[f'{metric}_n'])}/{int(r[f'{metric}_n_base'])} runs")
    return f"{text} ({'; '.join(notes)})" if notes else text


def versus_markdown(table: pd.DataFrame) -> str:
    """The differences as Markdown; the note under the table says how to read a cell."""
    header = ["dataset", "method", "vs", "runs (method/baseline)"] + [f"Δ {HEADERS[m]}" for m in COMPARED]
    body = [[str(r["dataset"]), str(r["method"]), str(r["baseline"]), f"{r['runs']}/{r['baseline_runs']}"]
            + [_cell(r, m) for m in COMPARED] for _, r in table.iterrows()]
    note = ("\nΔ: the method's mean minus the baseline's; ± the standard error of that difference (Welch, runs "
            "independent); paired ±: the standard error of the mean per-seed difference, where every run pairs by "
            "seed; p: two-sided t-test of no difference, Welch's after the Welch error, the paired one after the "
            "paired error; w/n: seeds where the method is above the baseline, of the n seeds both have (ties count for "
            "neither); over k/m runs: where some runs lack the figure.\n")
    return markdown_table(header, body) + note


__all__ = ["COMPARED", "versus", "versus_markdown"]
