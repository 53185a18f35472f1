"""experiments/bench_ranking.py reuses an earlier from-scratch half only when it is the same experiment."""

from __future__ import annotations

import json
import sys

import pytest

from aebnas.validation import ConfigError
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "experiments"))
bench_ranking = pytest.importorskip("bench_ranking")


class _Genome:
    def __init__(self, key: str):
        self.network_key = key


@pytest.fixture()
def earlier(tmp_path):
    path = tmp_path / "ranking.json"
    path.write_text(json.dumps({"scratch_epochs": 15, "scratch_seed": 0, "supernet_exits": "fresh",
                                "scratch": [{"genome": "a", "val_accuracy": 0.7}, {"genome": "b", "val_accuracy": 0.8}]}))
    return path


def test_scratch_rows_come_back_in_this_runs_genome_order(earlier):
    rows = bench_ranking.reuse_scratch(earlier, [_Genome("b"), _Genome("a")], 15, 0)
    assert [r["genome"] for r in rows] == ["b", "a"] and rows[0]["val_accuracy"] == 0.8


@pytest.mark.parametrize("genomes, epochs, seed, says", [
    (["a", "c"], 15, 0, "lacks 1 of these 2 genomes"),
    (["a"], 10, 0, "trained 15 epochs from scratch, this run asks for 10"),
    (["a"], 15, 1, "with seed 0, this run asks for 1"),
])
def test_another_experiments_scratch_half_is_refused(earlier, genomes, epochs, seed, says):
    with pytest.raises(ConfigError, match=says):
        bench_ranking.reuse_scratch(earlier, [_Genome(k) for k in genomes], epochs, seed)


def test_the_fast_halfs_exit_heads_are_read_from_either_benchmark():
    assert bench_ranking.fast_exits({"supernet_exits": "joint"}) == "joint"
    assert bench_ranking.fast_exits({"supernet": {"exits": "joint"}}) == "joint"  # bench_search_speed.py's record
    assert bench_ranking.fast_exits({"candidates": []}) == "fresh"  # written before supernet.exits existed
