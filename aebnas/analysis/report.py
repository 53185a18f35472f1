"""Paper tables from run directories: per method and dataset, mean +- std over seeds.

Every method is scored from the same files by the same rules, whatever its
objective was: the networks it evaluated (``evaluations.csv``, successful
candidates), their validation accuracy and expected MACs.

* accuracy at target: the best validation accuracy among candidates whose
  expected MACs are at or below the dataset's target average MACs; the test
  column is the best test accuracy among the run's Pareto networks
  (``pareto.csv``) at or below the target on test. Picking by test makes that
  column an upper bound that grows with the Pareto set's size, so a second
  test column scores the network a user would ship without looking at test:
  the Pareto network with the best validation accuracy among those at or below
  the target on validation (ties: the cheaper), and its test accuracy;
* hypervolume of the (error, expected MACs / reference MACs) front against the
  fixed point (1, 1); the reference MACs are the largest static network of the
  space (``summary.json``), the largest over a dataset's runs unless given, so
  all methods on a dataset share one reference point;
* evaluations and search wall time from ``summary.json``.

Reads files only (no torch).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from aebnas.analysis.pareto import hypervolume_2d, non_dominated_mask
from aebnas.analysis.run import Run, load_run
from aebnas.config_checks import ConfigError

METHOD_ORDER = ("aebnas", "edanas", "nachos", "static", "random", "manual")
METRICS = ("val_accuracy_at_target", "test_accuracy_at_target", "test_accuracy_of_val_choice", "hypervolume",
           "evaluations", "search_seconds")
HEADERS = {
    "val_accuracy_at_target": "val acc @ target",
    "test_accuracy_at_target": "test acc @ target (Pareto set)",
    "test_accuracy_of_val_choice": "test acc of val choice @ target",
    "hypervolume": "hypervolume",
    "evaluations": "evaluations",
    "search_seconds": "search time (s)",
}
DIGITS = {"val_accuracy_at_target": 4, "test_accuracy_at_target": 4, "test_accuracy_of_val_choice": 4,
          "hypervolume": 4, "evaluations": 0, "search_seconds": 0}
REQUIRED_COLUMNS = ("val_accuracy", "expected_macs", "status")


class ReportError(ConfigError):
    """The directories given hold nothing a report can be made of; the message says what to pass instead."""


def find_runs(roots: Iterable[str | Path]) -> list[Path]:
    """Run directories (those holding ``evaluations.csv``) at or below each root, sorted."""
    found: list[Path] = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise ReportError(f"run dirs: '{root}' is not a directory; pass run directories or a multirun directory")
        runs = sorted({p.parent for p in root.rglob("evaluations.csv")})
        if not runs:
            raise ReportError(f"run dirs: no run directory (evaluations.csv) under '{root}'; pass a directory "
                              "aebnas-search wrote, e.g. multirun/<run_name>/<timestamp>")
        found += runs
    return found


def method_of(run: Run) -> str:
    """The method a run used (conf/method/); runs from before methods existed were AEBNAS."""
    method = run.config.get("method")
    if isinstance(method, dict) and method.get("name"):
        return str(method["name"])
    return str(run.summary.get("method") or "aebnas")


def search_of(run: Run) -> str:
    """How a run proposed candidates (search.algorithm: msunas, nsga2, random, manual); nsga2 for runs from
    before the setting was recorded."""
    search = run.config.get("search")
    if isinstance(search, dict) and search.get("algorithm"):
        return str(search["algorithm"])
    return str(run.summary.get("algorithm") or "nsga2")


def front_points(evaluations: pd.DataFrame) -> pd.DataFrame:
    """Successful candidates not dominated in (val error, expected MACs), cheapest first."""
    ok = evaluations[evaluations["status"] == "ok"]
    if ok.empty:
        return ok
    F = np.column_stack([1.0 - ok["val_accuracy"].to_numpy(float), ok["expected_macs"].to_numpy(float)])
    return ok[non_dominated_mask(F)].sort_values(["expected_macs", "val_accuracy"])


def run_row(run: Run, target_macs: float | None, macs_ref: float) -> dict:
    """One run's figures (one line of the per-run table)."""
    ev = run.evaluations
    ok = ev[ev["status"] == "ok"]
    front = front_points(ev)
    pts = np.column_stack([1.0 - front["val_accuracy"].to_numpy(float),
                           front["expected_macs"].to_numpy(float) / macs_ref]) if len(front) else np.zeros((0, 2))
    row = {
        "dataset": run.config["dataset"]["name"],
        "method": method_of(run),
        "search": search_of(run),
        "seed": run.config.get("seed"),
        "target_macs": target_macs,
        "macs_ref": macs_ref,
        "val_accuracy_at_target": float("nan"),
        "test_accuracy_at_target": float("nan"),
        "test_accuracy_of_val_choice": float("nan"),
        "hypervolume": hypervolume_2d(pts, (1.0, 1.0)),
        "evaluations": int(run.summary.get("evaluations", len(ev))),
        "failed": int((ev["status"] != "ok").sum()),
        "search_seconds": float(run.summary.get("search_seconds", float("nan"))),
        "run_dir": str(run.path),
    }
    if target_macs is not None:
        under = ok[ok["expected_macs"] <= target_macs]
        if len(under):
            row["val_accuracy_at_target"] = float(under["val_accuracy"].max())
        p = run.pareto
        if len(p) and "test_expected_macs" in p.columns:
            p_under = p[p["test_expected_macs"] <= target_macs]
            if len(p_under):
                row["test_accuracy_at_target"] = float(p_under["test_accuracy"].max())
        row["test_accuracy_of_val_choice"] = val_choice_test_accuracy(p, target_macs)
    return row


def val_choice_test_accuracy(pareto: pd.DataFrame, target_macs: float) -> float:
    """Test accuracy of the Pareto network chosen on validation alone; NaN if none is at or below the target.

    Runs written before ``pareto.csv`` carried validation figures have none to choose by, and get NaN.
    """
    if not {"val_accuracy", "expected_macs", "test_accuracy"} <= set(pareto.columns):
        return float("nan")
    under = pareto[pareto["expected_macs"] <= target_macs]
    if under.empty:
        return float("nan")
    chosen = under.sort_values(["val_accuracy", "expected_macs"], ascending=[False, True]).iloc[0]
    return float(chosen["test_accuracy"])


def _check_run(run: Run) -> None:
    dataset = run.config.get("dataset")
    if not isinstance(dataset, dict) or "name" not in dataset:
        raise ReportError(f"run dir: '{run.path}' has no config.yaml with dataset.name; it was not written by "
                          "aebnas-search")
    missing = [c for c in REQUIRED_COLUMNS if c not in run.evaluations.columns]
    if missing:
        raise ReportError(f"run dir: '{run.path / 'evaluations.csv'}' lacks columns {missing}; it was not written "
                          "by aebnas-search")


def collect(run_dirs: Sequence[str | Path], target_macs: float | None = None,
            macs_ref: float | None = None) -> tuple[pd.DataFrame, dict[str, Run]]:
    """Per-run table (one row per run directory) and the loaded runs by directory."""
    runs = [load_run(d) for d in run_dirs]
    for run in runs:
        _check_run(run)
    refs: dict[str, float] = {}
    targets: dict[str, float | None] = {}
    for run in runs:
        name = run.config["dataset"]["name"]
        largest = float(run.summary.get("largest_static_macs") or run.evaluations["static_macs"].max())
        refs[name] = max(refs.get(name, 0.0), largest)
        target = target_macs if target_macs is not None else run.config.get("search", {}).get("target_macs")
        if target is not None and targets.get(name) not in (None, float(target)):
            raise ReportError(f"search.target_macs: the {name} runs differ ({targets[name]:g} vs {float(target):g}); "
                              "pass --target-macs to compare them at one target")
        targets[name] = float(target) if target is not None else targets.get(name)
    for name, target in targets.items():
        if target is None:
            raise ReportError(f"search.target_macs: the {name} runs set no target average MACs; pass --target-macs")
    rows = [run_row(run, targets[run.config["dataset"]["name"]],
                    macs_ref or refs[run.config["dataset"]["name"]]) for run in runs]
    return pd.DataFrame(rows), {str(r.path): r for r in runs}


def method_key(method: str) -> tuple[int, str]:
    """Sort key putting the paper's methods in METHOD_ORDER, then any other name alphabetically."""
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def aggregate(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std over seeds per (dataset, method, search); std is NaN for a single seed.

    A seed with no candidate at or below the target has no accuracy there; the
    ``*_seeds`` columns count the seeds a mean is taken over.
    """
    groups = per_run.groupby(["dataset", "method", "search"], sort=False)
    table = groups[list(METRICS)].agg(["mean", "std", "count"])
    table.columns = [f"{m}_{'seeds' if stat == 'count' else stat}" for m, stat in table.columns]
    table.insert(0, "seeds", groups.size())
    table.insert(1, "target_macs", groups["target_macs"].first())
    table = table.reset_index()
    order = sorted(range(len(table)), key=lambda i: (table.loc[i, "dataset"], method_key(table.loc[i, "method"])))
    return table.iloc[order].reset_index(drop=True)


def _cell(mean: float, std: float, digits: int, pm: str, seeds: int, of: int) -> str:
    if math.isnan(mean):
        return "-"
    text = f"{mean:.{digits}f}"
    text = text if math.isnan(std) else f"{text} {pm} {std:.{digits}f}"
    return text if seeds == of else f"{text} ({seeds}/{of} seeds)"


def _display(table: pd.DataFrame, pm: str) -> tuple[list[str], list[list[str]]]:
    header = ["dataset", "method", "search", "seeds", "target MACs"] + [HEADERS[m] for m in METRICS]
    body = []
    for _, r in table.iterrows():
        cells = [str(r["dataset"]), str(r["method"]), str(r["search"]), str(int(r["seeds"])),
                 f"{r['target_macs']:.3g}"]
        cells += [_cell(r[f"{m}_mean"], r[f"{m}_std"], DIGITS[m], pm, int(r[f"{m}_seeds"]), int(r["seeds"]))
                  for m in METRICS]
        body.append(cells)
    return header, body


def markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    """A GitHub Markdown table of ready-made cells, one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def to_markdown(table: pd.DataFrame) -> str:
    return markdown_table(*_display(table, "±"))


def to_latex(table: pd.DataFrame) -> str:
    """A booktabs tabular (pandas' Styler writes and escapes it); ± becomes ``$\\pm$`` after escaping."""
    header, body = _display(table, "±")
    styler = pd.DataFrame(body, columns=header).style.hide(axis="index")
    styler = styler.format(escape="latex").format_index(escape="latex", axis=1)
    tex = styler.to_latex(column_format="lll" + "r" * (len(header) - 3), hrules=True)
    return tex.replace("±", r"$\pm$")


def fronts_by_dataset(per_run: pd.DataFrame, runs: dict[str, Run]) -> dict[str, dict[str, pd.DataFrame]]:
    """Each method's front over its runs' candidates pooled across seeds, per dataset, methods in table order;
    a method run with more than one search gets one front per search, labelled ``method (search)``."""
    out: dict[str, dict[str, pd.DataFrame]] = {}
    searches = per_run.groupby(["dataset", "method"])["search"].nunique()
    for (dataset, method, search), group in sorted(per_run.groupby(["dataset", "method", "search"]),
                                                   key=lambda kv: (kv[0][0], method_key(kv[0][1]), kv[0][2])):
        pooled = pd.concat([runs[d].evaluations for d in group["run_dir"]], ignore_index=True)
        label = method if searches[(dataset, method)] == 1 else f"{method} ({search})"
        out.setdefault(dataset, {})[label] = front_points(pooled)
    return out
