"""experiments/bench_val_choice.py: a named point chosen on one set of logits and scored on another."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from aebnas.cost import NetworkCost
from aebnas.runtime.operating_points import compute_operating_points
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
bench = pytest.importorskip("bench_val_choice")

COST = NetworkCost(segment_macs=(100_000, 900_000), head_macs=(10_000, 10_000))  # static 1.01M, exit 0: 110k


def noisy_logits(n: int, accuracies: tuple[float, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two exits over 4 classes; each is right on about the given share of images, confident either way."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    logits = np.zeros((len(accuracies), n, 4))
    for k, acc in enumerate(accuracies):
        right = rng.random(n) < acc
        guess = np.where(right, labels, (labels + rng.integers(1, 4, n)) % 4)
        logits[k, np.arange(n), guess] = rng.uniform(1.0, 6.0, n)
    return logits, labels


def test_scored_on_the_set_it_was_chosen_on_it_agrees_with_the_operating_points():
    logits, labels = noisy_logits(2000, (0.8, 0.9), seed=0)
    points = compute_operating_points(logits, labels, COST)
    chosen = points.points[points.named["max_accuracy"]]
    scored = bench.score_choice(logits, labels, logits, labels, COST)
    assert scored["thresholds"] == list(chosen.thresholds)
    assert scored["loss_points"] == pytest.approx((points.reference_accuracy - chosen.val_accuracy) * 100)
    assert scored["fewer_macs"] == pytest.approx(COST.static_macs / chosen.expected_macs)


def test_an_early_exit_as_good_as_the_final_one_meets_both_targets_in_every_half():
    logits, labels = noisy_logits(1000, (1.0, 1.0), seed=1)
    result = bench.compare_val_sizes(logits[:, :400], labels[:400], logits[:, 400:], labels[400:], COST, halves=5)
    for name, summary in result["summary"].items():
        assert summary["meets_both"] == 5 and summary["loses_over_limit"] == 0
        assert summary["fewer_macs_median"] == pytest.approx(1_010_000 / 110_000)   # every image leaves at exit 0
        assert len(result["rows"][name]) == 5


def test_an_early_exit_far_worse_than_the_final_one_is_left_off():
    logits, labels = noisy_logits(3000, (0.5, 0.95), seed=2)
    result = bench.compare_val_sizes(logits[:, :1000], labels[:1000], logits[:, 1000:], labels[1000:], COST, halves=4)
    for summary in result["summary"].values():
        assert summary["saves_under_limit"] == 4 and summary["meets_both"] == 0


def test_the_halves_are_disjoint_and_cover_the_test_set():
    for lend, score in bench.split_test_set(601, 4, seed=5):
        assert len(lend) == 300 and len(score) == 301
        assert sorted(np.concatenate([lend, score])) == list(range(601))


def test_the_choice_sees_val_then_val_plus_one_half_and_is_scored_on_the_other(monkeypatch):
    logits, labels = noisy_logits(900, (0.8, 0.9), seed=3)
    val_logits, val_labels, test_logits, test_labels = logits[:, :300], labels[:300], logits[:, 300:], labels[300:]
    calls = []

    def spy(choose_logits, choose_labels, score_logits, score_labels, cost, point, metric):
        calls.append((choose_logits, choose_labels, score_logits, score_labels))
        return {"thresholds": [None], "loss_points": 0.0, "fewer_macs": 5.0}
    monkeypatch.setattr(bench, "score_choice", spy)
    bench.compare_val_sizes(val_logits, val_labels, test_logits, test_labels, COST, halves=3, seed=7)
    assert len(calls) == 6
    for k, (lend, score) in enumerate(bench.split_test_set(600, 3, seed=7)):
        on_val, on_wider = calls[2 * k], calls[2 * k + 1]
        assert np.array_equal(on_val[0], val_logits) and np.array_equal(on_val[1], val_labels)
        assert np.array_equal(on_wider[0], np.concatenate([val_logits, test_logits[:, lend]], axis=1))
        assert np.array_equal(on_wider[1], np.concatenate([val_labels, test_labels[lend]]))
        for call in (on_val, on_wider):
            assert np.array_equal(call[2], test_logits[:, score]) and np.array_equal(call[3], test_labels[score])


def test_a_val_split_that_flatters_the_early_exit_is_corrected_by_the_lent_half():
    # on val both exits are always right; on test the early exit is right half the time, the final one 90 %
    val_logits, val_labels = noisy_logits(1000, (1.0, 1.0), seed=4)
    test_logits, test_labels = noisy_logits(4000, (0.5, 0.9), seed=6)
    summary = bench.compare_val_sizes(val_logits, val_labels, test_logits, test_labels, COST, halves=3)["summary"]
    assert summary["val"]["loses_over_limit"] == 3            # val alone sends everything to the early exit
    assert 35 < summary["val"]["loss_points_median"] < 45      # measured against the final exit on the scored half
    assert summary["val_plus_half_test"]["loss_points_median"] < summary["val"]["loss_points_median"] - 10


def hand_outcomes(hits: list[list[int]], macs: list[float], final: list[int]) -> "bench.GridOutcomes":
    """Grid outcomes made by hand: one early exit, vector g at threshold 0.1 * (g + 1)."""
    g = len(hits)
    return bench.GridOutcomes(vectors=np.array([[0.1 * (k + 1)] for k in range(g)]), hits=np.array(hits, dtype=bool),
                              expected_macs=np.array(macs, dtype=float), exit_rates=np.zeros((g, 2)),
                              final_hits=np.array(final, dtype=bool))


def test_exit_gaps_are_paired_differences_with_their_standard_errors():
    labels = np.zeros(8, dtype=int)
    logits = np.zeros((2, 8, 2))
    logits[0, :, 0] = [1, 1, 1, 1, 1, 1, 0, 0]   # exit 0 right on 6 of 8: the last two lean to class 1
    logits[0, 6:, 1] = 1
    logits[1, :, 0] = 1                          # the final exit right on all 8
    gaps = bench.exit_gaps(logits, labels, logits[:, :4], labels[:4])
    assert len(gaps) == 1 and gaps[0]["early_exit"] == 1
    d = np.array([0, 0, 0, 0, 0, 0, -100, -100], dtype=float)
    assert gaps[0]["val"] == pytest.approx(-25.0) and gaps[0]["val_se"] == pytest.approx(d.std() / np.sqrt(8))
    assert gaps[0]["test"] == 0.0 and gaps[0]["test_se"] == 0.0      # the first four: both exits right
    assert gaps[0]["z_apart"] == pytest.approx(-25.0 / gaps[0]["val_se"])


def test_the_ceiling_is_the_least_loss_among_vectors_saving_enough():
    final = [1, 1, 1, 1]
    out = hand_outcomes([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], [200.0, 100.0, 500.0], final)
    rows = bench.ceiling(out, 1000.0, savings=(2.0, 5.0, 20.0))
    assert rows[0]["thresholds"] == [pytest.approx(0.3)] and rows[0]["loss_points"] == 0.0   # 2x: the 500-MACs one
    assert rows[1]["thresholds"] == [pytest.approx(0.1)] and rows[1]["loss_points"] == pytest.approx(25.0)
    assert rows[1]["fewer_macs"] == pytest.approx(5.0)
    assert rows[2]["thresholds"] is None                                                   # nothing saves 20x


def test_an_anchored_rule_asks_more_evidence_as_z_grows():
    n = 400
    final = np.ones(n, dtype=int)
    cheap = final.copy()
    cheap[:2] = 0                                # loses 0.5 points, paired SE about 0.35 points
    worse = final.copy()
    worse[:40] = 0                               # loses 10 points: never within the allowance below
    # listed out of cost order: the dearest first, so "the first qualifying" is not "the cheapest"
    out = hand_outcomes([list(final), list(cheap), list(worse)], [900.0, 100.0, 50.0], list(final))
    se = np.sqrt(2 / n * (1 - 2 / n)) / np.sqrt(n) * 100
    assert bench.anchored_choice(out, z=0.0, allowed_points=0.5) == 1
    assert bench.anchored_choice(out, z=1.0, allowed_points=0.5 + se + 0.01) == 1
    assert bench.anchored_choice(out, z=1.0, allowed_points=0.5 + se - 0.01) == 0


def test_an_anchored_rule_with_nothing_allowed_takes_the_cheapest_of_the_most_accurate():
    n = 100
    final = np.ones(n, dtype=int)
    lose_one, lose_two = final.copy(), final.copy()
    lose_one[:1] = 0
    lose_two[:2] = 0
    # vectors 1 and 2 tie on accuracy (both lose one image); vector 2 is cheaper; vector 0 is cheapest of all
    out = hand_outcomes([list(lose_two), list(lose_one), list(lose_one)], [10.0, 300.0, 200.0], list(final))
    assert bench.anchored_choice(out, z=0.0, allowed_points=0.5) == 2


def test_the_ceiling_takes_the_cheapest_of_equally_accurate_vectors():
    final = [1, 1, 1, 1]
    out = hand_outcomes([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]], [400.0, 250.0, 100.0], final)
    row = bench.ceiling(out, 1000.0, savings=(2.0,))[0]
    assert row["thresholds"] == [pytest.approx(0.2)] and row["fewer_macs"] == pytest.approx(4.0)


def test_rules_are_scored_only_on_the_same_grid():
    a = hand_outcomes([[1, 1], [1, 0]], [100.0, 50.0], [1, 1])
    b = hand_outcomes([[1, 1], [1, 0], [0, 0]], [100.0, 50.0, 10.0], [1, 1])
    with pytest.raises(ValueError, match="different threshold grids"):
        bench.anchored_rules(a, b, 1000.0)


def test_whole_test_figures_score_the_val_choices_on_the_test_set():
    val_logits, val_labels = noisy_logits(1500, (0.85, 0.9), seed=8)
    test_logits, test_labels = noisy_logits(2500, (0.8, 0.9), seed=9)
    figures = bench.whole_test_figures(val_logits, val_labels, test_logits, test_labels, COST)
    assert figures["named_point"] == bench.score_choice(val_logits, val_labels, test_logits, test_labels, COST)
    val = bench.grid_outcomes(val_logits, val_labels, COST)
    test = bench.grid_outcomes(test_logits, test_labels, COST)
    for rule in figures["anchored_rules"]:
        g = bench.anchored_choice(val, rule["z"], rule["allowed_points"])
        thr = [None if np.isinf(t) else t for t in val.vectors[g]]
        assert rule["thresholds"] == thr
        assert rule["loss_points"] == pytest.approx((test.final_hits.mean() - test.hits[g].mean()) * 100)
    fewer = COST.static_macs / test.expected_macs
    for row in figures["ceiling"]:
        reach = fewer >= row["at_least"]
        if not reach.any():
            assert row["thresholds"] is None
            continue
        least = (test.final_hits.mean() - test.accuracy[reach].max()) * 100
        assert row["loss_points"] == pytest.approx(least) and row["fewer_macs"] >= row["at_least"]
    assert [row["at_least"] for row in figures["ceiling"]] == list(bench.CEILING_SAVINGS)
    assert figures["exit_gaps"] == bench.exit_gaps(val_logits, val_labels, test_logits, test_labels)
    assert figures["exit_gaps"][0]["val"] != figures["exit_gaps"][0]["test"]
