import numpy as np
import torch

from aebnas.nn import build_model


def test_forward_returns_every_active_exit(hand_space):
    g = hand_space.parse("k3e2/k5e3-k7e4/k3e2/k3e2-k3e2-k3e2/k7e4|t0.9:max-conv8k3+dwsep16k5|off|t0.7:avg-ir8k5|off")
    model = build_model(g, 7, 1)
    outs = model(torch.randn(4, 1, 16, 16))
    assert model.n_exits == 3 and len(outs) == 3
    assert all(o.shape == (4, 7) for o in outs)
    # the final exit of the one-pass forward is the static network's output
    model.eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x)[-1], model.forward_static(x))


def test_no_exits_gives_one_output_and_pooling_survives_tiny_maps(mbv3_space):
    g = mbv3_space.largest()
    assert build_model(g, 10, 3).n_exits == 1
    # two pools after stage 4 of a 16x16 input (2x2 maps) must still give logits
    rng = np.random.default_rng(0)
    for _ in range(10):
        g = mbv3_space.sample(rng)
        outs = build_model(g, 10, 3).eval()(torch.randn(1, 3, 16, 16))
        assert len(outs) == len(g.active_exits) + 1
