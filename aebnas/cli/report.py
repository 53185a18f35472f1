"""``aebnas-report``: run directories in, paper tables (Markdown, LaTeX, CSV) and the fronts figure out.

    aebnas-report multirun/paper/2026-11-23_01-00-00            # every run below it
    aebnas-report runs/a runs/b --target-macs 4e7 --out report/
    aebnas-report multirun/methods_fashion_mnist/<timestamp> --versus edanas   # differences from EDANAS

The scoring rules are in ``aebnas.analysis.report``; this entry point only
parses arguments and writes files (atomically, so no half-written table is left).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aebnas.analysis.plots import plot_fronts
from aebnas.analysis.report import aggregate, collect, find_runs, fronts_by_dataset, to_latex, to_markdown
from aebnas.analysis.versus import versus, versus_markdown
from aebnas.cli.common import user_errors
from aebnas.search.archive import write_text_atomic
from aebnas.config_checks import ConfigError

PROG = "aebnas-report"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Aggregate aebnas run directories into per-method tables.")
    p.add_argument("run_dirs", nargs="+", help="run directories, or directories holding them (a multirun dir)")
    p.add_argument("--out", help="output directory (default: <first run dir>/report)")
    p.add_argument("--target-macs", type=float, help="target average MACs (default: each run's search.target_macs)")
    p.add_argument("--macs-ref", type=float, help="MACs of the hypervolume reference point (default: the largest "
                                                  "static network of the dataset's runs)")
    p.add_argument("--versus", metavar="METHOD", help="also tabulate every method's difference from this one "
                                                       "(standard error, seeds won): versus_<METHOD>.md/.csv")
    return p


def report(run_dirs: list[str], out: Path, target_macs: float | None = None, macs_ref: float | None = None,
           baseline: str | None = None) -> str:
    """Write summary.{md,tex,csv}, runs.csv and fronts.png (and versus_<baseline>.{md,csv} when a baseline
    method is given) under ``out``; returns the Markdown tables."""
    for name, value in (("--target-macs", target_macs), ("--macs-ref", macs_ref)):
        if value is not None and not value > 0:
            raise ConfigError(f"{name}: must be a positive number of MACs, got {value:g}")
    per_run, runs = collect(find_runs(run_dirs), target_macs, macs_ref)
    table = aggregate(per_run)
    differences = versus(per_run, baseline) if baseline else None  # a bad name fails before anything is written
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(table)
    if differences is not None:
        versus_md = versus_markdown(differences)
        write_text_atomic(out / f"versus_{baseline}.md", versus_md)
        write_text_atomic(out / f"versus_{baseline}.csv", differences.to_csv(index=False))
    write_text_atomic(out / "summary.md", markdown)
    write_text_atomic(out / "summary.tex", to_latex(table))
    write_text_atomic(out / "summary.csv", table.to_csv(index=False))
    write_text_atomic(out / "runs.csv", per_run.to_csv(index=False))
    targets = per_run.groupby("dataset")["target_macs"].first().to_dict()
    plot_fronts(fronts_by_dataset(per_run, runs), targets, out / "fronts.png")
    meta = {"runs": len(per_run), "reference_point": {"error": 1.0, "macs": per_run.groupby("dataset")["macs_ref"]
                                                       .first().to_dict()}}
    write_text_atomic(out / "report.json", json.dumps(meta, indent=2))
    return markdown if differences is None else f"{markdown}\n{versus_md}"


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    with user_errors(PROG):
        out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "report"
        markdown = report(args.run_dirs, out, args.target_macs, args.macs_ref, args.versus)
    try:
        print(markdown)
        print(f"tables and fronts.png written to {out}")
    except BrokenPipeError:  # piped into head: the files are written, nothing is lost
        sys.stderr.close()


if __name__ == "__main__":
    main(sys.argv[1:])
