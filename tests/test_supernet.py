"""The weight-sharing supernet: exact subnet extraction, sandwich training, on-disk cache,
BatchNorm recalibration, and candidates that inherit supernet weights in the evaluator and in a search."""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from omegaconf import OmegaConf
from torch import nn

import aebnas.search.training as training_module
import aebnas.train.supernet as supernet_module
from aebnas.data import ArraySplit, load_dataset
from aebnas.nn import build_model
from aebnas.nn.blocks import se_channels
from aebnas.nn.supernet import Supernet, backbone_identity, backbone_modules, inherit_weights
from aebnas.search import SearchJob, SearchSettings, run_search
from aebnas.search.evaluator import CandidateEvaluator
from aebnas.exits import confidence
from aebnas.space import SearchSpace, SpaceSettings
from aebnas.train import TrainerSettings, predict_logits
from aebnas.train.supernet import SupernetSettings, prepare_supernet, sandwich_backbones, sandwich_step
from aebnas.train.trainer import recalibrate_batchnorm
from tests.conftest import ROOT, compose_config

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: fast on a shared 2-core runner, and CPU results are bitwise reproducible within a test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def space_dict(name: str, **changes) -> dict:
    return {**yaml.safe_load((ROOT / "aebnas" / "conf" / "space" / f"{name}.yaml").read_text()), **changes}


def make_space(name: str, **changes) -> SearchSpace:
    return SearchSpace(SpaceSettings.from_dict(space_dict(name, **changes)))


@torch.no_grad()
def randomise_batchnorm(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters, so a wrong BN slice cannot go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            n = bn.num_features
            bn.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
            bn.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            bn.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(n, generator=gen) * 0.3)


def all_blocks(genome):
    return [b for stage in genome.stages for b in stage]


# ---------------------------------------------------------------------------------------------------------------
# 1. an inherited subnet computes exactly what the supernet computes for that backbone
# ---------------------------------------------------------------------------------------------------------------

SPACES = {
    "tiny": dict(name="tiny"),
    "mbv3_32_se": dict(name="mbv3_32", squeeze_excite=True),
    # expansion 1 (an MBConv without expand conv) next to sliced ones, SE on, a 7x7 largest kernel
    "tiny_e1_se": dict(name="tiny", expansions=[1, 3], kernels=[3, 5, 7], squeeze_excite=True),
}


@pytest.mark.parametrize("which", list(SPACES))
def test_inherited_subnet_equals_supernet_slice(which):
    cfg = dict(SPACES[which])
    space = make_space(cfg.pop("name"), **cfg)
    in_channels, num_classes = 3, 10
    torch.manual_seed(0)
    supernet = Supernet(space.config, num_classes, in_channels)
    randomise_batchnorm(supernet)
    supernet.eval()
    rng = np.random.default_rng(1)
    genomes = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(3)]
    if which == "tiny_e1_se":
        assert any(b.expansion == 1 for g in genomes for b in all_blocks(g))
        assert any(b.expansion == 3 for g in genomes[2:] for b in all_blocks(g))
    x = torch.randn(2, in_channels, 16, 16, generator=torch.Generator().manual_seed(2))
    for g in genomes:
        candidate = inherit_weights(build_model(g, num_classes, in_channels), supernet).eval()
        with torch.no_grad():
            expected = supernet(x, g.stages)
            got = candidate(x)[-1]
            static = candidate.forward_static(x)
        assert expected.abs().max() > 1e-2  # a real signal, not a vanishing one
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5, msg=lambda m: f"{g.key}: {m}")
        torch.testing.assert_close(static, expected, rtol=1e-5, atol=1e-5)


def test_inherited_subnet_equals_supernet_slice_in_training_mode():
    """Train-mode forward (batch statistics) agrees too, and the supernet's running statistics of a
    sliced BatchNorm are updated in place exactly like the extracted candidate's."""
    space = make_space("tiny")
    torch.manual_seed(0)
    supernet = Supernet(space.config, 3, 1)
    randomise_batchnorm(supernet)
    g = space.parse("k3e2-k5e3/k5e2/k3e3-k3e2/k5e2/k3e4-k5e2|off|off|off|off")
    candidate = inherit_weights(build_model(g, 3, 1), supernet).train()
    supernet.train()
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(candidate(x)[-1], supernet(x, g.stages), rtol=1e-5, atol=1e-5)
    _, stages = backbone_modules(candidate)
    dst = stages[0][1].body[0][1]          # stage 1, block 2 (k5e3): expand BN, 8*3 of 8*4 channels
    src = supernet.stages[0][1].expand[1]
    assert dst.num_features == 24 < src.num_features == 32
    torch.testing.assert_close(dst.running_mean, src.running_mean[:24], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dst.running_var, src.running_var[:24], rtol=1e-5, atol=1e-6)
    snapshot = supernet.state_dict()
    fresh = Supernet(space.config, 3, 1)
    randomise_batchnorm(fresh)
    # the unused channels keep their (randomised) statistics
    torch.testing.assert_close(snapshot["stages.0.1.expand.1.running_mean"][24:],
                               fresh.stages[0][1].expand[1].running_mean[24:])


def test_kernel_centre_and_first_expansion_channels_are_inherited():
    space = make_space("mbv3_32", squeeze_excite=True)  # kernels 3/5/7, expansions 3/4/6
    torch.manual_seed(0)
    supernet = Supernet(space.config, 10, 3)
    randomise_batchnorm(supernet)
    g = space.parse("k3e3-k5e4/k7e6-k3e3/k3e3-k3e3/k3e3-k3e3/k3e3-k3e3|off|off|off|off")
    candidate = inherit_weights(build_model(g, 10, 3), supernet)
    _, stages = backbone_modules(candidate)

    b0, s0 = stages[0][0].body, supernet.stages[0][0]  # k3e3 from the stem's 16 channels: hidden 48 of 96
    assert s0.depthwise[0].weight.shape == (96, 1, 7, 7)
    assert torch.equal(b0[1][0].weight, s0.depthwise[0].weight[:48, :, 2:5, 2:5])
    assert torch.equal(b0[0][0].weight, s0.expand[0].weight[:48])
    assert torch.equal(b0[1][1].weight, s0.depthwise[1].weight[:48])
    assert torch.equal(b0[1][1].running_var, s0.depthwise[1].running_var[:48])
    mid = se_channels(48)
    assert torch.equal(b0[2].reduce.weight, s0.se.reduce.weight[:mid, :48])
    assert torch.equal(b0[2].expand.weight, s0.se.expand.weight[:48, :mid])
    assert torch.equal(b0[2].expand.bias, s0.se.expand.bias[:48])
    assert torch.equal(b0[3][0].weight, s0.project[0].weight[:, :48])
    assert torch.equal(b0[3][1].running_mean, s0.project[1].running_mean)  # project BN: output width, whole

    b1, s1 = stages[0][1].body, supernet.stages[0][1]  # k5e4 from 24 channels: hidden 96 of 144
    assert torch.equal(b1[1][0].weight, s1.depthwise[0].weight[:96, :, 1:6, 1:6])
    assert torch.equal(b1[0][0].weight, s1.expand[0].weight[:96])

    b2, s2 = stages[1][0].body, supernet.stages[1][0]  # k7e6: the whole largest block
    assert torch.equal(b2[1][0].weight, s2.depthwise[0].weight)
    assert torch.equal(b2[0][0].weight, s2.expand[0].weight)
    assert len(stages[1]) == 2 and len(supernet.stages[1]) == 4


# ---------------------------------------------------------------------------------------------------------------
# 2. exit heads start fresh, the final head is inherited; incompatible candidates are refused
# ---------------------------------------------------------------------------------------------------------------

def test_exit_heads_stay_fresh_and_final_head_is_inherited():
    space = make_space("tiny")
    torch.manual_seed(0)
    supernet = Supernet(space.config, 3, 1)
    g = space.parse("k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:conv16k3|off|t0.9:conv16k3|off")
    model = build_model(g, 3, 1)
    assert model.n_exits == 3
    before = [copy.deepcopy(h.state_dict()) for h in model.heads]
    inherit_weights(model, supernet)
    for head, old in zip(model.heads[:-1], before[:-1]):
        for k, v in head.state_dict().items():
            assert torch.equal(v, old[k]), k
    final = model.heads[-1].state_dict()
    assert not torch.equal(final["1.fc.weight"], before[-1]["1.fc.weight"])
    for k, v in supernet.final_head.state_dict().items():
        assert torch.equal(final[k], v), k


def test_incompatible_candidates_are_refused():
    space = make_space("tiny")
    supernet = Supernet(space.config, 3, 1)
    g = space.parse("k3e2/k3e2/k3e2/k3e2/k3e2|off|off|off|off")
    with pytest.raises(ValueError, match="classes"):
        inherit_weights(build_model(g, 4, 1), supernet)
    with pytest.raises(ValueError, match="channels"):
        inherit_weights(build_model(g, 3, 3), supernet)
    other = make_space("tiny", kernels=[3, 5, 7])
    with pytest.raises(ValueError, match="backbone space"):
        inherit_weights(build_model(other.parse(g.key), 3, 1), supernet)
    wider = make_space("tiny", final_head_channels=32)
    with pytest.raises(ValueError, match="backbone space"):
        inherit_weights(build_model(wider.parse(g.key), 3, 1), supernet)
    # exit choices and thresholds are no part of the backbone: such a candidate inherits fine
    exits = make_space("tiny", exit_stages=[2], thresholds=[0.8])
    assert backbone_identity(exits.config) == backbone_identity(space.config)
    h = exits.parse("k3e2/k3e2/k3e2/k3e2/k3e2|t0.8:conv8k3")
    model = inherit_weights(build_model(h, 3, 1), supernet).eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[-1], supernet.eval()(x, h.stages), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# 3. sandwich rule
# ---------------------------------------------------------------------------------------------------------------

def test_sandwich_backbones_largest_smallest_then_random():
    space = make_space("tiny")
    c = space.config
    subnets = sandwich_backbones(space, np.random.default_rng(0), 3)
    assert len(subnets) == 5
    assert subnets[0] == space.largest().stages
    assert subnets[1] == space.smallest().stages
    assert all(len(s) == max(c.depths) and {b.kernel for b in s} == {max(c.kernels)}
               and {b.expansion for b in s} == {max(c.expansions)} for s in subnets[0])
    assert all(len(s) == min(c.depths) and s[0] == subnets[1][0][0] for s in subnets[1])
    for backbone in subnets[2:]:
        assert len(backbone) == c.n_stages
        for stage in backbone:
            assert len(stage) in c.depths
            assert all(b.kernel in c.kernels and b.expansion in c.expansions for b in stage)
    assert len({tuple(map(tuple, b)) for b in subnets[2:]}) == 3  # random draws, not copies
    assert sandwich_backbones(space, np.random.default_rng(0), 3) == subnets  # reproducible from the rng
    assert len(sandwich_backbones(space, np.random.default_rng(0), 0)) == 2


def _grads(supernet, x, y, backbones, cfg) -> dict[str, torch.Tensor]:
    supernet.zero_grad(set_to_none=True)
    sandwich_step(supernet, x, y, backbones, cfg, use_amp=False)
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in supernet.named_parameters()}


@pytest.fixture()
def tiny_supernet_batch():
    return make_tiny_batch()


def make_tiny_batch(exits: bool = False):
    """The tiny space, its supernet (seeded, in training mode) and one seeded batch of 8 images, 3 classes."""
    space = make_space("tiny")
    torch.manual_seed(0)
    supernet = Supernet(space.config, 3, 1, exits=exits).train()
    gen = torch.Generator().manual_seed(5)
    # 16x16: the last stages still see 4x4 maps, where a 5x5 kernel's outer ring touches real pixels
    x = torch.randn(8, 1, 16, 16, generator=gen)
    y = torch.randint(0, 3, (8,), generator=gen)
    return space, supernet, x, y


def test_sandwich_step_trains_largest_and_smallest_subnets(tiny_supernet_batch):
    space, supernet, x, y = tiny_supernet_batch
    cfg = SupernetSettings(random_subnets=0, distill=True)
    largest, smallest = space.largest().stages, space.smallest().stages
    full = _grads(supernet, x, y, [largest, smallest], cfg)
    teacher = _grads(supernet, x, y, [largest], cfg)
    small = {n: full[n] - teacher[n] for n in full}  # what the smallest subnet's pass added

    def nonzero(t):
        return bool(t.abs().sum() > 0)

    # parameters only the largest subnet uses: second block of every stage (depth 2 > min depth 1),
    # the outer ring of the 5x5 depthwise kernels, expansion channels beyond the smallest's e2
    for s in range(space.config.n_stages):
        second = [n for n in full if n.startswith(f"stages.{s}.1.")]
        assert second and all(nonzero(full[n]) for n in second), second
        assert all(not nonzero(small[n]) for n in second)
        w = full[f"stages.{s}.0.depthwise.0.weight"]
        ring = torch.ones(5, 5, dtype=torch.bool)
        ring[1:4, 1:4] = False
        assert nonzero(w[:, :, ring])
        assert not nonzero(small[f"stages.{s}.0.depthwise.0.weight"][:, :, ring])
        c_in = supernet.stages[s][0].c_in
        assert nonzero(full[f"stages.{s}.0.expand.0.weight"][2 * c_in:])
        assert not nonzero(small[f"stages.{s}.0.expand.0.weight"][2 * c_in:])
        assert not nonzero(small[f"stages.{s}.0.depthwise.0.weight"][2 * c_in:])
        # ... and what the smallest subnet uses got its own gradient
        assert nonzero(small[f"stages.{s}.0.depthwise.0.weight"][:2 * c_in, :, 1:4, 1:4])
        assert nonzero(small[f"stages.{s}.0.expand.0.weight"][:2 * c_in])
        assert nonzero(small[f"stages.{s}.0.project.0.weight"][:, :2 * c_in])
    assert nonzero(small["stem.0.weight"]) and nonzero(small["final_head.1.fc.weight"])


def test_sandwich_random_subnets_add_their_own_gradients(tiny_supernet_batch):
    space, supernet, x, y = tiny_supernet_batch
    cfg = SupernetSettings(random_subnets=1, distill=True)
    largest, smallest = space.largest().stages, space.smallest().stages
    medium = space.parse("k3e3-k3e3/k3e3-k3e3/k3e3-k3e3/k3e3-k3e3/k3e3-k3e3|off|off|off|off").stages
    three = _grads(supernet, x, y, [largest, smallest, medium], cfg)
    two = _grads(supernet, x, y, [largest, smallest], cfg)
    extra = {n: three[n] - two[n] for n in three}
    w = extra["stages.1.1.expand.0.weight"]   # block 2 of stage 2 (smallest has depth 1): e3 uses 48 of 16*4 rows
    assert w.shape[0] == 64 and bool(w[:48].abs().sum() > 0) and not bool(w[48:].abs().sum() > 0)


def test_distillation_is_kl_to_the_largest_subnets_soft_predictions(tiny_supernet_batch):
    space, supernet, x, y = tiny_supernet_batch
    cfg = SupernetSettings(random_subnets=0, distill=True, label_smoothing=0.1)
    largest, smallest = space.largest().stages, space.smallest().stages
    full = _grads(supernet, x, y, [largest, smallest], cfg)
    teacher = _grads(supernet, x, y, [largest], cfg)
    # by hand: CE of the largest + KL(largest's softmax || smallest's log-softmax), batch mean
    supernet.zero_grad(set_to_none=True)
    t = supernet(x, largest)
    loss = F.cross_entropy(t, y, label_smoothing=0.1)
    s = supernet(x, smallest)
    kl = (t.detach().softmax(-1) * (t.detach().log_softmax(-1) - s.log_softmax(-1))).sum(-1).mean()
    assert kl > 1e-4
    (loss + kl).backward()
    for n, p in supernet.named_parameters():
        torch.testing.assert_close(full[n], p.grad if p.grad is not None else torch.zeros_like(p),
                                   rtol=1e-4, atol=1e-6, msg=lambda m: f"{n}: {m}")
    # the distilled subnet's gradient does not depend on the labels; without distillation it does
    y2 = (y + 1) % 3
    small = {n: full[n] - teacher[n] for n in full}
    small2 = {n: a - b for (n, a), b in zip(_grads(supernet, x, y2, [largest, smallest], cfg).items(),
                                            _grads(supernet, x, y2, [largest], cfg).values())}
    for n in small:
        torch.testing.assert_close(small[n], small2[n], rtol=1e-4, atol=1e-6)
    ce = replace(cfg, distill=False)
    a = _grads(supernet, x, y, [largest, smallest], ce)["stem.0.weight"] - teacher["stem.0.weight"]
    b = (_grads(supernet, x, y2, [largest, smallest], ce)["stem.0.weight"]
         - _grads(supernet, x, y2, [largest], ce)["stem.0.weight"])
    assert (a - b).abs().max() > 1e-4


def test_distillation_of_an_identical_subnet_adds_nothing():
    """A space whose smallest subnet is its largest: the student equals the teacher, so the KL term and its
    gradient are zero; trained on labels instead (distill=False) the same pass doubles the gradient."""
    space = make_space("tiny", depths=[2], kernels=[3], expansions=[2])
    assert space.largest().stages == space.smallest().stages
    torch.manual_seed(0)
    supernet = Supernet(space.config, 3, 1).train()
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    b = space.largest().stages
    cfg = SupernetSettings(random_subnets=0, distill=True, label_smoothing=0.0)
    teacher = _grads(supernet, x, y, [b], cfg)
    distilled = _grads(supernet, x, y, [b, b], cfg)
    labelled = _grads(supernet, x, y, [b, b], replace(cfg, distill=False))
    assert max(g.abs().max() for g in teacher.values()) > 1e-3
    for n in teacher:
        torch.testing.assert_close(distilled[n], teacher[n], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(labelled[n], 2 * teacher[n], rtol=1e-4, atol=1e-7)
    supernet.zero_grad()
    loss = sandwich_step(supernet, x, y, [b, b], cfg, use_amp=False)
    with torch.no_grad():
        assert loss.item() == pytest.approx(F.cross_entropy(supernet(x, b), y).item(), rel=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# 4. on-disk cache
# ---------------------------------------------------------------------------------------------------------------

def _state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def test_supernet_cache_reuse_and_invalidation(small_synthetic, tmp_path, monkeypatch):
    data, space = small_synthetic, make_space("tiny")
    cfg = SupernetSettings(epochs=1, batch_size=32, random_subnets=1, cache_dir=str(tmp_path))
    trainer = TrainerSettings(device="cpu", crop_padding=1)
    calls = []
    real_train = supernet_module.train_supernet

    def counting(*args, **kwargs):
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(supernet_module, "train_supernet", counting)

    def prepare(space=space, data=data, cfg=cfg, seed=0):
        return prepare_supernet(space, data, cfg, trainer, CPU, seed=seed, progress=False)

    first, info = prepare()
    assert not info.cached and len(calls) == 1
    assert Path(info.path).is_file() and Path(info.path).parent == tmp_path and info.key in Path(info.path).name
    assert info.steps == 3 and np.isfinite(info.final_loss) and info.train_seconds > 0
    stored = torch.load(info.path, weights_only=False)
    assert stored["state_dict"].keys() == first.state_dict().keys()
    assert all(torch.equal(v, first.state_dict()[k]) for k, v in stored["state_dict"].items())

    def boom(*args, **kwargs):
        raise AssertionError("a cached supernet must not be trained again")

    with monkeypatch.context() as m:
        m.setattr(supernet_module, "train_supernet", boom)
        again, info2 = prepare()
        assert info2.cached and info2.key == info.key and info2.path == info.path
        assert info2.train_seconds == info.train_seconds and info2.steps == info.steps
        assert _state_equal(again, first)
        # exit choices and thresholds are not part of the key: the same supernet serves that space
        exits_only = make_space("tiny", exit_stages=[2, 3], thresholds=[0.7, 0.9], branch={"widths": [8]})
        reused, info3 = prepare(space=exits_only)
        assert info3.cached and info3.key == info.key and _state_equal(reused, first)

    changed = {
        "epochs": dict(cfg=replace(cfg, epochs=2)),
        "distill": dict(cfg=replace(cfg, distill=False)),
        "seed": dict(seed=1),
        "fewer images": dict(data=load_dataset({"name": "synthetic", "num_classes": 3, "num_samples": 150,
                                                "resolution": 8, "channels": 1, "val_size": 0.2, "test_size": 0.2,
                                                "seed": 0, "max_train_samples": 80})),
        "other labels": dict(data=replace(data, train=ArraySplit(data.train.x, (data.train.y + 1) % 3))),
        "kernels": dict(space=make_space("tiny", kernels=[3])),
        "squeeze_excite": dict(space=make_space("tiny", squeeze_excite=True)),
    }
    keys = {info.key}
    for what, kwargs in changed.items():
        n = len(calls)
        _, other = prepare(**kwargs)
        assert not other.cached and len(calls) == n + 1, what
        assert other.key not in keys and Path(other.path).is_file(), what
        keys.add(other.key)
    assert Path(info.path).is_file()  # the first one is still there beside the others
    assert len(list(tmp_path.glob("*.pt"))) == len(keys)
    # the cache_dir itself is not part of the key
    moved = replace(cfg, cache_dir=str(tmp_path / "elsewhere"))
    _, info4 = prepare(cfg=moved)
    assert info4.key == info.key and not info4.cached


def test_cache_file_of_other_settings_is_not_used(small_synthetic, tmp_path, monkeypatch, caplog):
    data, space = small_synthetic, make_space("tiny")
    cfg = SupernetSettings(epochs=1, batch_size=48, random_subnets=0, cache_dir=str(tmp_path))
    trainer = TrainerSettings(device="cpu", crop_padding=1)
    supernet, info = prepare_supernet(space, data, cfg, trainer, CPU, seed=0, progress=False)
    stored = torch.load(info.path, weights_only=False)
    stored["identity"]["seed"] = 7      # a file under this key whose contents belong to other settings
    for v in stored["state_dict"].values():
        if v.is_floating_point():
            v.add_(1.0)
    torch.save(stored, info.path)
    with caplog.at_level(logging.WARNING, logger="aebnas.supernet"):
        retrained, info2 = prepare_supernet(space, data, cfg, trainer, CPU, seed=0, progress=False)
    assert not info2.cached and info2.path == info.path
    assert "other settings" in caplog.text
    tampered = stored["state_dict"]["final_head.1.fc.weight"]
    assert not torch.equal(retrained.final_head[1].fc.weight.detach(), tampered)  # the stale file was not loaded
    assert torch.load(info.path, weights_only=False)["identity"]["seed"] == 0  # replaced by the right one
    monkeypatch.setattr(supernet_module, "train_supernet", lambda *a, **k: pytest.fail("should load"))
    assert prepare_supernet(space, data, cfg, trainer, CPU, seed=0, progress=False)[1].cached


def test_supernet_weights_are_determined_by_the_cache_key(small_synthetic, tmp_path):
    space = make_space("tiny")
    cfg = SupernetSettings(epochs=1, batch_size=48, random_subnets=0)
    trainer = TrainerSettings(device="cpu", crop_padding=1)
    nets, keys = [], set()
    for ambient in (0, 1):
        torch.manual_seed(ambient)  # whatever the process did with the global RNG before
        net, info = prepare_supernet(space, small_synthetic, replace(cfg, cache_dir=str(tmp_path / str(ambient))),
                                     trainer, CPU, seed=0, progress=False)
        nets.append(net)
        keys.add(info.key)
    assert len(keys) == 1
    assert _state_equal(nets[0], nets[1])


# ---------------------------------------------------------------------------------------------------------------
# 5. BatchNorm recalibration
# ---------------------------------------------------------------------------------------------------------------

def _bn_inputs(model: nn.Module, bns: list[nn.BatchNorm2d]) -> tuple[dict, list]:
    seen: dict[int, list[torch.Tensor]] = {id(bn): [] for bn in bns}
    handles = [bn.register_forward_pre_hook(lambda m, args: seen[id(m)].append(args[0].detach().clone()))
               for bn in bns]
    return seen, handles


def test_recalibrated_statistics_are_exact_over_the_calibration_images(small_synthetic):
    data = small_synthetic
    space = make_space("tiny")
    torch.manual_seed(0)
    model = build_model(space.parse("k3e2-k5e3/k3e2/k3e2/k3e4/k5e2|t0.9:conv8k3|off|off|off"), 3, 1)
    randomise_batchnorm(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    first, last = bns[0], model.heads[-1][0][1]  # stem BN; the final head's BN
    first.momentum, last.momentum = 0.3, None
    momenta = [bn.momentum for bn in bns]
    seen, handles = _bn_inputs(model, [first, last])
    recalibrate_batchnorm(model, data, CPU, n_images=40)
    for h in handles:
        h.remove()
    for bn in (first, last):
        assert len(seen[id(bn)]) == 1 and seen[id(bn)][0].shape[0] == 40
        a = seen[id(bn)][0]
        torch.testing.assert_close(bn.running_mean, a.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var, a.var((0, 2, 3), unbiased=True), rtol=1e-5, atol=1e-6)
    # the calibration images are the first 40 training images, normalised: the stem conv of those gives the BN input
    stem_in = (data.train.x[:40].float() / 255 - data.mean[0]) / data.std[0]
    with torch.no_grad():
        stem_out = F.conv2d(stem_in, model.segments[0][0][0].weight, padding=1)
    torch.testing.assert_close(seen[id(first)][0], stem_out, rtol=1e-5, atol=1e-5)
    assert [bn.momentum for bn in bns] == momenta
    # n_images=0 leaves the statistics alone
    before = copy.deepcopy(model.state_dict())
    recalibrate_batchnorm(model, data, CPU, n_images=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_large_inputs_are_recalibrated_in_equal_chunks_with_the_exact_mean(small_synthetic):
    """Past the memory bound the images go in equal chunks: the stem BN's mean stays the exact mean over
    the images used, its variance the average of the chunks' variances."""
    data = small_synthetic
    torch.manual_seed(0)
    model = build_model(make_space("tiny").parse("k3e2/k3e2/k3e2/k3e2/k3e2|off|off|off|off"), 3, 1)
    stem_bn = model.segments[0][0][1]
    seen, handles = _bn_inputs(model, [stem_bn])
    per_image = int(np.prod(data.train.x.shape[1:]))
    recalibrate_batchnorm(model, data, CPU, n_images=41, chunk_values=10 * per_image)  # 5 chunks of 8; 1 left
    for h in handles:
        h.remove()
    chunks = seen[id(stem_bn)]
    assert [len(c) for c in chunks] == [8] * 5
    everything = torch.cat(chunks)
    torch.testing.assert_close(stem_bn.running_mean, everything.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stem_bn.running_var, torch.stack([c.var((0, 2, 3)) for c in chunks]).mean(0),
                               rtol=1e-5, atol=1e-6)
    stem_in = (data.train.x[:40].float() / 255 - data.mean[0]) / data.std[0]  # the first 40 images, in order
    with torch.no_grad():
        torch.testing.assert_close(everything, F.conv2d(stem_in, model.segments[0][0][0].weight, padding=1),
                                   rtol=1e-5, atol=1e-5)


def test_supernet_sliced_batchnorm_follows_cumulative_momentum():
    space = make_space("tiny")
    supernet = Supernet(space.config, 3, 1).train()
    for bn in supernet.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.reset_running_stats()
            bn.momentum = None
    bn = supernet.stages[0][0].depthwise[1]  # smallest subnet uses 16 of its 32 channels
    seen, handles = _bn_inputs(supernet, [bn])
    with torch.no_grad():
        supernet(torch.randn(4, 1, 8, 8), space.smallest().stages)
    handles[0].remove()
    assert not seen[id(bn)]  # the sliced path bypasses the module (functional batch_norm)
    assert bool(bn.running_mean[:16].abs().sum() > 0)


# ---------------------------------------------------------------------------------------------------------------
# 6. candidate evaluation with inherited weights
# ---------------------------------------------------------------------------------------------------------------

def test_evaluator_init_and_supernet_must_agree(small_synthetic):
    supernet = Supernet(make_space("tiny").config, 3, 1)
    settings = SearchSettings(exit_metric="max_softmax")
    with pytest.raises(ValueError, match="init=supernet"):
        CandidateEvaluator(small_synthetic, TrainerSettings(init="supernet", device="cpu"), settings, CPU)
    with pytest.raises(ValueError, match="init=from_scratch"):
        CandidateEvaluator(small_synthetic, TrainerSettings(device="cpu"), settings, CPU, supernet=supernet)


def test_candidate_with_zero_finetune_epochs_scores_the_recalibrated_supernet_subnet(small_synthetic):
    data = small_synthetic
    space = make_space("tiny")
    torch.manual_seed(0)
    supernet = Supernet(space.config, data.num_classes, data.in_channels)
    randomise_batchnorm(supernet)
    trainer = TrainerSettings(epochs=0, init="supernet", device="cpu", bn_calibration_images=64, eval_batch_size=256)
    ev = CandidateEvaluator(data, trainer, SearchSettings(exit_metric="max_softmax"), CPU, supernet=supernet)
    g = space.parse("k3e2-k5e3/k5e2/k3e4/k3e2-k3e2/k5e3|t0.8:conv8k3|off|off|off")
    result = ev.evaluate(g)
    net = ev._networks[g.network_key]

    def final_exit(model):
        logits = predict_logits(model, data.val, data.mean, data.std, CPU)[-1]
        return confidence(logits, "max_softmax"), logits.argmax(-1) == data.val.y.numpy()

    reference = inherit_weights(build_model(g, data.num_classes, data.in_channels), supernet)
    raw_conf, _ = final_exit(copy.deepcopy(reference))
    recalibrate_batchnorm(reference, data, CPU, 64)
    conf, correct = final_exit(reference)
    np.testing.assert_allclose(net.confidences[-1], conf, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(net.correct[-1], correct)
    assert result.static_val_accuracy == pytest.approx(correct.mean())
    assert result.head_accuracies[-1] == pytest.approx(correct.mean())
    assert np.abs(raw_conf - conf).max() > 1e-3  # recalibration did change the subnet's predictions
    # and the supernet itself was left as it was (the candidate is a copy)
    fresh = Supernet(space.config, data.num_classes, data.in_channels)
    randomise_batchnorm(fresh)
    assert torch.equal(fresh.stages[0][0].depthwise[1].running_mean, supernet.stages[0][0].depthwise[1].running_mean)


def test_candidates_fine_tune_at_finetune_lr(small_synthetic, monkeypatch):
    tc = TrainerSettings(init="supernet", lr=0.05, finetune_lr=0.007, epochs=3)
    assert tc.candidate_schedule() == replace(tc, lr=0.007)
    assert replace(tc, init="from_scratch").candidate_schedule().lr == 0.05
    seen = []
    real_fit = training_module.fit

    def recording_fit(model, data, cfg, *args, **kwargs):
        seen.append(cfg)
        return real_fit(model, data, cfg, *args, **kwargs)

    monkeypatch.setattr(training_module, "fit", recording_fit)
    space = make_space("tiny")
    g = space.smallest()
    common = dict(epochs=1, batch_size=48, device="cpu", lr=0.05, finetune_lr=0.007, bn_calibration_images=32)
    supernet = Supernet(space.config, 3, 1)
    settings = SearchSettings(exit_metric="max_softmax")
    CandidateEvaluator(small_synthetic, TrainerSettings(init="supernet", **common), settings, CPU,
                       supernet=supernet).evaluate(g)
    CandidateEvaluator(small_synthetic, TrainerSettings(init="from_scratch", **common), settings, CPU).evaluate(g)
    assert [c.lr for c in seen] == [0.007, 0.05]
    assert [c.epochs for c in seen] == [1, 1]


# ---------------------------------------------------------------------------------------------------------------
# 7. a search whose candidates inherit from the (cached) supernet
# ---------------------------------------------------------------------------------------------------------------

def test_search_with_supernet_init_trains_then_reuses_the_supernet(small_synthetic, tmp_path, monkeypatch):
    space = make_space("tiny")
    trainer = TrainerSettings(epochs=1, batch_size=48, device="cpu", crop_padding=1, init="supernet",
                            bn_calibration_images=64, eval_batch_size=256)
    settings = SearchSettings(pop_size=2, generations=1, exit_metric="max_softmax")
    sn_cfg = SupernetSettings(epochs=1, batch_size=48, random_subnets=1, cache_dir=str(tmp_path / "cache"))

    def search(run_dir):
        result = run_search(SearchJob(space, small_synthetic, trainer, settings, CPU, run_dir, seed=0, progress=False,
                            supernet=sn_cfg))
        return result, json.loads((run_dir / "summary.json").read_text())

    result, summary = search(tmp_path / "run1")
    assert summary["candidate_init"] == "supernet" and summary["evaluations"] == 2 and summary["failed"] == 0
    record = summary["supernet"]
    assert record["loaded_from_cache"] is False and record["train_seconds"] > 0
    assert Path(record["path"]).is_file() and Path(record["path"]).parent == tmp_path / "cache"
    assert all(e.status == "ok" for e in result.evaluations)

    monkeypatch.setattr(supernet_module, "train_supernet", lambda *a, **k: pytest.fail("cached supernet retrained"))
    _, summary2 = search(tmp_path / "run2")
    record2 = summary2["supernet"]
    assert record2["loaded_from_cache"] is True and record2["train_seconds"] == 0.0
    assert (record2["key"], record2["path"]) == (record["key"], record["path"])
    assert record2["trained_in_seconds"] == record["train_seconds"]


# ---------------------------------------------------------------------------------------------------------------
# 8. config validation
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("patch, field", [
    ({"epoch": 3}, "supernet.epoch"), ({"epochs": 0}, "supernet.epochs"), ({"epochs": 2.5}, "supernet.epochs"),
    ({"batch_size": 1}, "supernet.batch_size"), ({"lr": 0}, "supernet.lr"), ({"lr": "fast"}, "supernet.lr"),
    ({"weight_decay": -1e-4}, "supernet.weight_decay"), ({"label_smoothing": 1.0}, "supernet.label_smoothing"),
    ({"random_subnets": -1}, "supernet.random_subnets"), ({"distill": "yes"}, "supernet.distill"),
    ({"cache_dir": ""}, "supernet.cache_dir"), ({"cache_dir": 3}, "supernet.cache_dir"),
])
def test_bad_supernet_config(patch, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.") + ":"):
        SupernetSettings.from_dict(patch)


@pytest.mark.parametrize("patch, field", [
    ({"init": "foo"}, "trainer.init"), ({"init": None}, "trainer.init"), ({"finetune_lr": 0}, "trainer.finetune_lr"),
    ({"bn_calibration_images": -1}, "trainer.bn_calibration_images"),
    ({"bn_calibration_images": 1.5}, "trainer.bn_calibration_images"), ({"channels_last": 1}, "trainer.channels_last"),
])
def test_bad_trainer_supernet_fields(patch, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.") + ":"):
        TrainerSettings.from_dict(patch)


def test_shipped_supernet_and_trainer_configs_validate():
    plain = OmegaConf.to_container(compose_config(), resolve=True)
    sc = SupernetSettings.from_dict(plain["supernet"])
    assert sc.random_subnets >= 0 and isinstance(sc.distill, bool)
    assert TrainerSettings.from_dict(plain["trainer"]).init in ("supernet", "from_scratch")
    assert SupernetSettings.from_dict({"epochs": 3, "distill": False}) == SupernetSettings(epochs=3, distill=False)


def test_cache_root_follows_setting_then_environment_then_user_cache(monkeypatch, tmp_path):
    assert SupernetSettings(cache_dir=str(tmp_path / "mine")).cache_root == tmp_path / "mine"
    monkeypatch.setenv("AEBNAS_CACHE_DIR", str(tmp_path / "shared"))
    assert SupernetSettings().cache_root == tmp_path / "shared" / "supernets"
    monkeypatch.delenv("AEBNAS_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert SupernetSettings().cache_root == tmp_path / "home" / ".cache" / "aebnas" / "supernets"


def test_unreadable_cache_file_is_retrained(small_synthetic, tmp_path, caplog):
    space = make_space("tiny")
    cfg = SupernetSettings(epochs=1, batch_size=48, random_subnets=0, cache_dir=str(tmp_path))
    trainer = TrainerSettings(device="cpu", crop_padding=1)
    _, info = prepare_supernet(space, small_synthetic, cfg, trainer, CPU, seed=0, progress=False)
    Path(info.path).write_bytes(b"not a torch file")  # e.g. a copy cut short
    with caplog.at_level("WARNING", logger="aebnas.supernet"):
        _, again = prepare_supernet(space, small_synthetic, cfg, trainer, CPU, seed=0, progress=False)
    assert not again.cached and "unreadable" in caplog.text
    assert torch.load(again.path, weights_only=False)["identity"]["seed"] == 0


def test_cache_entry_with_other_shapes_is_retrained(small_synthetic, tmp_path, caplog):
    """A file under the right key whose tensors no longer fit the code's supernet (code changed) is not fatal."""
    space = make_space("tiny")
    cfg = SupernetSettings(epochs=1, batch_size=48, random_subnets=0, cache_dir=str(tmp_path))
    trainer = TrainerSettings(device="cpu", crop_padding=1)
    _, info = prepare_supernet(space, small_synthetic, cfg, trainer, CPU, seed=0, progress=False)
    stored = torch.load(info.path, weights_only=True)
    stored["state_dict"]["stem.0.weight"] = torch.zeros(1, 1, 1, 1)
    torch.save(stored, info.path)
    with caplog.at_level("WARNING", logger="aebnas.supernet"):
        _, again = prepare_supernet(space, small_synthetic, cfg, trainer, CPU, seed=0, progress=False)
    assert not again.cached and "unreadable" in caplog.text
    assert torch.load(again.path, weights_only=True)["state_dict"]["stem.0.weight"].shape[-1] == 3
