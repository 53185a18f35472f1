import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from aebnas.cost import expected_cost, network_cost
from aebnas.nn import build_model


def _flop_macs(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("space_name, res, channels", [("mbv3_space", 32, 3), ("tiny_space", 16, 1)])
def test_analytic_macs_equal_flop_counter(request, space_name, res, channels):
    """25 random genomes per space: whole network, static path and every exit path agree with torch."""
    space = request.getfixturevalue(space_name)
    rng = np.random.default_rng(3)
    x = torch.randn(1, channels, res, res)
    for _ in range(25):
        g = space.sample(rng)
        model = build_model(g, 10, channels).eval()
        cost = network_cost(g, 10, channels, res)
        with torch.no_grad():
            assert _flop_macs(model, x) == cost.total_macs
            assert _flop_macs(model.forward_static, x) == cost.static_macs

            def path(k):  # run segments 0..k and heads 0..k: what a sample leaving at exit k costs
                h = x
                for i in range(k + 1):
                    h = model.segments[i](h)
                    model.heads[i](h)

            for k in range(model.n_exits):
                assert _flop_macs(path, k) == cost.path_macs[k]


def test_hand_computed_macs(hand_space):
    """One small network counted by hand, layer by layer (1x8x8 input, 10 classes)."""
    g = hand_space.parse("k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:conv8k3|off|off|off")
    cost = network_cost(g, 10, 1, 8)
    stem = 8 * 8 * 8 * 1 * 9                                  # 3x3 conv 1->8 at 8x8
    s1 = 64 * 16 * 8 + 64 * 16 * 9 + 64 * 8 * 16              # expand 8->16, dw 3x3, project 16->8 at 8x8
    s2 = 64 * 16 * 8 + 16 * 16 * 9 + 16 * 16 * 16             # stride 2: dw and project at 4x4, out 16
    s3 = 16 * 32 * 16 + 16 * 32 * 9 + 16 * 24 * 32            # 16->24 at 4x4
    s4 = 16 * 48 * 24 + 4 * 48 * 9 + 4 * 32 * 48              # stride 2 -> 2x2, out 32
    s5 = 4 * 64 * 32 + 4 * 64 * 9 + 4 * 48 * 64               # 32->48 at 2x2
    head1 = 64 * 8 * 8 * 9 + 8 * 10                           # conv 8->8 3x3 at 8x8, linear 8->10
    final = 4 * 96 * 48 + 96 * 10                             # 1x1 conv 48->96 at 2x2, linear 96->10
    assert cost.segment_macs == (stem + s1, s2 + s3 + s4 + s5)
    assert cost.head_macs == (head1, final)
    assert cost.path_macs == (stem + s1 + head1, stem + s1 + s2 + s3 + s4 + s5 + head1 + final)
    assert cost.static_macs == stem + s1 + s2 + s3 + s4 + s5 + final


def test_expected_cost_counts_every_head_on_the_way():
    # segments 100, 200, 300; heads 10, 20, final 5 -> paths 110, 330, 635
    paths = [100 + 10, 100 + 10 + 200 + 20, 100 + 10 + 200 + 20 + 300 + 5]
    assert expected_cost([0.5, 0.25, 0.25], paths) == pytest.approx(0.5 * 110 + 0.25 * 330 + 0.25 * 635)
    assert expected_cost([0, 0, 1], paths) == 635
    with pytest.raises(ValueError, match="exit_rates"):
        expected_cost([0.5, 0.6, 0.0], paths)
    with pytest.raises(ValueError, match="exit_rates"):
        expected_cost([1.0], paths)


def test_pooling_comes_first_in_exit_layers(hand_space):
    """avg-conv8k3 after stage 1 of an 8x8 input: the conv runs at 4x4, then max-dwsep16k5 at 2x2."""
    g = hand_space.parse("k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:avg-conv8k3+max-dwsep16k5|off|off|off")
    head = network_cost(g, 10, 1, 8).head_macs[0]
    conv = 4 * 4 * 8 * 8 * 9                 # 8->8, 3x3, at 4x4
    dwsep = 2 * 2 * 8 * 25 + 2 * 2 * 16 * 8  # depthwise 5x5 on 8 ch + pointwise 8->16, at 2x2
    assert head == conv + dwsep + 16 * 10
