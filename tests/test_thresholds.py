import numpy as np
import pytest

from aebnas.exits import confidence, exit_indices, simulate_exits, tune_thresholds


def test_confidence_metrics_by_hand():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]]))
    assert confidence(logits, "max_softmax") == pytest.approx([0.7, 1 / 3])
    assert confidence(logits, "margin") == pytest.approx([0.5, 0.0])
    h = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))
    assert confidence(logits, "entropy") == pytest.approx([1 - h / np.log(3), 0.0], abs=1e-9)
    with pytest.raises(ValueError, match="search.exit_metric"):
        confidence(logits, "vibes")


def test_simulated_exits_by_hand():
    # 3 exits (2 early), 4 samples
    conf = np.array([[0.95, 0.2, 0.6, 0.1],
                     [0.50, 0.9, 0.8, 0.3],
                     [0.00, 0.0, 0.0, 0.0]])
    correct = np.array([[1, 0, 0, 0],
                        [0, 1, 1, 0],
                        [1, 1, 1, 1]], dtype=bool)
    paths = [10.0, 30.0, 60.0]
    out = simulate_exits(conf, correct, [0.9, 0.7], paths)
    # sample0 leaves at exit0 (0.95>=0.9), sample1 at exit1 (0.9>=0.7), sample2 at exit1 (0.8), sample3 final
    assert out.exit_index.tolist() == [0, 1, 1, 2]
    assert out.exit_rates == (0.25, 0.5, 0.25)
    assert out.accuracy == 1.0
    assert out.expected_cost == pytest.approx(0.25 * 10 + 0.5 * 30 + 0.25 * 60)
    # thresholds of 1.0 send everything to the final exit except perfect confidence
    assert exit_indices(conf, [1.0, 1.0]).tolist() == [2, 2, 2, 2]


def test_tuning_picks_cheapest_within_the_accuracy_drop():
    rng = np.random.default_rng(0)
    n = 400
    conf = rng.random((3, n))
    # an early exit is right exactly when confident: thresholds >= 0.5 lose nothing
    correct = np.stack([conf[0] > 0.5, conf[1] > 0.5, np.ones(n, bool)])
    choices = [0.3, 0.5, 0.7, 0.9]
    paths = [1.0, 2.0, 10.0]
    thr = tune_thresholds(conf, correct, paths, choices, max_accuracy_drop=0.0)
    assert thr == (0.5, 0.5)  # lowest lossless thresholds let the most samples out early
    out = simulate_exits(conf, correct, thr, paths)
    assert out.accuracy == 1.0
    # allowing a big drop picks the most aggressive thresholds
    assert tune_thresholds(conf, correct, paths, choices, max_accuracy_drop=1.0) == (0.3, 0.3)
