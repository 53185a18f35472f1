"""Candidates trained in worker processes: same results as one by one, failures isolated, a dead worker stops."""

import multiprocessing
import os
import subprocess
import sys
from dataclasses import replace
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
import torch

from aebnas.analysis import load_run
from aebnas.data import load_dataset
from aebnas.search import SearchJob, SearchSettings, run_search
from aebnas.search.evaluator import CandidateEvaluator
from aebnas.search.training import short_hash
from aebnas.search.workers import CandidatePool
from aebnas.train import TrainerSettings
from tests.conftest import ROOT

TRAINER = TrainerSettings(epochs=1, batch_size=64, device="cpu", crop_padding=1, num_threads=1)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset({"name": "synthetic", "num_classes": 4, "num_samples": 400, "resolution": 8, "channels": 1,
                         "val_size": 0.25, "test_size": 0.2, "seed": 0})


def _comparable(result) -> list[tuple]:
    return [(e.key, e.generation, e.val_accuracy, e.expected_macs, e.exit_rates, e.objectives, e.status)
            for e in result.evaluations]


def test_two_workers_give_exactly_the_one_by_one_search(tiny_space, synthetic, tmp_path, monkeypatch):
    """Same candidates in the same order with the same metrics, Pareto set and test accuracies."""
    settings = SearchSettings(pop_size=4, generations=2, exit_metric="max_softmax")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each worker uses: the same arithmetic, so the same numbers
    try:
        alone = run_search(SearchJob(tiny_space, synthetic, TRAINER, settings, CPU, tmp_path / "alone", progress=False))
    finally:
        torch.set_num_threads(threads)
    submitted = []
    real_submit = CandidatePool.submit
    monkeypatch.setattr(CandidatePool, "submit", lambda self, g: submitted.append(g.network_key) or real_submit(self, g))
    pooled = run_search(SearchJob(tiny_space, synthetic, TRAINER, settings, CPU, tmp_path / "pooled", progress=False,
                                  workers=2))
    assert len(alone.evaluations) == 8
    assert sorted(submitted) == sorted({e.network_key for e in alone.evaluations})  # each trained once, in a worker
    assert _comparable(pooled) == _comparable(alone)
    assert [r["test_accuracy"] for r in pooled.pareto] == [r["test_accuracy"] for r in alone.pareto]
    assert load_run(pooled.run_dir).summary["workers"] == 2
    assert not multiprocessing.active_children()  # the pool is shut down with the search


def test_a_candidate_failing_in_a_worker_is_recorded_and_the_search_goes_on(tiny_space, synthetic, tmp_path):
    diverging = replace(TRAINER, lr=1e30)
    result = run_search(SearchJob(tiny_space, synthetic, diverging, SearchSettings(pop_size=2, generations=1), CPU,
                        tmp_path / "run", progress=False, workers=2))
    assert [e.status for e in result.evaluations] == ["failed", "failed"]
    assert all(e.error.startswith("TrainingDiverged: loss became") for e in result.evaluations)
    assert result.pareto == []


def test_a_killed_worker_stops_the_search_instead_of_failing_candidates(tiny_space, synthetic):
    """A worker killed from outside (out-of-memory killer, say) is the machine's fault: BrokenProcessPool reaches
    the caller and nothing is recorded as a failed candidate."""
    evaluator = CandidateEvaluator(synthetic, TRAINER, SearchSettings(exit_metric="max_softmax"), CPU)
    genomes = [tiny_space.sample(np.random.default_rng(i)) for i in range(6)]
    recorded = []
    evaluator.on_evaluated.append(lambda ev, fresh: recorded.append(ev))
    with CandidatePool(evaluator.training, workers=2, threads=1) as pool:
        real_submit = pool.submit

        def submit_then_kill_after_the_last(genome):
            future = real_submit(genome)
            if genome is genomes[-1]:  # every candidate handed out, none can have finished yet
                for child in multiprocessing.active_children():
                    child.kill()
            return future

        pool.submit = submit_then_kill_after_the_last
        evaluator.pool = pool
        with pytest.raises(BrokenProcessPool):
            evaluator.evaluate_all(genomes)
    assert recorded == []


def test_workers_that_cannot_start_give_one_clear_error(tmp_path):
    """A script without the __main__ guard: spawned workers re-run it and die; the error says what to do."""
    script = tmp_path / "no_guard.py"
    script.write_text(
        "import torch\n"
        "from aebnas.data import load_dataset\n"
        "from aebnas.search import SearchJob, SearchSettings, run_search\n"
        "from aebnas.space import SearchSpace\n"
        "from aebnas.train import TrainerSettings\n"
        "from tests.conftest import space_config\n"
        "data = load_dataset({'name': 'synthetic', 'num_classes': 2, 'num_samples': 60, 'resolution': 8, "
        "'channels': 1, 'val_size': 0.25, 'test_size': 0.25, 'seed': 0})\n"
        f"run_search(SearchJob(SearchSpace(space_config('tiny')), data, TrainerSettings(epochs=1, device='cpu'), "
        f"SearchSettings(pop_size=2, generations=1), torch.device('cpu'), {str(tmp_path / 'run')!r}, "
        "progress=False, workers=2))\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode != 0
    assert "WorkerStartError: workers: the worker processes could not start" in proc.stderr
    assert 'if __name__ == "__main__":' in proc.stderr
    assert not multiprocessing.active_children()


def test_a_pool_of_one_is_refused(synthetic):
    evaluator = CandidateEvaluator(synthetic, TRAINER, SearchSettings(), CPU)
    with pytest.raises(ValueError, match="at least 2 workers"):
        CandidatePool(evaluator.training, workers=1, threads=1)


def test_workers_inherit_from_the_supernet_like_the_search_process(tiny_space, synthetic):
    """With trainer.init=supernet each worker gets a CPU copy of the supernet: same evaluations as in-process."""
    from aebnas.nn.supernet import Supernet

    torch.manual_seed(0)
    supernet = Supernet(tiny_space.config, synthetic.num_classes, synthetic.in_channels)
    trainer = replace(TRAINER, init="supernet", bn_calibration_images=64)
    settings = SearchSettings(exit_metric="max_softmax", threshold_tuning=True)
    genomes = [tiny_space.sample(np.random.default_rng(i)) for i in range(3)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = CandidateEvaluator(synthetic, trainer, settings, CPU, supernet=supernet).evaluate_all(genomes)
    finally:
        torch.set_num_threads(threads)
    evaluator = CandidateEvaluator(synthetic, trainer, settings, CPU, supernet=supernet)
    with CandidatePool(evaluator.training, workers=2, threads=1) as pool:
        evaluator.pool = pool
        pooled = evaluator.evaluate_all(genomes)
    assert [(e.key, e.val_accuracy, e.head_accuracies) for e in pooled] == \
        [(e.key, e.val_accuracy, e.head_accuracies) for e in alone]


def test_a_long_candidate_reports_its_epochs_from_a_worker(tiny_space, synthetic, capfd):
    """A candidate training past epoch_log_seconds logs each epoch; from a worker the line reaches stderr."""
    evaluator = CandidateEvaluator(synthetic, replace(TRAINER, epochs=2), SearchSettings(exit_metric="max_softmax"), CPU)
    evaluator.training = replace(evaluator.training, epoch_log_seconds=0.0)
    genomes = [tiny_space.sample(np.random.default_rng(i)) for i in range(2)]
    with CandidatePool(evaluator.training, workers=2, threads=1) as pool:
        evaluator.pool = pool
        evaluator.evaluate_all(genomes)
    err = capfd.readouterr().err
    for genome in genomes:
        name = short_hash(genome.network_key, 8)
        assert f"candidate {name}: epoch 1/2, loss" in err and f"candidate {name}: epoch 2/2, loss" in err
    assert "[worker " in err
