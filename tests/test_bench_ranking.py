"""experiments/bench_ranking.py reuses an earlier from-scratch half only when it is the same experiment."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest

from aebnas.config_checks import ConfigError
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


def test_a_scratch_half_that_does_not_record_its_seed_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"scratch_epochs": 15, "scratch": [{"genome": "a", "val_accuracy": 0.7}]}))
    with pytest.raises(ConfigError, match='does not record the seed.*add "scratch_seed": N'):
        bench_ranking.reuse_scratch(path, [_Genome("a")], 15, 0)


def test_a_foreign_scratch_half_is_refused_before_the_supernet_trains(earlier, tmp_path, monkeypatch):
    setup = SimpleNamespace(seed=1, overrides=[], space=None, data=SimpleNamespace(train=[0] * 8),
                            trainer=SimpleNamespace(epochs=0), supernet=SimpleNamespace(exits="fresh"), device="cpu")

    def train(*args, **kwargs):
        raise AssertionError("the supernet trained before the from-scratch half was checked")

    monkeypatch.setattr(bench_ranking, "load_setup", lambda overrides: setup)
    monkeypatch.setattr(bench_ranking, "sample_genomes", lambda space, n, seed: [_Genome("a"), _Genome("b")])
    monkeypatch.setattr(bench_ranking, "machine", lambda: {})
    monkeypatch.setattr(bench_ranking, "prepare_supernet", train)
    monkeypatch.setattr(sys, "argv", ["bench_ranking.py", "--out", str(tmp_path / "out.json"), "--genomes", "2",
                                      "--scratch-json", str(earlier)])
    with pytest.raises(ConfigError, match="with seed 0, this run asks for 1"):
        bench_ranking.main()
    assert not (tmp_path / "out.json").exists()


def test_the_fast_halfs_exit_heads_are_read_from_either_benchmark():
    assert bench_ranking.fast_exits({"supernet_exits": "joint"}) == "joint"
    assert bench_ranking.fast_exits({"supernet": {"exits": "joint"}}) == "joint"  # bench_search_speed.py's record
    assert bench_ranking.fast_exits({"candidates": []}) == "fresh"  # written before supernet.exits existed


def test_a_runs_from_scratch_half_is_written_for_the_next_run_to_reuse(tmp_path, monkeypatch):
    """gpu_session.sh's ranking stage scores fresh exit heads, then joint ones with --scratch-json on the first
    run's JSON: that JSON must hold the from-scratch rows, and the second run must reuse them, not retrain."""
    genomes = [_Genome("a"), _Genome("b"), _Genome("c")]
    setup = SimpleNamespace(seed=0, overrides=[], space=None, data=SimpleNamespace(train=[0] * 8), device="cpu",
                            trainer=SimpleNamespace(epochs=0), supernet=SimpleNamespace(exits="fresh"))
    scored = []

    def score(setup, genomes, supernet=None, epochs=None, seed=None):
        scored.append("fast" if epochs is None else "scratch")
        base = 0.5 if epochs is None else 0.6
        return [{"genome": g.network_key, "status": "ok", "val_accuracy": base + 0.1 * i,
                 "static_val_accuracy": base + 0.1 * i} for i, g in enumerate(genomes)]

    monkeypatch.setattr(bench_ranking, "load_setup", lambda overrides: setup)
    monkeypatch.setattr(bench_ranking, "sample_genomes", lambda space, n, seed: genomes)
    monkeypatch.setattr(bench_ranking, "machine", lambda: {})
    monkeypatch.setattr(bench_ranking, "prepare_supernet", lambda *a, **k: (None, SimpleNamespace(train_seconds=1.0)))
    monkeypatch.setattr(bench_ranking, "score", score)
    first, second = tmp_path / "ranking.json", tmp_path / "ranking_joint.json"
    monkeypatch.setattr(sys, "argv", ["bench_ranking.py", "--out", str(first), "--genomes", "3"])
    bench_ranking.main()
    written = json.loads(first.read_text())
    assert [r["genome"] for r in written["scratch"]] == ["a", "b", "c"] and scored == ["fast", "scratch"]
    setup.supernet.exits = "joint"
    monkeypatch.setattr(sys, "argv", ["bench_ranking.py", "--out", str(second), "--genomes", "3",
                                      "--scratch-json", str(first)])
    bench_ranking.main()
    assert scored == ["fast", "scratch", "fast"]  # the second run trained nothing from scratch
    again = json.loads(second.read_text())
    assert again["scratch"] == written["scratch"] and again["scratch_from"] == str(first)
    assert again["comparison"]["pairs"] == 3
