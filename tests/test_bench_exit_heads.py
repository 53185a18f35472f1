"""experiments/bench_exit_heads.py draws its searched heads as the supernet draws its random subnets' heads."""

from __future__ import annotations

import sys

import numpy as np

from aebnas.train.supernet import sample_heads
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
import bench_exit_heads  # noqa: E402  (a broken script fails here, not skips)


def test_random_heads_are_the_supernets_draws_on_the_same_backbones(hand_space):
    backbones = [hand_space.sample(np.random.default_rng(s)) for s in range(5)]
    genomes = bench_exit_heads.with_random_heads(hand_space, backbones, np.random.default_rng(7), 0.9)
    expected = np.random.default_rng(7)
    stages = hand_space.config.exit_stages
    for backbone, genome in zip(backbones, genomes):
        heads = sample_heads(hand_space, expected, "random")
        assert genome.stages == backbone.stages
        assert [e.stage for e in genome.active_exits] == list(stages)
        assert [e.layers for e in genome.active_exits] == [heads[s] for s in stages]
        assert genome.thresholds == (0.9,) * len(stages)
    # five draws of one- or two-layer heads (three types, three widths, two kernels, three pools): the heads
    # themselves differ, not only the backbones under them
    assert len({tuple(e.layers for e in g.active_exits) for g in genomes}) == len(genomes)
