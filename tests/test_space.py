import numpy as np
import pytest

from aebnas.space import Genome, GenomeError, SearchSpace, SpaceSettings, SpaceConfigError
from tests.conftest import space_config


def test_text_json_and_vector_round_trip(mbv3_space: SearchSpace):
    rng = np.random.default_rng(0)
    for _ in range(200):
        g = mbv3_space.sample(rng)
        text = g.to_text()
        assert Genome.from_text(text, mbv3_space.config) == g
        assert Genome.from_text(text, mbv3_space.config).to_text() == text
        assert Genome.from_json(g.dumps()) == g
        assert mbv3_space.decode(mbv3_space.encode(g)) == g


def test_hidden_genes_do_not_change_the_key(mbv3_space: SearchSpace):
    """Two vectors differing only in genes of blocks beyond the depth build the same network."""
    rng = np.random.default_rng(1)
    x = mbv3_space.sample_x(rng, 1)[0]
    x[0] = 0  # stage 1 at its smallest depth (2): blocks 3 and 4 are hidden
    y = x.copy()
    y[1 + 2 * 2] = (y[1 + 2 * 2] + 1) % 3  # kernel of block 3 of stage 1
    assert not np.array_equal(x, y)
    assert mbv3_space.key(x) == mbv3_space.key(y)
    assert np.array_equal(mbv3_space.canonical(x), mbv3_space.canonical(y))
    # an exit switched off hides its whole branch
    g = mbv3_space.groups[5]
    x[g.start] = 0
    z = x.copy()
    z[g.start + 2:g.stop] = (z[g.start + 2:g.stop] + 1) % 2
    assert mbv3_space.key(x) == mbv3_space.key(z)


def test_known_genome_text(hand_space: SearchSpace):
    text = "k3e2/k5e3-k7e4/k3e2/k3e2-k3e2-k3e2/k7e4|t0.9:max-conv8k3+dwsep16k5|off|off|t0.5:ir32k3"
    g = hand_space.parse(text)
    assert g.depths == (1, 2, 1, 3, 1)
    assert [e.stage for e in g.active_exits] == [1, 4]
    assert g.thresholds == (0.9, 0.5)
    assert g.exits[0].layers[0].pool == "max"
    assert g.to_text() == text
    assert g.network_key == "k3e2/k5e3-k7e4/k3e2/k3e2-k3e2-k3e2/k7e4|t*:max-conv8k3+dwsep16k5|off|off|t*:ir32k3"


@pytest.mark.parametrize("text, fragment", [
    ("garbage", "expected the backbone"),
    ("k3e2/k5e3/k3e2/k3e2/k7e4|off|off|off", "expected the backbone and 4 exits"),
    ("k3e2/k5e3/k3e2/k3e2|off|off|off|off", "expected 5 stages"),
    ("k4e2/k5e3/k3e2/k3e2/k7e4|off|off|off|off", "stage 1 kernel 4"),
    ("k3e9/k5e3/k3e2/k3e2/k7e4|off|off|off|off", "stage 1 expansion 9"),
    ("k3e2-k3e2-k3e2-k3e2/k5e3/k3e2/k3e2/k7e4|off|off|off|off", "stage 1 depth 4"),
    ("k3e2/k5e3/k3e2/k3e2/k7e4|t1.5:conv8k3|off|off|off", "outside (0, 1]"),
    ("k3e2/k5e3/k3e2/k3e2/k7e4|t0.9:pool8k3|off|off|off", "layer type 'pool'"),
    ("k3e2/k5e3/k3e2/k3e2/k7e4|t0.9:conv8k3+conv8k3+conv8k3|off|off|off", "branch depth 3"),
    ("k3e2/k5e3/k3e2/k3e2/k7e4|on|off|off|off", "neither 'off'"),
])
def test_malformed_genome_text_names_the_problem(hand_space, text, fragment):
    with pytest.raises(GenomeError, match="genome text") as info:
        hand_space.parse(text)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_space_size_hand_computed(hand_space: SearchSpace):
    # stage: depths 1..3 with 3 kernels x 3 expansions = 9 per block -> 9 + 81 + 729 = 819
    # exit: off + 6 thresholds * (36 + 36^2) with 3 types x 3 widths x 2 kernels x 2... pools 3 -> 54 per layer
    per_layer = 3 * 3 * 2 * 3
    exit_ = 1 + 6 * (per_layer + per_layer ** 2)
    assert hand_space.size == 819 ** 5 * exit_ ** 4
    # every sampled canonical vector decodes inside the space and repairs are no-ops on valid vectors
    X = hand_space.sample_x(np.random.default_rng(0), 50)
    assert np.array_equal(hand_space.repair(X), X)
    assert np.array_equal(hand_space.repair(X + 0.4), X)
    assert np.all(hand_space.repair(X + 100) == hand_space.xu)


def test_sampling_is_seeded(tiny_space: SearchSpace):
    a = [tiny_space.sample(np.random.default_rng(7)).key for _ in range(3)]
    b = [tiny_space.sample(np.random.default_rng(7)).key for _ in range(3)]
    assert a == b
    keys = {tiny_space.sample(np.random.default_rng(s)).key for s in range(30)}
    assert len(keys) == 30


def test_with_thresholds_keeps_network(tiny_space):
    g = tiny_space.largest(with_exits=True)
    h = g.with_thresholds([0.5] * 4)
    assert h.network_key == g.network_key and h.thresholds == (0.5,) * 4
    with pytest.raises(GenomeError, match="thresholds"):
        g.with_thresholds([0.5])


@pytest.mark.parametrize("patch, fragment", [
    ({"thresholds": [0.5, 1.5]}, "space.thresholds"),
    ({"thresholds": [0.0, 0.5]}, "space.thresholds"),
    ({"kernels": [3, 4]}, "space.kernels"),
    ({"exit_stages": [5]}, "space.exit_stages"),
    ({"depths": []}, "space.depths"),
    ({"colour": 1}, "space.colour"),
    ({"branch": {"layer_types": ["conv", "lstm"]}}, "space.branch.layer_types"),
])
def test_bad_space_config(patch, fragment):
    from tests.conftest import HAND_SPACE

    cfg = dict(HAND_SPACE)
    cfg.update(patch)
    with pytest.raises(SpaceConfigError, match=fragment.replace(".", r"\.")):
        SpaceSettings.from_dict(cfg)


def test_config_round_trip():
    cfg = space_config("mbv3_32")
    assert SpaceSettings.from_dict(cfg.to_dict()) == cfg
