"""Adaptive runtime: compaction is exact, batch 1 agrees, operating points by hand, export round-trips, the CLI."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from aebnas.cost import NetworkCost
from aebnas.nn import build_model
from aebnas.runtime import (AdaptiveModel, OperatingPointError, OperatingPoints, compute_operating_points,
                            reference_exits)
from aebnas.runtime.operating_points import (NAMES, OperatingPoint, binomial_se, bounded_loss_point, grid_outcomes,
                                             name_points,
                                             paired_standard_errors, path_costs_with)
from aebnas.config_checks import ConfigError
from aebnas.exits import METRICS, confidence

from tests.conftest import ROOT


def _random_net(space, seed, num_classes=5, in_channels=1):
    genome = space.sample(np.random.default_rng(seed))
    torch.manual_seed(seed)
    net = build_model(genome, num_classes, in_channels)
    for m in net.modules():  # spread the BatchNorm statistics so exits disagree and confidences vary
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _spread_thresholds(net, x, metric, rng):
    """Random thresholds inside each exit's own confidence range (so every exit takes some samples), one
    exit in three switched off. Each sits halfway between two samples' confidences: a sample exactly on
    a threshold could flip on the last float bit when batch composition changes the conv arithmetic."""
    with torch.no_grad():
        conf = confidence(torch.stack(net(x)).numpy(), metric)
    out = []
    for k in range(net.n_exits - 1):
        c = np.sort(conf[k])
        i = int(rng.integers(len(c) // 4, len(c) - 1))
        out.append(None if rng.random() < 0.3 else float((c[i] + c[i + 1]) / 2))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_compaction_gives_exactly_the_all_exits_rule(tiny_space, seed):
    rng = np.random.default_rng(100 + seed)
    net = _random_net(tiny_space, seed)
    x = torch.randn(97, 1, 12, 12, generator=torch.Generator().manual_seed(seed))
    metric = METRICS[seed % len(METRICS)]
    thresholds = _spread_thresholds(net, x, metric, rng)
    out = AdaptiveModel(net, thresholds, metric)(x)
    ref = reference_exits(net, x, thresholds, metric)
    assert torch.equal(out.exit_index, ref.exit_index)
    assert torch.equal(out.prediction, ref.prediction)
    assert len(set(ref.exit_index.tolist())) >= 2  # the test exercises compaction, not only the final exit


def test_batch_of_one_path_equals_the_batched_path(tiny_space):
    net = _random_net(tiny_space, 7)
    x = torch.randn(40, 1, 12, 12, generator=torch.Generator().manual_seed(7))
    model = AdaptiveModel(net, _spread_thresholds(net, x, "margin", np.random.default_rng(7)), "margin")
    batched = model(x)
    one_by_one = [model(x[i:i + 1]) for i in range(len(x))]
    assert torch.equal(torch.cat([o.prediction for o in one_by_one]), batched.prediction)
    assert torch.equal(torch.cat([o.exit_index for o in one_by_one]), batched.exit_index)


def test_all_exits_off_is_the_static_network(tiny_space):
    net = _random_net(tiny_space, 3)
    x = torch.randn(16, 1, 12, 12)
    out = AdaptiveModel(net, [None] * (net.n_exits - 1))(x)
    with torch.no_grad():
        assert torch.equal(out.prediction, net.forward_static(x).argmax(-1))
    assert (out.exit_index == net.n_exits - 1).all()


# Hand-built: 1 early exit + final, 2 classes, label 0 for all four samples.
# early-exit confidences 0.95 (right), 0.7 (right), 0.7 (wrong), 0.55 (wrong); the final exit is always right.
# Costs: segments (10, 90), heads (5, 10): leaving early costs 15, at the final exit 115 (110 with the exit off).
HAND_COST = NetworkCost(segment_macs=(10, 90), head_macs=(5, 10))


def _logit(p):
    return math.log(p / (1 - p))


HAND_LOGITS = np.array([
    [[_logit(0.95), 0.0], [_logit(0.7), 0.0], [0.0, _logit(0.7)], [0.0, _logit(0.55)]],
    [[3.0, 0.0], [3.0, 0.0], [3.0, 0.0], [3.0, 0.0]],
])
HAND_LABELS = np.zeros(4, dtype=int)


@pytest.fixture
def hand_points():
    return compute_operating_points(HAND_LOGITS, HAND_LABELS, HAND_COST, "max_softmax", grid=(0.6, 0.9),
                                    named_drops={"max_accuracy": 0.5, "balanced": 1.0, "min_energy": 1.2})


def test_path_costs_leave_out_heads_of_exits_that_are_off():
    assert path_costs_with(HAND_COST, [True]).tolist() == [15, 115]
    assert path_costs_with(HAND_COST, [False]).tolist() == [10, 110]


def test_operating_points_by_hand(hand_points):
    # threshold 0.6: samples 0, 1, 2 leave early (2 is wrong), 3 goes on: acc 3/4, cost .75*15 + .25*115 = 40
    # threshold 0.9: only sample 0 leaves: acc 1, cost .25*15 + .75*115 = 90
    # off: acc 1, cost 110 (no early head), dominated by 0.9
    got = [(p.thresholds, p.val_accuracy, p.expected_macs, p.exit_rates) for p in hand_points.points]
    assert got == [((0.6,), 0.75, 40.0, (0.75, 0.25)), ((0.9,), 1.0, 90.0, (0.25, 0.75))]
    assert hand_points.reference_accuracy == 1.0 and hand_points.static_macs == 110
    # standard errors on 4 images: binomial sqrt(.75 * .25 / 4); vs the best point (0.9), the two disagree on
    # sample 2 only: sd([0, 0, 1, 0]) / sqrt(4) = sqrt(3) / 8. The 0.25 drop is 1.155 SE: min_energy (1.2 SE)
    # takes the cheap point, balanced (1 SE) and max_accuracy (0.5 SE) do not.
    cheap, best = hand_points.points
    assert cheap.val_accuracy_se == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert cheap.se_vs_best == pytest.approx(math.sqrt(3) / 8) and best.se_vs_best == 0.0
    # against the final exit (right on all four): the same single disagreement for the cheap point
    assert cheap.se_vs_reference == pytest.approx(math.sqrt(3) / 8) and best.se_vs_reference == 0.0
    assert best.val_accuracy_se == 0.0 and hand_points.n_val == 4
    assert hand_points.by_name("max_accuracy").thresholds == (0.9,)
    assert hand_points.by_name("balanced").thresholds == (0.9,)
    assert hand_points.by_name("min_energy").thresholds == (0.6,)
    # bounded_loss: the cheap point loses 25 points against the final exit, far over the 0.5 allowed
    assert hand_points.by_name("bounded_loss").thresholds == (0.9,)
    assert hand_points.loss_bound == {"points": 0.5, "z": 1.0}
    assert hand_points.by_accuracy_floor(0.8).thresholds == (0.9,)
    assert hand_points.by_accuracy_floor(0.75).thresholds == (0.6,)
    assert hand_points.by_budget(50).thresholds == (0.6,)
    assert hand_points.by_budget(90).thresholds == (0.9,)


def test_grid_outcomes_cover_every_vector_with_the_off_switch_included():
    out = grid_outcomes(HAND_LOGITS, HAND_LABELS, HAND_COST, "max_softmax", grid=(0.9, 0.6))
    assert out.vectors[:, 0].tolist() == [0.6, 0.9, math.inf]           # sorted, then off
    assert out.hits.tolist() == [[True, True, False, True], [True] * 4, [True] * 4]
    assert out.expected_macs.tolist() == [40.0, 90.0, 110.0]
    assert out.exit_rates.tolist() == [[0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]
    assert out.final_hits.all() and out.accuracy.tolist() == [0.75, 1.0, 1.0]


def test_the_val_loss_error_is_paired_with_the_final_exit_not_the_best_point():
    # the hand example with the final exit wrong on sample 0, where the early exit is right at 0.95
    logits = HAND_LOGITS.copy()
    logits[1, 0] = [0.0, 3.0]
    pts = compute_operating_points(logits, HAND_LABELS, HAND_COST, "max_softmax", grid=(0.6, 0.9))
    by_thr = {p.thresholds: p for p in pts.points}
    assert pts.reference_accuracy == 0.75 and by_thr[(0.9,)].val_accuracy == 1.0   # the best point beats the final
    # 0.9 differs from the final exit on sample 0 only; 0.6 on samples 0 and 2: sd([-1, 0, 1, 0]) / 2
    assert by_thr[(0.9,)].se_vs_reference == pytest.approx(math.sqrt(3) / 8) and by_thr[(0.9,)].se_vs_best == 0.0
    assert by_thr[(0.6,)].se_vs_reference == pytest.approx(math.sqrt(2) / 4)


@pytest.mark.parametrize("request_, fragment", [
    ({"name": "turbo"}, "operating_point: 'turbo' is not defined for this network"),
    ({"min_accuracy": 1.01}, "min_accuracy: 1.01 is above the best val accuracy 1.0000; its 2 points reach val "
                             "accuracy 0.7500..1.0000 at 40..90 expected MACs"),
    ({"max_macs": 30}, "max_macs: 30 is below the cheapest point (40 expected MACs); its 2 points reach"),
    ({"name": "balanced", "max_macs": 30}, "give exactly one of"),
])
def test_impossible_operating_points_are_refused_in_one_line(hand_points, request_, fragment):
    with pytest.raises(OperatingPointError, match=".*") as info:
        hand_points.select(**request_)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def _point(acc, macs, se_vs_best):
    return OperatingPoint((0.5,), acc, macs, (0.5, 0.5), binomial_se(acc, 5000), se_vs_best)


def test_named_points_are_the_cheapest_within_k_standard_errors_of_the_best():
    """Hand-made points, cheapest first. Best 0.9200. A point 0.0020 under it with a paired SE of 0.0015
    is 1.33 SE down: out for max_accuracy (1 SE), in for balanced (2 SE). The cheapest point that is within
    the drop wins even when a dearer one is not (0.9170 at SE 0.0010 is 3 SE down)."""
    points = [_point(0.8900, 1.0, 0.0040), _point(0.9130, 2.0, 0.0030), _point(0.9170, 3.0, 0.0010),
              _point(0.9180, 4.0, 0.0015), _point(0.9195, 5.0, 0.0008), _point(0.9200, 6.0, 0.0)]
    named = name_points(points, {"max_accuracy": 1.0, "balanced": 2.0, "min_energy": 4.0})
    # max_accuracy: 0.9195 (0.0005 <= 0.0008); balanced: 0.9130 (0.0070 > 0.0060) no, 0.9180 (0.0020 <= 0.0030);
    # min_energy: 0.8900 (0.0300 > 0.0160) no, 0.9130 (0.0070 <= 0.0120) yes
    assert named == {"max_accuracy": 4, "balanced": 3, "min_energy": 1}
    # zero standard errors: only the best point itself is indistinguishable from the best
    flat = [OperatingPoint(p.thresholds, p.val_accuracy, p.expected_macs, p.exit_rates) for p in points]
    assert set(name_points(flat, {"max_accuracy": 1.0, "balanced": 2.0, "min_energy": 4.0}).values()) == {5}


def _anchored(acc, macs, se_vs_reference):
    return OperatingPoint((0.5,), acc, macs, (0.5, 0.5), binomial_se(acc, 5000), 0.0, se_vs_reference)


def test_bounded_loss_takes_the_cheapest_point_whose_loss_plus_z_errors_fits():
    """Static network 0.9200 on val. A best point two images ahead of its cheaper neighbour with none in return
    (5,000 val images: a gap of 0.0004 at a paired SE of sqrt(2)/5000) keeps max_accuracy at the best point;
    bounded_loss, bounded against the static network, moves down the ladder as far as its allowance goes."""
    n = 5000
    points = [_anchored(0.9100, 1.0, 0.0030), _anchored(0.9160, 2.0, 0.0020), _anchored(0.9190, 3.0, 0.0012),
              _anchored(0.9206, 4.0, 0.0010), _anchored(0.9210, 5.0, 0.0008)]
    points = [dataclasses.replace(p, se_vs_best=se) for p, se in
              zip(points, (0.0035, 0.0024, 0.0015, math.sqrt(2) / n, 0.0))]
    assert name_points(points, {"max_accuracy": 1.0, "balanced": 2.0, "min_energy": 4.0})["max_accuracy"] == 4
    # losses 1.00, 0.40, 0.10, -0.06, -0.10 points; plus one SE: 1.30, 0.60, 0.22, 0.04, -0.02
    assert bounded_loss_point(points, 0.9200, 0.5, 1.0) == 2
    assert bounded_loss_point(points, 0.9200, 0.65, 1.0) == 1     # 0.60 fits once 0.65 points are allowed
    assert bounded_loss_point(points, 0.9200, 0.5, 0.0) == 1       # the loss alone: 0.40 <= 0.5
    assert bounded_loss_point(points, 0.9200, 0.5, 4.0) == 3       # four SE: 0.10 + 0.48 > 0.5, -0.06 + 0.40 fits
    # nothing fits (a static network far above every point): the most accurate point
    assert bounded_loss_point(points, 0.9500, 0.5, 1.0) == 4
    with pytest.raises(ValueError, match="se_vs_reference"):
        bounded_loss_point([dataclasses.replace(points[0], se_vs_reference=None)], 0.92, 0.5, 1.0)


@pytest.mark.parametrize("bound, fragment", [
    ({"points": -0.5}, "loss_bound.points: expected a number >= 0, got -0.5"),
    ({"z": float("nan")}, "loss_bound.z: expected a number >= 0, got nan"),
    ({"point": 0.5}, "loss_bound: unknown key ['point']"),
])
def test_bad_loss_bounds_are_refused_in_one_line(bound, fragment):
    with pytest.raises(ConfigError) as info:
        compute_operating_points(HAND_LOGITS, HAND_LABELS, HAND_COST, loss_bound=bound)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_a_looser_loss_bound_moves_bounded_loss_to_the_cheap_point():
    # the cheap point loses 25 points at a paired SE of 21.7: it fits 47 points allowed at z = 1, not 46
    loose = compute_operating_points(HAND_LOGITS, HAND_LABELS, HAND_COST, grid=(0.6, 0.9), loss_bound={"points": 47})
    assert loose.by_name("bounded_loss").thresholds == (0.6,) and loose.loss_bound == {"points": 47.0, "z": 1.0}
    tight = compute_operating_points(HAND_LOGITS, HAND_LABELS, HAND_COST, grid=(0.6, 0.9), loss_bound={"points": 46})
    assert tight.by_name("bounded_loss").thresholds == (0.9,)
    assert OperatingPoints.from_dict(loose.to_dict()).loss_bound == loose.loss_bound


def test_paired_standard_error_counts_only_the_images_two_points_disagree_on():
    ref = np.array([1, 1, 1, 1, 0, 1, 1, 1], dtype=bool)
    hit = np.array([1, 1, 0, 1, 1, 1, 0, 1], dtype=bool)
    # differences [0, 0, 1, 0, -1, 0, 1, 0]: mean 1/8, variance 3/8 - 1/64 = 23/64
    se = paired_standard_errors(hit[None], ref)
    assert se[0] == pytest.approx(math.sqrt(23 / 64) / math.sqrt(8))
    assert paired_standard_errors(ref[None], ref)[0] == 0.0
    assert binomial_se(0.92, 5000) == pytest.approx(0.003837, abs=1e-6)  # the 0.4 points of a 5,000-image val


@pytest.mark.parametrize("drops, fragment", [
    ({"max_accuracy": -1, "balanced": 2, "min_energy": 4}, "named_drops.max_accuracy: expected a number of "
                                                           "standard errors >= 0, got -1"),
    ({"balanced": 2, "min_energy": 4}, "named_drops: no drop for ['max_accuracy']"),
    ({"max_accuracy": 1, "balanced": 2, "min_energy": 4, "bounded_loss": 1}, "named_drops.bounded_loss: that name "
                                                                              "is stated against the static network"),
])
def test_bad_named_drops_are_refused_in_one_line(drops, fragment):
    with pytest.raises(ConfigError) as info:
        compute_operating_points(HAND_LOGITS, HAND_LABELS, HAND_COST, named_drops=drops)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_a_name_the_points_do_not_define_is_refused_with_the_reachable_range(hand_points):
    hand_points.named.pop("balanced")
    with pytest.raises(OperatingPointError) as info:
        hand_points.by_name("balanced")
    msg = str(info.value)
    assert msg.startswith("operating_point: 'balanced' is not defined for this network")
    assert "val accuracy 0.7500..1.0000 at 40..90 expected MACs" in msg and "\n" not in msg


def test_operating_points_store_and_switch_at_run_time(hand_points, tmp_path, tiny_space):
    hand_points.save(tmp_path)
    loaded = OperatingPoints.load(tmp_path)
    assert loaded.to_dict() == hand_points.to_dict()
    assert [p.se_vs_reference for p in loaded.points] == [p.se_vs_reference for p in hand_points.points]
    older = hand_points.to_dict()
    for p in older["points"]:
        del p["se_vs_reference"]
    assert [p.se_vs_reference for p in OperatingPoints.from_dict(older).points] == [None, None]
    assert loaded.is_current
    older["format"] = 2                     # written before bounded_loss: recomputed on first use
    assert not OperatingPoints.from_dict(older).is_current
    net = _random_net(tiny_space, 1)
    n_early = net.n_exits - 1
    points = OperatingPoints(metric="max_softmax", reference_accuracy=1.0, static_macs=1.0, points=[
        type(hand_points.points[0])((0.5,) * n_early, 0.8, 1.0, (0.0,) * n_early + (1.0,)),
        type(hand_points.points[0])((None,) * n_early, 0.9, 2.0, (0.0,) * n_early + (1.0,))],
        named={"max_accuracy": 1, "balanced": 1, "min_energy": 0})
    model = AdaptiveModel(net, operating_points=points)
    model.set_operating_point("min_energy")
    assert model.thresholds == (0.5,) * n_early
    model.set_operating_point(max_macs=1.5)
    assert model.thresholds == (0.5,) * n_early
    model.set_operating_point(min_accuracy=0.85)
    assert all(math.isinf(t) for t in model.thresholds)


def test_operating_points_are_a_front_on_real_logits(tiny_space):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 300, 4)) * np.array([1.0, 2.0, 4.0])[:, None, None]
    labels = rng.integers(0, 4, 300)
    logits[2, np.arange(300), labels] += 3.0  # the final exit is the most accurate
    cost = NetworkCost(segment_macs=(100, 200, 700), head_macs=(20, 20, 50))
    pts = compute_operating_points(logits, labels, cost, "entropy")
    acc = [p.val_accuracy for p in pts.points]
    macs = [p.expected_macs for p in pts.points]
    assert macs == sorted(macs) and acc == sorted(acc) and len(set(acc)) == len(acc)
    assert pts.by_name("max_accuracy").val_accuracy == max(acc)
    for name, k in pts.named_drops.items():  # each name within its drop, in paired standard errors
        p = pts.by_name(name)
        assert pts.best.val_accuracy - p.val_accuracy <= k * p.se_vs_best + 1e-12
    costs = [pts.by_name(n).expected_macs for n in ("max_accuracy", "balanced", "min_energy")]
    assert costs == sorted(costs, reverse=True) and pts.n_val == 300
    bounded = pts.by_name("bounded_loss")       # within half a point of the final exit, one paired SE included
    assert (pts.reference_accuracy - bounded.val_accuracy) + bounded.se_vs_reference <= 0.005 + 1e-12
    cheaper = [p for p in pts.points if p.expected_macs < bounded.expected_macs]
    assert all((pts.reference_accuracy - p.val_accuracy) + p.se_vs_reference > 0.005 for p in cheaper)


def test_torch_confidence_matches_the_numpy_rule():
    from aebnas.exits import confidence_torch

    logits = np.random.default_rng(1).normal(size=(50, 7)) * 3
    for metric in METRICS:
        np.testing.assert_allclose(confidence_torch(torch.from_numpy(logits), metric).numpy(),
                                   confidence(logits, metric), rtol=0, atol=1e-12)


def test_torchscript_adaptive_model_matches_eager(tiny_space, tmp_path):
    from aebnas.runtime.export import script_adaptive

    net = _random_net(tiny_space, 4)
    x = torch.randn(50, 1, 12, 12, generator=torch.Generator().manual_seed(4))
    model = AdaptiveModel(net, _spread_thresholds(net, x, "entropy", np.random.default_rng(4)), "entropy")
    script_adaptive(model, tmp_path / "adaptive.pt")
    loaded = torch.jit.load(str(tmp_path / "adaptive.pt"))
    pred, where = loaded(x)
    eager = model(x)
    assert torch.equal(pred, eager.prediction) and torch.equal(where, eager.exit_index)


def test_folding_batchnorm_keeps_the_logits_and_leaves_the_network_alone(mbv3_space):
    from aebnas.nn import fold_batchnorm

    net = _random_net(mbv3_space, 5, num_classes=10, in_channels=3)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    folded = fold_batchnorm(net)
    assert n_bn > 0 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == n_bn
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for a, b in zip(net(x), folded(x)):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_exported_adaptive_program_matches_eager_at_any_batch_size(tiny_space, tmp_path):
    from aebnas.nn import fold_batchnorm
    from aebnas.runtime.export import export_adaptive

    net = _random_net(tiny_space, 4)
    x = torch.randn(50, 1, 12, 12, generator=torch.Generator().manual_seed(4))
    model = AdaptiveModel(net, _spread_thresholds(net, x, "entropy", np.random.default_rng(4)), "entropy")
    exported = export_adaptive(model, x[:3], tmp_path / "adaptive.pt2")
    # After each enabled exit the rest runs under a condition, so a batch that has all left stops there
    # (at batch 1 that is the whole saving), rather than running the later segments on no samples.
    conds = [n for gm in exported.graph_module.modules() if isinstance(gm, torch.fx.GraphModule)
             for n in gm.graph.nodes if n.target is torch.ops.higher_order.cond]  # nested: one per branch graph
    assert len(conds) == sum(t is not None and not math.isinf(t) for t in model.thresholds) >= 2
    loaded = torch.export.load(tmp_path / "adaptive.pt2")
    (example,), _ = loaded.example_inputs  # the 3 images it was given, not the 50-image batch they are a slice of
    assert example.shape[0] == 3 and example.untyped_storage().nbytes() == x[:3].numel() * x.element_size()
    program = loaded.module()
    folded = AdaptiveModel(fold_batchnorm(net), model.thresholds, "entropy")
    for batch in (x, x[:1], x[7:14]):  # sizes other than the example's: the batch dimension is dynamic
        pred, where = program(batch)
        want = folded(batch)
        assert torch.equal(pred, want.prediction) and torch.equal(where, want.exit_index)
    assert len(set(where.tolist())) >= 2

    # From a one-image example the batch size stays dynamic (torch.export alone would fix it at 1).
    pred, where = export_adaptive(model, x[:1]).module()(x[:5])
    want = folded(x[:5])
    assert torch.equal(pred, want.prediction) and torch.equal(where, want.exit_index)

    # Every sample leaves at the first exit: the rest of the network must be skipped, not run on an empty batch.
    everyone_leaves = AdaptiveModel(net, [0.0] + [None] * (net.n_exits - 2), "max_softmax")
    pred, where = export_adaptive(everyone_leaves, x[:3]).module()(x)
    assert (where == 0).all() and torch.equal(pred, everyone_leaves(x).prediction)


@pytest.mark.slow
def test_onnx_export_round_trip(tiny_space, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from aebnas.runtime.export import export_onnx_all_exits, export_onnx_segments

    net = build_model(tiny_space.parse("k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:avg-conv8k3|off|t0.8:dwsep8k3|off"), 4, 1).eval()
    x = torch.randn(6, 1, 12, 12)
    with torch.no_grad():
        expected = [t.numpy() for t in net(x)]
    path = export_onnx_all_exits(net, x[:2], tmp_path / "all.onnx")  # the default exporter (torch.export)
    got = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})  # another batch size than exported
    assert len(got) == net.n_exits == 3
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    features = x.numpy()
    for k, seg_path in enumerate(export_onnx_segments(net, x[:2], tmp_path / "segments", dynamo=False)):
        features, logits = ort.InferenceSession(str(seg_path)).run(None, {"input": features})
        np.testing.assert_allclose(logits, expected[k], rtol=1e-4, atol=1e-5)


# --- aebnas-stream on a run directory made here -------------------------------------------------

DATASET = {"name": "synthetic", "num_classes": 3, "num_samples": 240, "resolution": 8, "channels": 1,
           "val_size": 0.25, "test_size": 0.25, "seed": 0}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_space):
    from aebnas.data import load_dataset
    from aebnas.search import SearchJob, SearchSettings, run_search
    from aebnas.train import TrainerSettings

    run_dir = tmp_path_factory.mktemp("run")
    settings = SearchSettings(pop_size=2, generations=1, exit_metric="max_softmax",
                              initial_genomes=("k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:conv8k3|off|t0.8:avg-conv8k3|off",))
    trainer = TrainerSettings(epochs=1, batch_size=64, device="cpu", crop_padding=1, num_threads=1)
    run_search(SearchJob(tiny_space, load_dataset(DATASET), trainer, settings, torch.device("cpu"), run_dir,
                         progress=False))
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"dataset": DATASET}))
    return run_dir


def _stream(tmp_path, *args):
    cmd = [sys.executable, "-m", "aebnas.cli.stream", f"hydra.run.dir={tmp_path / 'out'}", "progress=false",
           "num_threads=1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
def test_stream_cli_on_a_real_run(tiny_run, tmp_path):
    proc = _stream(tmp_path, f"run={tiny_run}", "n_images=30", "batch_size=8", "warmup=2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "stream.json").read_text())
    assert [c["batch_size"] for c in result["comparisons"]] == [1, 8]
    for c in result["comparisons"]:
        assert c["static"]["images"] == c["adaptive"]["images"] == 30
        assert sum(c["adaptive"]["exit_histogram"]) == 30
        assert c["static"]["effective_macs"] == result["static_macs"]
    # the same images and thresholds give the same answers at batch 1 and batch 8
    assert result["comparisons"][0]["adaptive"]["accuracy"] == result["comparisons"][1]["adaptive"]["accuracy"]
    assert [r["operating_point"] for r in result["operating_points"]] == list(NAMES)
    stored = OperatingPoints.load(next((tiny_run / "models").glob("00_*")))
    static_b1 = result["comparisons"][0]["static"]["accuracy"]
    for r in result["operating_points"]:
        assert r["test_points_lost"] == pytest.approx((static_b1 - r["accuracy"]) * 100)
        assert r["val_points_lost"] == pytest.approx((stored.reference_accuracy - r["val_accuracy"]) * 100)
        assert r["test_points_lost_se"] >= 0 and "correct" not in r
        named = stored.points[stored.named[r["operating_point"]]]
        assert r["val_points_lost_se"] == pytest.approx(named.se_vs_reference * 100)
    assert result["operating_point_label"] == "bounded_loss"        # the default point
    assert result["loss_bound"] == {"points": 0.5, "z": 1.0}
    assert result["operating_point"]["val_se_vs_reference"] == stored.by_name("bounded_loss").se_vs_reference
    assert "points lost vs static: test" in proc.stdout
    assert (tmp_path / "out" / "stream.png").stat().st_size > 10_000
    model_dir = tiny_run / "models"
    assert list(model_dir.glob("00_*/operating_points.json"))  # stored beside the model for the next run
    assert "batch    8" in proc.stdout
    assert result["fold_batchnorm"] is True


def test_points_lost_are_paired_over_the_same_test_images():
    from aebnas.runtime.stream import points_lost

    point = OperatingPoint((0.6,), 0.70, 40.0, (0.75, 0.25), 0.05, 0.05, se_vs_reference=0.05)
    static = np.array([1, 1, 1, 0], dtype=bool)
    adaptive = np.array([1, 0, 0, 1], dtype=bool)    # two images lost, one gained: 25 points lost
    got = points_lost(0.80, point, static, adaptive)
    assert got["val_points_lost"] == pytest.approx(10.0)          # the final exit's val accuracy minus the point's
    assert got["test_points_lost"] == pytest.approx(25.0)
    assert got["test_points_lost_se"] == pytest.approx(np.std([0, 1, 1, -1]) / 2 * 100)   # paired, not two binomials
    assert got["val_points_lost_se"] == pytest.approx(5.0)                      # the stored point's, in points
    assert points_lost(None, point, static, None) == {}
    older = dataclasses.replace(point, se_vs_reference=None)                   # loaded from a file without it
    assert "val_points_lost_se" not in points_lost(0.80, older, static, adaptive)
    with pytest.raises(ValueError, match="same images"):
        points_lost(0.8, point, static, adaptive[:3])


@pytest.mark.parametrize("batch_sizes, lost", [((1, 8), 25.0), ((8, 1), 25.0), ((8, 4), -25.0)])
def test_named_points_are_measured_against_the_static_pass_at_batch_one(monkeypatch, hand_points, tiny_space,
                                                                      batch_sizes, lost):
    """The named points run at batch 1, so the static pass at batch 1 is their reference, wherever it is listed;
    without one, the first batch size's."""
    import aebnas.runtime.stream as stream
    from aebnas.runtime.stream import StreamResult

    def fake(correct):
        c = np.array(correct, dtype=bool)
        return StreamResult("x", 1, 4, 1.0, 4.0, 1.0, 1.0, 1.0, float(c.mean()), 1.0, [0, 4], correct=c)

    static_by_batch = {1: [1, 1, 1, 1], 8: [1, 1, 0, 0], 4: [0, 0, 0, 0]}   # the named point: 3 of 4 right
    monkeypatch.setattr(stream, "run_static", lambda model, cost, x, labels, b, *a: fake(static_by_batch[b]))
    monkeypatch.setattr(stream, "run_adaptive", lambda model, cost, x, labels, b, *a: fake([1, 0, 1, 1]))
    net = build_model(tiny_space.parse("k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:avg-conv8k3|off|t0.8:dwsep8k3|off"), 4, 1)
    points = dataclasses.replace(hand_points, reference_accuracy=0.9)   # the final exit's val accuracy, not the best's
    model = AdaptiveModel(net, [0.6] * (net.n_exits - 1), operating_points=points)
    monkeypatch.setattr(model, "set_operating_point", lambda name: points.points[0])
    monkeypatch.setattr(model, "set_thresholds", lambda thresholds: None)
    bench = stream.stream_benchmark(model, HAND_COST, torch.zeros(4, 1, 8, 8), np.zeros(4), batch_sizes,
                                    table_points=("max_accuracy",), progress=False)
    assert bench["operating_points"][0]["test_points_lost"] == pytest.approx(lost)
    assert bench["operating_points"][0]["val_points_lost"] == pytest.approx((0.9 - 0.75) * 100)


def test_folded_stream_gives_the_answers_of_the_trained_network(tiny_run, tmp_path):
    """fold_batchnorm (on by default) may change the time of a stream, not its answers."""
    from aebnas.runtime.stream import StreamSettings, run_stream

    results = {}
    for fold in (False, True):
        settings = StreamSettings.from_dict({"run": str(tiny_run), "operating_point": "balanced", "n_images": 40,
                                             "batch_size": 8, "warmup": 0, "operating_point_table": False,
                                             "progress": False, "num_threads": 1, "fold_batchnorm": fold})
        results[fold] = run_stream(settings, tmp_path / str(fold))
    for plain, folded in zip(results[False]["comparisons"], results[True]["comparisons"]):
        for side in ("static", "adaptive"):
            assert folded[side]["accuracy"] == plain[side]["accuracy"]
            assert folded[side]["exit_histogram"] == plain[side]["exit_histogram"]
    assert [results[f]["fold_batchnorm"] for f in (False, True)] == [False, True]


@pytest.mark.parametrize("args, fragment", [
    ([], "run: required"),
    (["run=/nonexistent/run"], "run dir: no evaluations.csv in '/nonexistent/run'"),
    (["run=RUN", "+turbo=1"], "stream.turbo: unknown key"),
    (["run=RUN", "n_images=many"], "n_images: expected an integer"),
])
def test_stream_bad_input_gets_one_line(tiny_run, tmp_path, args, fragment):
    proc = _stream(tmp_path, *[a.replace("RUN", str(tiny_run)) for a in args])
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("aebnas-stream: error: ") and fragment in lines[0]
    assert not (tmp_path / "out" / "stream.json").exists()


@pytest.mark.parametrize("overrides, fragment", [
    ({"model": 9}, "model: 9 is out of range"),
    ({"operating_point": "turbo"}, "operating_point: unknown name 'turbo'"),
    ({"min_accuracy": 0.9}, "give exactly one of operating_point"),
    ({"operating_point": None, "min_accuracy": 1.5}, "min_accuracy: must be in [0.0, 1.0]"),
    ({"operating_point": None, "max_macs": 1}, "operating_point.max_macs: 1 is below the cheapest point"),
    ({"batch_size": 0}, "batch_size: must be in [1, inf]"),
    ({"batch_size": [256, 0]}, "batch_size[1]: must be in [1, inf]"),
    ({"batch_size": []}, "batch_size: an empty list"),
    ({"fold_batchnorm": "yes"}, "fold_batchnorm: expected true or false, got 'yes'"),
    ({"device": "cuda:0"} if not torch.cuda.is_available() else {"device": "tpu"}, "device: "),
])
def test_stream_settings_refused_in_one_line(tiny_run, tmp_path, capsys, overrides, fragment):
    """The same path as the console script after Hydra has composed the config, in process (fast)."""
    from aebnas.cli import stream

    _refused_in_one_line(stream, "stream", "stream.json", capsys, tmp_path, fragment,
                         {"run": str(tiny_run), "progress": False, "num_threads": 1, "n_images": 10, **overrides})


@pytest.mark.parametrize("budget, fragment", [
    ({"images_per_s": -1}, "budget.images_per_s: must be in (0.0, inf], got -1"),
    ({"images_per_s": 100, "macs_per_image": 1e6}, "budget: give one target, got ['images_per_s', 'macs_per_image']"),
    ({"latency_ms": "fast"}, "budget.latency_ms: expected a number, got 'fast'"),
    ({"window": 0}, "budget.window: must be in [2, inf], got 0"),
    ({"macs_per_image": 1}, "budget.macs_per_image: 1 is below the cheapest operating point; the points reach"),
    ({"images_per_s": 1e9}, "budget.images_per_s: 1e+09 is beyond what any operating point reaches here (about"),
])
def test_bad_budgets_are_refused_in_one_line(tiny_run, tmp_path, capsys, budget, fragment):
    from aebnas.cli import stream

    _refused_in_one_line(stream, "stream", "stream.json", capsys, tmp_path, fragment,
                         {"run": str(tiny_run), "progress": False, "num_threads": 1, "n_images": 10, "warmup": 0,
                          "batch_size": 4, "operating_point_table": False, "budget": budget})


def _tiny_points(tiny_run):
    """The tiny run's first network's operating points, computed here when no earlier test has stored them."""
    from aebnas.data import load_dataset
    from aebnas.runtime import load_saved_model
    from aebnas.runtime.run_network import ensure_operating_points

    data = load_dataset(DATASET)
    saved = load_saved_model(next((tiny_run / "models").glob("00_*")))
    return ensure_operating_points(saved, data.val, data.mean, data.std, torch.device("cpu"))


def test_stream_under_a_macs_budget_holds_it_and_writes_its_windows(tiny_run, tmp_path, capsys):
    """MACs per image do not depend on the clock: the controlled pass must hold the budget it was given."""
    from aebnas.cli.stream import stream

    macs = sorted(p.expected_macs for p in _tiny_points(tiny_run).points)
    target = (macs[0] + macs[-1]) / 2
    cfg = _shipped("stream")
    cfg.merge_with({"run": str(tiny_run), "progress": False, "num_threads": 1, "n_images": 60, "warmup": 0,
                    "batch_size": 4, "batch_one": False, "operating_point_table": False,
                    "budget": {"macs_per_image": target, "window": 20, "interval": 4, "calibration": 4}})
    result = stream(cfg, tmp_path / "out")
    b = result["budget"]
    assert b["target"] == {"kind": "macs_per_image", "value": target, "unit": "MACs per image"}
    assert b["images"] == 60 and b["batch_size"] == 4 and len(b["records"]["seconds"]) == 15
    assert b["effective_macs"] <= target * 1.1  # held on average (the band the windows report on)
    assert [w["first_image"] for w in b["windows"]] == [0, 20, 40]
    assert b["switch_count"] == len(b["switches"]) and all(s["reason"] for s in b["switches"])
    assert "budget macs_per_image=" in capsys.readouterr().out
    saved = json.loads((tmp_path / "out" / "stream.json").read_text())
    assert saved["budget"]["windows"] == b["windows"] and "val_accuracy_se" in saved["operating_point"]


def _shipped(config_name: str):
    """conf/<config_name>.yaml as the entry point composes it (over its schema's defaults), without hydra's section."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "aebnas" / "conf")):
        return compose(config_name)


def _refused_in_one_line(cli, config_name: str, result_file: str, capsys, tmp_path, fragment: str, settings: dict):
    """``cli``'s job on conf/<config_name>.yaml merged with ``settings``: exit 2, one line naming the field,
    and no result file."""
    from aebnas.cli.common import user_errors

    cfg = _shipped(config_name)
    cfg.merge_with(settings)
    with pytest.raises(SystemExit) as info:
        with user_errors(cli.PROG):
            getattr(cli, config_name)(cfg, tmp_path / "out")
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{cli.PROG}: error: ") and fragment in lines[0], lines
    assert not (tmp_path / "out" / result_file).exists()


def test_stream_of_a_run_whose_data_moved_reads_it_from_data_dir(tmp_path, capsys):
    """A run directory copied to another machine: its config names the search's data_dir; data_dir= says where
    the files are now. Without it, the one-line missing-files error; with it, the stream runs."""
    import shutil

    from aebnas.cli.common import user_errors
    from aebnas.cli.search import search
    from aebnas.cli.stream import PROG, stream
    from tests.conftest import compose_config
    from tests.formats import write_cifar10

    write_cifar10(tmp_path / "then", per_batch=8)
    search(compose_config(["dataset=cifar10", f"dataset.data_dir={tmp_path / 'then'}", "dataset.val_size=10",
                           "dataset.resolution=8", "space=tiny", "search.pop_size=2", "search.generations=1",
                           "trainer.epochs=1", "trainer.device=cpu", "trainer.batch_size=16", "progress=false"]),
           tmp_path / "run")
    shutil.move(tmp_path / "then", tmp_path / "now")
    cfg = _shipped("stream")
    cfg.merge_with({"run": str(tmp_path / "run"), "progress": False, "num_threads": 1, "n_images": 8,
                    "batch_size": 4, "warmup": 1, "operating_point_table": False})
    with pytest.raises(SystemExit) as info:
        with user_errors(PROG):
            stream(cfg, tmp_path / "refused")
    assert info.value.code == 2
    assert "dataset.data_dir: CIFAR-10 not found" in capsys.readouterr().err
    cfg.data_dir = str(tmp_path / "now")
    stream(cfg, tmp_path / "out")
    result = json.loads((tmp_path / "out" / "stream.json").read_text())
    assert result["dataset"] == "cifar10" and result["test_images"] == 8


def _export_cli(tmp_path, *args):
    cmd = [sys.executable, "-m", "aebnas.cli.export", f"hydra.run.dir={tmp_path / 'export'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
def test_export_cli_writes_every_form_checked_with_a_manifest(tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from aebnas.data import load_dataset, normalize
    from aebnas.runtime import load_saved_model

    proc = _export_cli(tmp_path, f"run={tiny_run}", "formats=[pt2,torchscript,onnx,onnx_segments]", "check_images=40",
                       "operating_point=null", "min_accuracy=0.0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "export"
    manifest = json.loads((out / "export.json").read_text())
    assert all(c["passed"] and c["images"] == 40 for c in manifest["checks"].values()), manifest["checks"]
    assert manifest["input_shape"] == [1, 8, 8] and manifest["num_classes"] == 3
    assert "onnxscript" not in proc.stdout + proc.stderr  # the exporters' chatter stays out of the console

    # Independently of the manifest: the files, loaded without aebnas's classes, answer as the eager model does
    # at the manifest's thresholds, on test images the export never saw.
    data = load_dataset(DATASET)
    x = normalize(data.test.x, manifest["normalize"]["mean"], manifest["normalize"]["std"])
    saved = load_saved_model(next((tiny_run / "models").glob("00_*")))
    eager = AdaptiveModel(saved.net, manifest["operating_point"]["thresholds"], manifest["exit_metric"])(x)
    pred, where = torch.jit.load(str(out / manifest["files"]["torchscript"][0]))(x)
    assert torch.equal(pred, eager.prediction) and torch.equal(where, eager.exit_index)
    from aebnas.nn import fold_batchnorm
    folded = AdaptiveModel(fold_batchnorm(saved.net), manifest["operating_point"]["thresholds"], "max_softmax")(x)
    pred, where = torch.export.load(out / "adaptive.pt2").module()(x)
    assert torch.equal(pred, folded.prediction) and torch.equal(where, folded.exit_index)
    assert manifest["files"]["onnx_segments"] == [f"segments/segment_{k}.onnx" for k in range(saved.net.n_exits)]
    # An exit switched off by the operating point runs no head, so no path pays for it.
    assert "threshold" in manifest["exit_rule"]


def test_export_manifest_charges_no_head_to_an_exit_switched_off(tiny_run, tmp_path):
    """The operating point's own path costs: an exit it switches off runs no head (as aebnas-stream counts)."""
    import dataclasses
    import shutil

    from aebnas.runtime import load_saved_model
    from aebnas.runtime.export_run import ExportSettings, run_export
    from aebnas.runtime.run_network import load_run_network

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    model_dir = next((run / "models").glob("00_*"))
    points = load_run_network(str(run), 0).points  # computed from val logits and stored on first use
    first = points.points[0]
    off = dataclasses.replace(first, thresholds=(None,) + tuple(first.thresholds[1:]), expected_macs=1.0)
    points.points.append(off)  # the cheapest point now switches exit 0 off
    points.save(model_dir)
    settings = ExportSettings.from_dict({"run": str(run), "operating_point": None, "max_macs": 1.0,
                                         "formats": ["torchscript"], "check_images": 20})
    manifest = run_export(settings, tmp_path / "out")
    cost = load_saved_model(model_dir).cost
    assert manifest["operating_point"]["thresholds"][0] is None
    assert manifest["path_macs"] == path_costs_with(cost, [False, True]).tolist()
    assert manifest["path_macs"][-1] < cost.path_macs[-1]  # the final path without exit 0's head


def test_another_exit_metric_recomputes_the_operating_points_for_it(tiny_run, tmp_path):
    """The metric is a run-time choice: thresholds mean something else under each, so points follow it."""
    import shutil

    from aebnas.runtime import AdaptiveModel
    from aebnas.runtime.operating_points import OperatingPoints, compute_operating_points
    from aebnas.runtime.run_network import load_run_network
    from aebnas.train import predict_logits

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    searched = load_run_network(str(run), 0)
    assert searched.points.metric == searched.saved.meta["exit_metric"] == "max_softmax"
    found = load_run_network(str(run), 0, exit_metric="margin")
    assert found.points.metric == "margin"
    assert OperatingPoints.load(found.saved.path).metric == "margin"     # stored, so the next job finds it
    logits = predict_logits(found.saved.net, found.data.val, found.data.mean, found.data.std, torch.device("cpu"),
                            amp=False)
    by_hand = compute_operating_points(logits, found.data.val.y.numpy(), found.saved.cost, "margin")
    assert [p.thresholds for p in found.points.points] == [p.thresholds for p in by_hand.points]
    assert AdaptiveModel.from_saved(found.saved, found.points).metric == "margin"
    assert load_run_network(str(run), 0).points.metric == "max_softmax"   # back to the search's own metric


def test_an_export_under_another_exit_metric_runs_its_points(tiny_run, tmp_path):
    import shutil

    from aebnas.runtime.export_run import ExportSettings, run_export
    from aebnas.runtime.operating_points import OperatingPoints

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    settings = ExportSettings.from_dict({"run": str(run), "operating_point": "max_accuracy", "exit_metric": "margin",
                                         "formats": ["torchscript"], "check_images": 20})
    manifest = run_export(settings, tmp_path / "out")
    stored = OperatingPoints.load(next((run / "models").glob("00_*")))
    assert manifest["exit_metric"] == stored.metric == "margin"
    chosen = stored.points[stored.named["max_accuracy"]]
    assert manifest["operating_point"]["thresholds"] == list(chosen.thresholds)
    assert all(c["passed"] for c in manifest["checks"].values()), manifest["checks"]   # answers as eager margin


def test_an_unknown_exit_metric_is_refused_in_one_line():
    from aebnas.runtime.stream import StreamSettings

    with pytest.raises(ValueError, match="exit_metric: 'confidence' is not one of") as exc:
        StreamSettings.from_dict({"run": "/some/run", "exit_metric": "confidence"})
    assert "\n" not in str(exc.value)


def test_export_formats_read_from_a_comma_separated_string():
    from aebnas.runtime.export_run import ExportSettings

    settings = ExportSettings.from_dict({"run": "/some/run", "operating_point": "balanced",
                                         "formats": "pt2, torchscript"})
    assert settings.formats == ("pt2", "torchscript")


@pytest.mark.parametrize("overrides, fragment", [
    ({"formats": ["tflite"]}, "formats[0]: unknown form 'tflite'"),
    ({"formats": []}, "formats: give a list of"),
    ({"min_accuracy": 0.9}, "give exactly one of operating_point"),
    ({"check_images": 0}, "check_images: must be in [1, inf]"),
    ({"model": 7}, "model: 7 is out of range"),
])
def test_export_settings_refused_in_one_line(tiny_run, tmp_path, capsys, overrides, fragment):
    from aebnas.cli import export

    _refused_in_one_line(export, "export", "export.json", capsys, tmp_path, fragment,
                         {"run": str(tiny_run), **overrides})


def test_an_export_that_disagrees_writes_no_manifest(tiny_run, tmp_path, monkeypatch):
    """A form whose answers differ from the eager model's must not be left looking like a finished export."""
    import aebnas.runtime.export_run as export_run

    def turned_round(net):  # the reference the program is checked against, every classifier negated
        folded = fold_batchnorm(net)
        with torch.no_grad():
            for head in folded.heads:
                for p in [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1].parameters():
                    p.neg_()
        return folded

    from aebnas.nn import fold_batchnorm
    monkeypatch.setattr(export_run, "fold_batchnorm", turned_round)
    settings = export_run.ExportSettings.from_dict({"run": str(tiny_run), "operating_point": "max_accuracy",
                                                    "formats": ["pt2"], "check_images": 40})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "export.json").write_text("{}")  # an earlier export's manifest, in the same folder
    with pytest.raises(export_run.ExportCheckError, match=r"\['pt2'\] disagreed with the eager model"):
        export_run.run_export(settings, tmp_path / "out")
    assert (tmp_path / "out" / "adaptive.pt2").exists() and not (tmp_path / "out" / "export.json").exists()


def test_shipped_stream_config_composes_and_is_accepted():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from aebnas.runtime.stream import StreamSettings

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "aebnas" / "conf")):
        cfg = compose("stream", overrides=["run=/some/run"])
    settings = StreamSettings.from_dict(OmegaConf.to_container(cfg, resolve=True))
    assert settings.run == "/some/run" and settings.operating_point == "bounded_loss" and settings.num_threads == 2
    assert settings.budget.budget is None and settings.budget.window == 200


@pytest.mark.parametrize("batch_size, batch_one, expected", [
    (256, True, [1, 256]),
    (1, True, [1]),
    ([256, 1024, 256], True, [1, 256, 1024]),
    ([1, 64], True, [1, 64]),
    ([256, 4096], False, [256, 4096]),
    (1, False, [1]),
])
def test_stream_batch_sizes(batch_size, batch_one, expected):
    """Batch 1 first unless switched off; a list sweeps several batches in one run, each once."""
    from aebnas.runtime.stream import StreamSettings

    settings = StreamSettings.from_dict({"run": "/some/run", "operating_point": "balanced", "batch_size": batch_size,
                                        "batch_one": batch_one})
    assert settings.batch_sizes == expected
