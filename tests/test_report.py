"""aebnas-report on hand-made run directories: hand-computed figures, the three table formats, one-line errors."""

import json
import math

import pandas as pd
import pytest
import yaml

from aebnas.analysis.report import (ReportError, aggregate, collect, find_runs, to_latex, to_markdown,
                                    val_choice_test_accuracy)
from aebnas.analysis.versus import versus, versus_markdown
from aebnas.cli.report import main


def _run(root, name, method, seed, points, target=100.0, largest=200.0, pareto=()):
    """A run directory as aebnas-search writes it; points = (val_accuracy, expected_macs[, status]);
    pareto = (test_accuracy, test_expected_macs, val_accuracy, expected_macs)."""
    d = root / name
    d.mkdir(parents=True)
    config = {"dataset": {"name": "d"}, "seed": seed, "search": {"target_macs": target}, "method": {"name": method}}
    (d / "config.yaml").write_text(yaml.safe_dump(config))
    rows = [{"key": f"g{i}", "val_accuracy": p[0], "expected_macs": p[1], "static_macs": p[1],
             "status": p[2] if len(p) > 2 else "ok"} for i, p in enumerate(points)]
    pd.DataFrame(rows).to_csv(d / "evaluations.csv", index=False)
    pd.DataFrame(list(pareto), columns=["test_accuracy", "test_expected_macs", "val_accuracy", "expected_macs"]
                 ).to_csv(d / "pareto.csv", index=False)
    (d / "summary.json").write_text(json.dumps({"evaluations": len(points), "search_seconds": 10.0 * (seed + 1),
                                                "largest_static_macs": largest}))
    return d


@pytest.fixture()
def runs(tmp_path):
    root = tmp_path / "multirun"
    # front (error, MACs/200): (0.2, 0.25), (0.1, 0.5), (0.05, 0.75); (0.5, 120) is dominated, the failure ignored
    # Pareto set: best test at or below 100 test MACs is 0.85; chosen on val (0.92 twice at or below 100 val
    # MACs, the cheaper wins) it is the 0.83 network
    _run(root, "0", "aebnas", 0, [(0.9, 100), (0.8, 50), (0.95, 150), (0.5, 120), (0.0, 10, "failed")],
         pareto=[(0.85, 90, 0.92, 95), (0.97, 140, 0.95, 150), (0.83, 60, 0.92, 70)])
    _run(root, "1", "aebnas", 1, [(0.7, 80)], pareto=[(0.75, 80, 0.7, 80)])
    _run(root, "2", "edanas", 0, [(0.6, 300)])  # beyond the reference point: no area, nothing under the target
    return root


def test_figures_are_the_hand_computed_ones(runs):
    per_run, _ = collect(find_runs([runs]))
    a0, a1, e0 = (per_run.set_index(["method", "seed"]).loc[k] for k in [("aebnas", 0), ("aebnas", 1), ("edanas", 0)])
    # 0.95 * 0.25 + 0.9 * 0.25 + 0.8 * 0.25
    assert a0["hypervolume"] == pytest.approx(0.6625)
    assert a1["hypervolume"] == pytest.approx(0.7 * 0.6)
    assert e0["hypervolume"] == 0.0
    assert (a0["val_accuracy_at_target"], a0["test_accuracy_at_target"], a0["test_accuracy_of_val_choice"]) == \
        (0.9, 0.85, 0.83)
    assert (a1["val_accuracy_at_target"], a1["test_accuracy_at_target"], a1["test_accuracy_of_val_choice"]) == \
        (0.7, 0.75, 0.75)
    assert all(math.isnan(e0[c]) for c in ["val_accuracy_at_target", "test_accuracy_at_target",
                                          "test_accuracy_of_val_choice"])
    assert a0["failed"] == 1 and a0["evaluations"] == 5

    table = aggregate(per_run)
    assert list(table["method"]) == ["aebnas", "edanas"] and list(table["seeds"]) == [2, 1]
    row = table.iloc[0]
    assert row["val_accuracy_at_target_mean"] == pytest.approx(0.8)
    assert row["val_accuracy_at_target_std"] == pytest.approx(math.sqrt(0.02))  # sample std of 0.9 and 0.7
    assert row["hypervolume_mean"] == pytest.approx((0.6625 + 0.42) / 2)
    assert row["search_seconds_mean"] == 15.0

    md = to_markdown(table).splitlines()
    assert md[0].startswith("| dataset | method | search | seeds | target MACs | val acc @ target |")
    assert md[2] == ("| d | aebnas | nsga2 | 2 | 100 | 0.8000 ± 0.1414 | 0.8000 ± 0.0707 | 0.7900 ± 0.0566 | 0.5413 ± 0.1715 "
                     "| 3 ± 3 | 15 ± 7 |")
    assert md[3] == "| d | edanas | nsga2 | 1 | 100 | - | - | - | 0.0000 | 1 | 10 |"
    tex = to_latex(table)
    assert r"0.8000 $\pm$ 0.1414" in tex and r"\begin{tabular}{lllrrrrrrrr}" in tex and "val acc @ target" in tex


def test_cli_writes_every_format_and_a_figure(runs, tmp_path, capsys):
    main([str(runs), "--out", str(tmp_path / "rep"), "--target-macs", "50"])
    out = tmp_path / "rep"
    assert {p.name for p in out.iterdir()} == {"summary.md", "summary.tex", "summary.csv", "runs.csv", "fronts.png",
                                               "report.json"}
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[0, "val_accuracy_at_target_mean"] == pytest.approx(0.8)  # 0.8 at 50 MACs; seed 1 has none
    assert (out / "fronts.png").stat().st_size > 10_000
    assert json.loads((out / "report.json").read_text())["reference_point"] == {"error": 1.0, "macs": {"d": 200.0}}
    assert "| d | aebnas | nsga2 | 2 | 50 | 0.8000 (1/2 seeds) | - | - | 0.5413" in capsys.readouterr().out


@pytest.mark.parametrize("setup, fragment", [
    (lambda root: root.mkdir(), "no run directory (evaluations.csv) under"),
    (lambda root: None, "is not a directory"),
    (lambda root: (root.mkdir(), (root / "evaluations.csv").write_text("a,b\n1,2\n")), "has no config.yaml"),
    (lambda root: _run(root, "x", "aebnas", 0, [(0.5, 10)], target=None), "pass --target-macs"),
])
def test_empty_or_foreign_directories_get_one_line(tmp_path, capsys, setup, fragment):
    root = tmp_path / "runs"
    setup(root)
    with pytest.raises(SystemExit) as info:
        main([str(root)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aebnas-report: error: ") and fragment in err[0]


def test_runs_with_different_targets_are_refused(tmp_path):
    _run(tmp_path, "a", "aebnas", 0, [(0.5, 10)], target=100.0)
    _run(tmp_path, "b", "edanas", 0, [(0.5, 10)], target=50.0)
    with pytest.raises(ReportError, match="the d runs differ"):
        collect(find_runs([tmp_path]))


def test_val_choice_needs_validation_figures_in_the_pareto_set():
    """pareto.csv files written before they carried val figures give no choice rather than a test-picked one."""
    old = pd.DataFrame({"test_accuracy": [0.9], "test_expected_macs": [10.0]})
    assert math.isnan(val_choice_test_accuracy(old, 100.0))
    new = old.assign(val_accuracy=[0.8], expected_macs=[120.0])
    assert math.isnan(val_choice_test_accuracy(new, 100.0))  # over the target on val, though under it on test
    assert val_choice_test_accuracy(new, 120.0) == 0.9


def _per_run(method, seeds, val, hv):
    return pd.DataFrame({"dataset": "d", "method": method, "seed": seeds, "val_accuracy_at_target": val,
                         "test_accuracy_of_val_choice": float("nan"), "test_accuracy_at_target": val,
                         "hypervolume": hv})


def test_versus_gives_the_hand_computed_difference_errors_and_wins():
    # aebnas val 0.80 / 0.84 / 0.82 (mean 0.82, s^2 4e-4), edanas 0.78 / 0.80 / 0.82 (mean 0.80, s^2 4e-4):
    # difference +0.02, Welch SE sqrt(4e-4/3 + 4e-4/3) = 0.016330; per seed +0.02 / +0.04 / 0 (sd 0.02), paired
    # SE 0.02/sqrt(3) = 0.011547; seed 2 ties, so 2 of 3 seeds won
    per_run = pd.concat([_per_run("edanas", [0, 1, 2], [0.78, 0.80, 0.82], [0.6, 0.6, 0.6]),
                         _per_run("aebnas", [2, 0, 1], [0.82, 0.80, 0.84], [0.5, 0.7, 0.5]),
                         _per_run("random", [0], [0.70], [0.3])], ignore_index=True)
    table = versus(per_run, "edanas").set_index("method")
    assert list(table.index) == ["aebnas", "random"]  # paper order, the baseline left out
    a = table.loc["aebnas"]
    assert a["val_accuracy_at_target_diff"] == pytest.approx(0.02)
    assert a["val_accuracy_at_target_se"] == pytest.approx(math.sqrt(8e-4 / 3))
    assert a["val_accuracy_at_target_paired_se"] == pytest.approx(0.02 / math.sqrt(3))
    assert (a["val_accuracy_at_target_won"], a["val_accuracy_at_target_paired"]) == (2, 3)
    # p, by the closed forms of Student's t: Welch t = 0.02 / 0.016330 = 1.2247 on (equal variances, 3 + 3
    # runs) 4 degrees of freedom, where P(|T| < t) = x (1 + (1 - x^2) / 2), x = t / sqrt(t^2 + 4);
    # paired t = 0.02 / 0.011547 = 1.7321 on 2, where P(|T| < t) = t / sqrt(t^2 + 2)
    t = 0.02 / math.sqrt(8e-4 / 3)
    x = t / math.sqrt(t * t + 4)
    assert a["val_accuracy_at_target_p"] == pytest.approx(1 - x * (1 + (1 - x * x) / 2))  # 0.2879
    assert a["val_accuracy_at_target_paired_p"] == pytest.approx(1 - math.sqrt(3) / math.sqrt(5))  # 0.2254
    # hypervolume 0.7 / 0.5 / 0.5 by seed 0 / 1 / 2 against 0.6 each: -0.0333, one seed won;
    # per seed +0.1 / -0.1 / -0.1: sd sqrt((0.1333^2 + 2 * 0.0667^2) / 2) = 0.11547, paired SE 0.066667
    assert a["hypervolume_diff"] == pytest.approx(-0.1 / 3)
    assert a["hypervolume_se"] == pytest.approx(math.sqrt(((0.7 - 17 / 30) ** 2 + 2 * (0.5 - 17 / 30) ** 2) / 2 / 3))
    assert a["hypervolume_paired_se"] == pytest.approx(0.2 / 3)
    assert a["hypervolume_won"] == 1
    # edanas's hypervolumes do not vary, so Welch has 2 degrees of freedom, like the paired test: t = 0.5 in
    # both, p = 1 - 0.5 / sqrt(0.25 + 2) = 2/3
    assert a["hypervolume_p"] == pytest.approx(2 / 3) and a["hypervolume_paired_p"] == pytest.approx(2 / 3)
    assert math.isnan(a["test_accuracy_of_val_choice_diff"]) and a["test_accuracy_of_val_choice_paired"] == 0
    r = table.loc["random"]  # one seed: a difference but no standard error
    assert r["val_accuracy_at_target_diff"] == pytest.approx(-0.1) and math.isnan(r["val_accuracy_at_target_se"])
    md = versus_markdown(versus(per_run, "edanas"))
    assert ("| d | aebnas | edanas | 3/3 | +0.0200 ± 0.0163, p 0.29 (paired ± 0.0115, p 0.23; 2/3) | +0.0200 ± "
            "0.0163, p 0.29 (paired ± 0.0115, p 0.23; 2/3) | - | -0.0333 ± 0.0667, p 0.67 (paired ± 0.0667, "
            "p 0.67; 1/3) |") in md
    assert "| d | random | edanas | 1/3 | -0.1000 (0/1) |" in md


def test_versus_pairs_only_what_pairs():
    edanas = _per_run("edanas", [0, 1, 2], [0.80, 0.80, 0.81], [0.6, 0.6, 0.6])
    # a missing figure: the difference is over the runs that have it, no paired error, the count says so
    gap = pd.concat([edanas, _per_run("aebnas", [0, 1, 2], [0.9, float("nan"), 0.7], [0.6, 0.6, 0.6])])
    row = versus(gap, "edanas").iloc[0]
    assert row["val_accuracy_at_target_diff"] == pytest.approx(0.8 - 2.41 / 3)
    assert math.isnan(row["val_accuracy_at_target_paired_se"]) and row["val_accuracy_at_target_paired"] == 2
    assert "(1/2; over 2/3 runs)" in versus_markdown(versus(gap, "edanas"))
    # a seed run twice: no pairs, and the table says why
    twice = pd.concat([edanas, _per_run("aebnas", [0, 0], [0.82, 0.84], [0.5, 0.7])])
    row = versus(twice, "edanas").iloc[0]
    assert row["val_accuracy_at_target_diff"] == pytest.approx(0.83 - 2.41 / 3)
    assert row["val_accuracy_at_target_paired"] == 0
    assert "(a seed repeated: no pairs)" in versus_markdown(versus(twice, "edanas"))
    # no spread on either side: a standard error of 0 and no test to run
    flat = pd.concat([edanas, _per_run("aebnas", [0, 1, 2], [0.80, 0.80, 0.81], [0.6, 0.6, 0.6])])
    row = versus(flat, "edanas").iloc[0]
    assert row["val_accuracy_at_target_se"] > 0 and row["val_accuracy_at_target_paired_se"] == 0
    assert math.isnan(row["val_accuracy_at_target_paired_p"])
    assert "+0.0000 ± 0.0047, p 1.00 (paired ± 0.0000; 0/3) |" in versus_markdown(versus(flat, "edanas"))
    # runs without a seed never pair with each other
    unseeded = pd.concat([_per_run("edanas", [None], [0.80], [0.6]), _per_run("aebnas", [None], [0.82], [0.5])])
    row = versus(unseeded, "edanas").iloc[0]
    assert row["val_accuracy_at_target_diff"] == pytest.approx(0.02) and row["val_accuracy_at_target_paired"] == 0


def test_cli_versus_writes_the_differences_and_refuses_an_absent_baseline(runs, tmp_path, capsys):
    main([str(runs), "--out", str(tmp_path / "rep"), "--target-macs", "50", "--versus", "edanas"])
    out = tmp_path / "rep"
    assert {"versus_edanas.md", "versus_edanas.csv"} <= {p.name for p in out.iterdir()}
    # hypervolume: aebnas 0.6625 (seed 0) and 0.42 (seed 1), edanas 0 (its one point is past the reference)
    assert "| d | aebnas | edanas | 2/1 | - | - | - | +0.5413 (1/1) |" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main([str(runs), "--out", str(tmp_path / "rep2"), "--versus", "nachos"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--versus: no run of method 'nachos' on d; its methods are aebnas, edanas" in err
    assert not (tmp_path / "rep2").exists()  # nothing half-written


def test_pareto_utilities_by_hand():
    """pymoo's sorting and hypervolume, on a staircase whose area is summed by hand; duplicates both stay."""
    import numpy as np

    from aebnas.analysis import hypervolume_2d, non_dominated_mask

    F = np.array([[0.2, 0.25], [0.1, 0.5], [0.05, 0.75], [0.5, 0.6], [0.1, 0.5], [1.2, 0.1]])
    assert non_dominated_mask(F).tolist() == [True, True, True, False, True, True]
    # horizontal strips 0.25 high from y = 0.25 up: (1 - 0.2) + (1 - 0.1) + (1 - 0.05); the point beyond the
    # reference and the dominated one add nothing
    assert abs(hypervolume_2d(F, (1.0, 1.0)) - 0.25 * (0.8 + 0.9 + 0.95)) < 1e-12
    assert hypervolume_2d(np.empty((0, 2)), (1.0, 1.0)) == 0.0 and not non_dominated_mask(np.empty((0, 2))).size
