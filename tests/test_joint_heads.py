"""Exit heads trained in the supernet (``supernet.exits=joint``): exact inheritance of head slices, sandwich
steps that train them, the cache key, and candidates whose early exits work without fine-tuning."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aebnas.nn import build_model
from aebnas.nn.elastic_heads import check_head, head_choices
from aebnas.nn.supernet import Supernet, genome_heads, inherit_weights
from aebnas.search import SearchJob, SearchSettings, run_search
from aebnas.search.evaluator import CandidateEvaluator
from aebnas.search.thresholds import confidence
from aebnas.space import BranchLayer
from aebnas.train import TrainerSettings, predict_logits
from aebnas.train.losses import exit_loss_weights
from aebnas.train.supernet import (SupernetSettings, prepare_supernet, sample_head_set, sample_heads, sandwich_backbones,
                                   sandwich_heads, sandwich_step, supernet_identity)
from aebnas.train.trainer import recalibrate_batchnorm
from tests.test_supernet import (_one_thread, make_space, make_tiny_batch,  # noqa: F401  (fixture re-used)
                                 randomise_batchnorm)

CPU = torch.device("cpu")

HEAD_SPACES = {
    "searched": {},
    # 1x1 kernels and two widths the searched choices do not have (EDANAS's fixed head)
    "fixed_edanas": {"exit_heads": "conv16k1+avg-conv16k1"},
    "growing_nachos": {"exit_heads": "growing"},
    # an ir layer whose input width equals its output width takes the residual path
    "ir_residual": {"branch": {"depths": [1, 2], "layer_types": ["ir"], "widths": [8, 16], "kernels": [3, 5],
                               "pools": ["none", "avg"], "ir_expansion": 2}},
    # an ir layer without expand conv, next to dwsep, with 1x1 and 7x7 kernels and three depths
    "ir_e1_deep": {"branch": {"depths": [1, 3], "layer_types": ["ir", "dwsep"], "widths": [4, 24],
                              "kernels": [1, 3, 7], "pools": ["none", "max"], "ir_expansion": 1}},
}


def _space(which: str):
    return make_space("tiny", **HEAD_SPACES[which])


@pytest.mark.parametrize("which", list(HEAD_SPACES))
def test_inherited_heads_compute_what_the_supernet_heads_compute(which):
    space = _space(which)
    torch.manual_seed(0)
    supernet = Supernet(space.config, 5, 1, exits=True)
    randomise_batchnorm(supernet)
    supernet.eval()
    rng = np.random.default_rng(3)
    genomes = [space.largest(with_exits=True), space.smallest()] + [space.sample(rng) for _ in range(12)]
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    n_exits_seen, residual_seen = 0, False
    for g in genomes:
        model = inherit_weights(build_model(g, 5, 1), supernet).eval()
        with torch.no_grad():
            expected = supernet.forward_exits(x, g.stages, genome_heads(g))
            got = model(x)
        assert len(got) == len(expected) == len(g.active_exits) + 1
        for k, (a, b) in enumerate(zip(got, expected)):
            assert b.abs().max() > 1e-3
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m: f"{g.key} exit {k}: {m}")
        n_exits_seen += len(g.active_exits)
        residual_seen |= any(l.type == "ir" and l.width == w for e in g.active_exits
                             for l, w in zip(e.layers, [space.config.stages[e.stage - 1].width]
                                             + [l.width for l in e.layers]))
    assert n_exits_seen >= 10
    if which == "ir_residual":
        assert residual_seen


def test_inherited_heads_agree_in_training_mode_and_update_the_same_statistics():
    """Batch statistics in the forward, and the supernet's sliced running statistics updated in place exactly
    like the extracted candidate's (re-inheriting after the step gives the candidate's statistics)."""
    space = _space("searched")
    torch.manual_seed(0)
    supernet = Supernet(space.config, 5, 1, exits=True)
    randomise_batchnorm(supernet)
    g = space.parse("k3e2-k5e3/k5e2/k3e3-k3e2/k5e2/k3e4-k5e2|t0.8:avg-ir8k5+dwsep16k3|off|t0.6:conv8k3|off")
    model = inherit_weights(build_model(g, 5, 1), supernet).train()
    supernet.train()
    x = torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    expected = supernet.forward_exits(x, g.stages, genome_heads(g))
    got = model(x)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    again = inherit_weights(build_model(g, 5, 1), supernet)
    for (name, a), b in zip(model.heads.state_dict().items(), again.heads.state_dict().values()):
        if "running" in name:
            assert not torch.equal(a, torch.zeros_like(a)) and torch.allclose(a, b, rtol=1e-5, atol=1e-6), name


def test_head_slices_are_first_channels_and_kernel_centre():
    space = make_space("tiny")  # branch widths 8/16, kernels 3/5
    torch.manual_seed(0)
    supernet = Supernet(space.config, 5, 1, exits=True)
    g = space.parse("k3e2/k3e2/k3e2/k3e2/k3e2|off|t0.8:conv8k3+max-dwsep16k5|off|off")
    model = inherit_weights(build_model(g, 5, 1), supernet)
    head, src = model.heads[0], supernet.exit_heads["2"]
    conv = head[0][0].weight                      # conv8k3 on the 16 channels of stage 2
    assert conv.shape == (8, 16, 3, 3)
    assert torch.equal(conv, src.slots[0].conv[0].weight[:8, :, 1:4, 1:4])
    dw, pw = head[2][0].weight, head[3][0].weight  # after the max pooling: dwsep16k5 on the 8 channels
    assert torch.equal(dw, src.slots[1].dwsep[0][0].weight[:8])
    assert torch.equal(pw, src.slots[1].dwsep[1][0].weight[:16, :8])
    fc = head[4].fc
    assert torch.equal(fc.weight, src.classifiers["2"].weight[:, :16])
    assert torch.equal(fc.bias, src.classifiers["2"].bias)


def test_heads_outside_the_trained_choices_are_refused():
    space = make_space("tiny")
    torch.manual_seed(0)
    supernet = Supernet(space.config, 5, 1, exits=True)
    wider = make_space("tiny", branch={"widths": [8, 16, 32]})
    g = wider.parse("k3e2/k3e2/k3e2/k3e2/k3e2|t0.8:conv32k3|off|off|off")
    with pytest.raises(ValueError, match="exit choices differ"):
        inherit_weights(build_model(g, 5, 1), supernet)
    with pytest.raises(ValueError, match="exit after stage 1"):
        check_head(head_choices(space.config, 1), (BranchLayer("conv", 32, 3),), 1)
    # without joint heads the same candidate inherits its backbone and keeps fresh heads
    plain = Supernet(space.config, 5, 1)
    inherit_weights(build_model(g, 5, 1), plain)
    with pytest.raises(ValueError, match="no exit heads"):
        plain.forward_exits(torch.zeros(1, 1, 8, 8), g.stages, genome_heads(g))


def test_sampled_heads_cover_every_exit_and_their_extremes():
    space = make_space("tiny")
    rng = np.random.default_rng(0)
    big, small = sample_heads(space, rng, "largest"), sample_heads(space, rng, "smallest")
    assert sorted(big) == sorted(small) == list(space.config.exit_stages)
    for layers in big.values():
        assert len(layers) == 2 and all(l.width == 16 and l.kernel == 5 and l.pool == "none" for l in layers)
    for layers in small.values():
        assert len(layers) == 1 and layers[0].width == 8 and layers[0].kernel == 3
    types = {l.type for _ in range(20) for (heads,) in sandwich_heads(space, rng, 1)
             for ls in heads.values() for l in ls}
    assert types == {"conv", "dwsep", "ir"}  # types have no order: the extremes draw them too
    fixed = make_space("tiny", exit_heads="conv16k1+avg-conv16k1")
    for size in ("largest", "smallest", "random"):
        assert all(ls == tuple(replace(l) for l in (BranchLayer("conv", 16, 1), BranchLayer("conv", 16, 1, "avg")))
                   for ls in sample_heads(fixed, rng, size).values())


def _grads(supernet, x, y, backbones, heads, cfg):
    supernet.zero_grad(set_to_none=True)
    loss = sandwich_step(supernet, x, y, backbones, cfg, use_amp=False, heads=heads)
    return loss, {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                  for n, p in supernet.named_parameters()}


def test_joint_sandwich_step_is_the_weighted_exit_loss_by_hand():
    space, supernet, x, y = make_tiny_batch(exits=True)
    rng = np.random.default_rng(1)
    backbones = sandwich_backbones(space, rng, 1)
    heads = sandwich_heads(space, rng, 1)
    cfg = SupernetSettings(random_subnets=1, distill=True, label_smoothing=0.1, exit_weights="linear")
    loss, got = _grads(supernet, x, y, backbones, heads, cfg)
    # by hand: the largest subnet's weighted CE over its 4 exits and final classifier, then each other subnet's
    # weighted KL of every output to the largest subnet's final soft predictions
    supernet.zero_grad(set_to_none=True)
    w = exit_loss_weights(5, "linear")
    assert w == [0.2, 0.4, 0.6, 0.8, 1.0]
    teacher = supernet.forward_exits(x, backbones[0], heads[0][0])
    total = sum(wk * F.cross_entropy(o, y, label_smoothing=0.1) for wk, o in zip(w, teacher))
    soft = teacher[-1].detach().softmax(-1)
    for b, (h,) in zip(backbones[1:], heads[1:]):
        outs = supernet.forward_exits(x, b, h)
        total = total + sum(wk * (soft * (soft.log() - o.log_softmax(-1))).sum(-1).mean() for wk, o in zip(w, outs))
    total.backward()
    assert loss.item() == pytest.approx(F.cross_entropy(teacher[-1], y, label_smoothing=0.1).item(), rel=1e-5)
    for n, p in supernet.named_parameters():
        torch.testing.assert_close(got[n], p.grad if p.grad is not None else torch.zeros_like(p), rtol=1e-4,
                                   atol=1e-6, msg=lambda m: f"{n}: {m}")
    # every exit position's head got a gradient, and the largest heads' outer kernel ring did (only they use it)
    for s in space.config.exit_stages:
        head = f"exit_heads.{s}."
        assert any(got[n].abs().sum() > 0 for n in got if n.startswith(head + "slots.1."))
        assert got[head + "classifiers.2.weight"].abs().sum() > 0
        assert got[head + "classifiers.1.weight"].abs().sum() > 0  # the smallest subnet's one-layer heads


def test_fresh_supernet_identity_is_what_it_was_before_joint_heads(small_synthetic):
    """Caches trained before supernet.exits existed must keep their keys: a fresh identity holds exactly the
    fields it held then, and none of the joint ones."""
    space = make_space("tiny")
    identity = supernet_identity(small_synthetic, space, SupernetSettings(), TrainerSettings(exit_weights="linear"), 0)
    assert set(identity) == {"format", "data", "space", "supernet", "trainer", "seed"}
    assert set(identity["supernet"]) == {"epochs", "batch_size", "lr", "weight_decay", "label_smoothing",
                                         "random_subnets", "distill"}
    assert set(identity["trainer"]) == {"optimizer", "momentum", "nesterov", "crop_padding", "amp"}
    joint = supernet_identity(small_synthetic, space, SupernetSettings(exits="joint", exit_weights=(0.5, 1)),
                              TrainerSettings(exit_weights="linear"), 0)
    assert joint["supernet"]["exits"] == "joint" and joint["supernet"]["exit_weights"] == [0.5, 1.0]
    assert "exit_weights" not in joint["trainer"]  # candidates' fine-tuning weights do not shape the supernet
    assert joint["exit_space"]["stage_widths"] == [8, 16, 16, 24, 32]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: bf16 autocast and channels_last on a GPU")
def test_joint_sandwich_step_on_cuda_with_bf16_and_channels_last():
    space = make_space("tiny")
    dev = torch.device("cuda")
    torch.manual_seed(0)
    supernet = Supernet(space.config, 3, 1, exits=True).to(dev).to(memory_format=torch.channels_last).train()
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(16, 1, 16, 16, generator=gen).to(dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (16,), generator=gen).to(dev)
    rng = np.random.default_rng(0)
    loss = sandwich_step(supernet, x, y, sandwich_backbones(space, rng, 2), SupernetSettings(), True,
                         sandwich_heads(space, rng, 2))
    assert torch.isfinite(loss)
    grads = [p.grad for n, p in supernet.named_parameters() if n.startswith("exit_heads.") and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_joint_supernet_has_its_own_cache_key_and_fresh_keys_stay(small_synthetic, tmp_path):
    data, space = small_synthetic, make_space("tiny")
    trainer = TrainerSettings(device="cpu", crop_padding=1)
    cfg = SupernetSettings(epochs=1, batch_size=48, random_subnets=0, cache_dir=str(tmp_path))

    def key(cfg=cfg, space=space, trainer=trainer):
        return prepare_supernet(space, data, cfg, trainer, CPU, progress=False)[1]

    fresh = key()
    joint = key(replace(cfg, exits="joint"))
    assert fresh.exits == "fresh" and joint.exits == "joint" and joint.key != fresh.key
    stored = torch.load(joint.path, weights_only=False)
    assert "exit_space" in stored["identity"] and "exits" not in torch.load(fresh.path, weights_only=False)[
        "identity"]["supernet"]  # a fresh supernet's key is what it was before the option existed
    assert any(k.startswith("exit_heads.") for k in stored["state_dict"])
    again = key(replace(cfg, exits="joint"))
    assert again.cached and again.key == joint.key and again.exits == "joint"
    # exit choices and supernet.exit_weights shape joint heads, so they change its key, not fresh's;
    # the candidates' own exit weights (trainer.exit_weights) change neither
    narrow = make_space("tiny", branch={"widths": [8]})
    assert key(space=narrow).key == fresh.key
    assert key(replace(cfg, exits="joint"), space=narrow).key not in (joint.key, fresh.key)
    assert key(replace(cfg, exit_weights="linear")).key == fresh.key
    assert key(replace(cfg, exits="joint", exit_weights="linear")).key not in (joint.key, fresh.key)
    assert key(replace(cfg, exits="joint"), trainer=replace(trainer, exit_weights="linear")).key == joint.key


def test_bad_exits_mode_names_the_field():
    with pytest.raises(ValueError, match=r"supernet\.exits: expected fresh or joint"):
        SupernetSettings.from_dict({"exits": "shared"})
    with pytest.raises(ValueError, match=r"supernet\.exit_weights: unknown scheme 'deep'"):
        SupernetSettings.from_dict({"exit_weights": "deep"})
    with pytest.raises(ValueError, match=r"supernet\.exit_weights: a list must hold non-negative"):
        SupernetSettings.from_dict({"exit_weights": [-0.2, 1.0]})


def test_untuned_candidate_exits_score_the_inherited_supernet_heads(small_synthetic):
    """With joint heads and no fine-tuning, a candidate's early exit is the recalibrated supernet head."""
    data = small_synthetic
    space = make_space("tiny")
    torch.manual_seed(0)
    supernet = Supernet(space.config, data.num_classes, data.in_channels, exits=True)
    randomise_batchnorm(supernet)
    trainer = TrainerSettings(epochs=0, init="supernet", device="cpu", bn_calibration_images=64, eval_batch_size=256)
    ev = CandidateEvaluator(data, trainer, SearchSettings(exit_metric="max_softmax"), CPU, supernet=supernet)
    g = space.parse("k3e2-k5e3/k5e2/k3e4/k3e2-k3e2/k5e3|t0.8:avg-ir16k5|off|t0.6:conv8k3+dwsep16k3|off")
    ev.evaluate(g)
    net = ev._networks[g.network_key]
    reference = inherit_weights(build_model(g, data.num_classes, data.in_channels), supernet)
    recalibrate_batchnorm(reference, data, CPU, 64)
    logits = predict_logits(reference, data.val, data.mean, data.std, CPU)
    for k in range(3):
        np.testing.assert_allclose(net.confidences[k], confidence(logits[k], "max_softmax"), rtol=1e-5, atol=1e-6)
    # the untuned early exit is the supernet's head, not a fresh one: a fresh supernet head differs
    fresh = build_model(g, data.num_classes, data.in_channels)
    inherit_weights(fresh, Supernet(space.config, data.num_classes, data.in_channels))
    recalibrate_batchnorm(fresh, data, CPU, 64)
    assert np.abs(confidence(predict_logits(fresh, data.val, data.mean, data.std, CPU)[0], "max_softmax")
                  - net.confidences[0]).max() > 1e-3


def test_search_with_joint_heads_records_them(small_synthetic, tmp_path):
    space = make_space("tiny")
    trainer = TrainerSettings(epochs=0, batch_size=48, device="cpu", crop_padding=1, init="supernet",
                            bn_calibration_images=64, eval_batch_size=256)
    settings = SearchSettings(pop_size=2, generations=1, exit_metric="max_softmax")
    sn_cfg = SupernetSettings(epochs=2, batch_size=48, random_subnets=1, exits="joint", cache_dir=str(tmp_path / "c"))
    result = run_search(SearchJob(space, small_synthetic, trainer, settings, CPU, tmp_path / "run", seed=0,
                                  progress=False, supernet=sn_cfg))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["supernet"]["exit_heads"] == "joint" and summary["failed"] == 0
    assert Path(summary["supernet"]["path"]).is_file()
    assert all(e.status == "ok" for e in result.evaluations)


def test_head_samples_cover_every_type_in_every_slot():
    space = make_space("tiny")
    rng = np.random.default_rng(3)
    for size in ("largest", "smallest", "random"):
        sets = sample_head_set(space, rng, size, 3)
        assert len(sets) == 3
        for stage in space.config.exit_stages:
            firsts = {heads[stage][0].type for heads in sets}
            assert firsts == {"conv", "dwsep", "ir"}, (size, stage)  # three samples, three types, no repeat
            if size == "largest":
                assert all(len(h[stage]) == 2 and all(l.width == 16 and l.kernel == 5 for l in h[stage])
                           for h in sets)
    # one sample draws as before the option existed, so seeded supernets are unchanged
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    assert sample_head_set(space, a, "random", 1) == [sample_heads(space, b, "random")]


def test_head_samples_share_their_exit_weight_and_the_backbone_pass():
    """Two identical head sets per subnet: each carries half its exit's weight, so the step's gradients are those
    of one set; two different sets: the early-exit loss is the mean of each set's, the final counted once."""
    space, supernet, x, y = make_tiny_batch(exits=True)
    rng = np.random.default_rng(2)
    backbones = sandwich_backbones(space, rng, 1)
    one = sandwich_heads(space, rng, 1)
    cfg = SupernetSettings(random_subnets=1, distill=False, label_smoothing=0.0, exit_weights=[0.5, 1.0], head_samples=2)
    loss1, g1 = _grads(supernet, x, y, backbones, one, cfg)
    loss2, g2 = _grads(supernet, x, y, backbones, [[h, h] for (h,) in one], cfg)
    assert loss1.item() == pytest.approx(loss2.item())
    for n in g1:
        torch.testing.assert_close(g2[n], g1[n], rtol=1e-4, atol=1e-6, msg=lambda m: f"{n}: {m}")
    two = sandwich_heads(space, rng, 1, samples=2)
    _, got = _grads(supernet, x, y, backbones, two, cfg)
    supernet.zero_grad(set_to_none=True)
    total = 0
    for b, sets in zip(backbones, two):
        early, final = supernet.forward_head_sets(x, b, sets)
        outs = [supernet.forward_exits(x, b, h) for h in sets]
        torch.testing.assert_close(early[1], outs[1][:-1])  # one backbone pass gives what two would
        total = total + F.cross_entropy(final, y) + sum(
            0.5 * 0.5 * F.cross_entropy(o, y) for outs_k in outs for o in outs_k[:-1])
    total.backward()
    for n, p in supernet.named_parameters():
        torch.testing.assert_close(got[n], p.grad if p.grad is not None else torch.zeros_like(p), rtol=1e-4,
                                   atol=1e-6, msg=lambda m: f"{n}: {m}")


def test_head_samples_enter_the_joint_key_only_when_not_one(small_synthetic):
    space = make_space("tiny")
    joint = SupernetSettings(exits="joint")
    base = supernet_identity(small_synthetic, space, joint, TrainerSettings(), 0)
    assert "head_samples" not in base["supernet"]  # joint supernets cached before the option keep their keys
    three = supernet_identity(small_synthetic, space, replace(joint, head_samples=3), TrainerSettings(), 0)
    assert three["supernet"]["head_samples"] == 3
    with pytest.raises(ValueError, match=r"supernet\.head_samples: 3 head samples need trained heads; set "
                                         r"supernet\.exits=joint"):
        SupernetSettings.from_dict({"head_samples": 3})
    with pytest.raises(ValueError, match=r"supernet\.head_samples"):
        SupernetSettings.from_dict({"exits": "joint", "head_samples": 0})
