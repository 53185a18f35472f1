"""The table of exit-branch layer kinds: a kind registered from outside the package (its declaration and its
modules) is searched, built, costed, sliced out of the supernet and drawn, with no other code knowing its name."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from aebnas.analysis.genome_view import genome_table, plot_genome
from aebnas.cost import network_cost, space_ops
from aebnas.nn import build_model
from aebnas.nn.supernet import Supernet, genome_heads, inherit_weights
from aebnas.space import SpaceConfigError
from aebnas.nn.blocks import ConvBNAct
from aebnas.nn.layer_modules import LayerModules, layer_modules, register_layer_modules, unregister_layer_modules
from aebnas.nn.slicing import copy_conv_bn, sliced_conv_bn_act
from aebnas.space.layer_kinds import (Convolution, LayerKind, layer_kind_names, register_layer_kind,
                                      unregister_layer_kind)
from tests.test_cost import _flop_macs
from tests.test_supernet import make_space, randomise_batchnorm


class PointwiseThenDepthwise(LayerKind):
    """A dwsep layer turned around: 1x1 to the new width first, then the k x k depthwise conv at that width."""

    name, display_name = "pwdw", "pointwise-then-depthwise conv"

    def convolutions(self, c_in, width, kernel, expansion):
        return [Convolution(c_in, width, 1), Convolution(width, width, kernel, groups=width)]


class PointwiseThenDepthwiseModules(LayerModules):
    kind, n_modules = "pwdw", 2

    def build(self, c_in, width, kernel, activation, expansion):
        return [ConvBNAct(c_in, width, 1, activation=activation),
                ConvBNAct(width, width, kernel, groups=width, activation=activation)]

    def build_elastic(self, c_in, width, kernel, activation, expansion):
        return nn.Sequential(*self.build(c_in, width, kernel, activation, expansion))

    def forward_slice(self, module, x, width, kernel, expansion):
        y = sliced_conv_bn_act(x, module[0], width, 1)
        return sliced_conv_bn_act(y, module[1], width, kernel, depthwise=True)

    def copy_slice(self, module, dst, expansion):
        pw, dw = dst
        copy_conv_bn(pw, module[0])
        copy_conv_bn(dw, module[1], depthwise=True)


@pytest.fixture
def toy_kind():
    kind = register_layer_kind(PointwiseThenDepthwise())
    register_layer_modules(PointwiseThenDepthwiseModules())
    yield kind
    unregister_layer_modules(kind.name)
    unregister_layer_kind(kind.name)


def _toy_space():
    return make_space("tiny", branch={"depths": [1, 2], "layer_types": ["conv", "pwdw"], "widths": [8, 16],
                                      "kernels": [3, 5], "pools": ["none", "avg"]})


def test_a_registered_kind_is_searched_built_costed_and_drawn(toy_kind):
    space = _toy_space()
    rng = np.random.default_rng(0)
    genomes = [space.sample(rng) for _ in range(30)]
    toy = [g for g in genomes if any(l.type == "pwdw" for e in g.active_exits for l in e.layers)]
    assert len(toy) >= 5
    x = torch.randn(1, 1, 16, 16)
    for g in toy[:6]:
        assert "pwdw" in g.key and space.parse(g.key) == g
        np.testing.assert_array_equal(space.encode(space.decode(space.encode(g))), space.encode(g))
        model = build_model(g, 10, 1).eval()
        cost = network_cost(g, 10, 1, 16)
        with torch.no_grad():
            assert [o.shape for o in model(x)] == [(1, 10)] * model.n_exits
            assert _flop_macs(model, x) == cost.total_macs
    assert any(sig.startswith("exit_pwdw_") for sig in space_ops(space.config, 10, 1, 16))
    table = genome_table(toy[0])
    assert table["layers"].str.contains("pointwise-then-depthwise conv 8ch|pointwise-then-depthwise conv 16ch").any()
    plot_genome(toy[0])


def test_a_registered_kind_is_sliced_out_of_the_joint_heads(toy_kind):
    space = _toy_space()
    torch.manual_seed(0)
    supernet = Supernet(space.config, 5, 1, exits=True)
    randomise_batchnorm(supernet)
    supernet.eval()
    assert any(name.endswith(".pwdw.1.0.weight") for name, _ in supernet.named_parameters())
    rng = np.random.default_rng(1)
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    seen = 0
    for g in [space.sample(rng) for _ in range(20)]:
        if not any(l.type == "pwdw" for e in g.active_exits for l in e.layers):
            continue
        seen += 1
        model = inherit_weights(build_model(g, 5, 1), supernet).eval()
        with torch.no_grad():
            for a, b in zip(model(x), supernet.forward_exits(x, g.stages, genome_heads(g))):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert seen >= 3


def test_unknown_kinds_and_bad_names_are_refused():
    assert layer_kind_names()[:3] == ("conv", "dwsep", "ir")
    with pytest.raises(SpaceConfigError, match="space.branch.layer_types: 'pwdw' is not one of"):
        _toy_space()
    with pytest.raises(ValueError, match="lowercase letters only"):
        register_layer_kind(type("Bad", (PointwiseThenDepthwise,), {"name": "pw2"})())
    with pytest.raises(ValueError, match="already registered"):
        register_layer_kind(type("Twice", (PointwiseThenDepthwise,), {"name": "conv"})())
    with pytest.raises(ValueError, match="exit layer type 'pwdw' is unknown"):
        register_layer_modules(PointwiseThenDepthwiseModules())


def test_a_declared_kind_without_modules_says_what_to_register():
    kind = register_layer_kind(PointwiseThenDepthwise())
    try:
        with pytest.raises(ValueError, match="'pwdw' is declared but has no modules; register a LayerModules"):
            layer_modules("pwdw")
    finally:
        unregister_layer_kind(kind.name)
