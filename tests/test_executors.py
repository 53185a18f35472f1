"""Candidates trained on Dask workers: same results as one by one, failures isolated, killed workers survived."""

import logging
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from aebnas.analysis import load_run
from aebnas.data import load_dataset
from aebnas.search import SearchJob, SearchSettings, run_search
from aebnas.search.evaluator import CandidateEvaluator
from aebnas.search.executors import ExecutorSettings, WorkerStartError, start_executor
from aebnas.search.executors.dask_cluster import DaskExecutor
from aebnas.search.training import short_hash
from aebnas.train import TrainerSettings
from tests.conftest import ROOT

TRAINER = TrainerSettings(epochs=1, batch_size=64, device="cpu", crop_padding=1, num_threads=1)
CPU = torch.device("cpu")
TWO = ExecutorSettings(name="dask", n_workers=2, threads=1, dashboard_address=None)


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset({"name": "synthetic", "num_classes": 4, "num_samples": 400, "resolution": 8, "channels": 1,
                         "val_size": 0.25, "test_size": 0.2, "seed": 0})


def _comparable(evaluations) -> list[tuple]:
    return [(e.key, e.generation, e.val_accuracy, e.expected_macs, e.exit_rates, e.objectives, e.status)
            for e in evaluations]


def _one_thread(fn):
    """``fn()`` with this process on one torch thread, as each worker is: the same arithmetic, the same numbers."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_dask_workers_give_exactly_the_one_by_one_search(tiny_space, synthetic, tmp_path, monkeypatch):
    """Same candidates in the same order with the same metrics, Pareto set and test accuracies."""
    settings = SearchSettings(pop_size=4, generations=2, exit_metric="max_softmax")
    alone = _one_thread(lambda: run_search(SearchJob(tiny_space, synthetic, TRAINER, settings, CPU, tmp_path / "alone",
                                                     progress=False)))
    submitted = []
    real_submit = DaskExecutor.submit
    monkeypatch.setattr(DaskExecutor, "submit", lambda self, g: submitted.append(g.network_key) or real_submit(self, g))
    pooled = run_search(SearchJob(tiny_space, synthetic, TRAINER, settings, CPU, tmp_path / "pooled", progress=False,
                                  executor=TWO))
    assert len(alone.evaluations) == 8
    assert sorted(submitted) == sorted({e.network_key for e in alone.evaluations})  # each trained once, on a worker
    assert _comparable(pooled.evaluations) == _comparable(alone.evaluations)
    assert [r["test_accuracy"] for r in pooled.pareto] == [r["test_accuracy"] for r in alone.pareto]
    summary = load_run(pooled.run_dir).summary
    assert (summary["executor"], summary["workers"]) == ("dask", 2)
    assert not multiprocessing.active_children()  # the cluster is shut down with the search


@pytest.mark.slow
def test_a_candidate_failing_on_a_worker_is_recorded_and_the_search_goes_on(tiny_space, synthetic, tmp_path):
    diverging = replace(TRAINER, lr=1e30)
    result = run_search(SearchJob(tiny_space, synthetic, diverging, SearchSettings(pop_size=2, generations=1), CPU,
                                  tmp_path / "run", progress=False, workers=2))  # the shorthand: a Dask cluster of 2
    assert [e.status for e in result.evaluations] == ["failed", "failed"]
    assert all(e.error.startswith("TrainingDiverged: loss became") for e in result.evaluations)
    assert result.pareto == []
    assert load_run(result.run_dir).summary["workers"] == 2


def _kill_a_busy_worker(executor: DaskExecutor, timeout: float = 120) -> tuple[str, str]:
    """SIGKILL the process of a worker while it trains a candidate; (its address, the candidate's task key)."""
    pids = executor.client.run(os.getpid)
    deadline = time.time() + timeout
    while time.time() < deadline:
        busy = {w: keys for w, keys in executor.client.processing().items() if keys}
        if busy:
            worker, keys = next(iter(busy.items()))
            time.sleep(0.3)  # well inside the candidate's training (seconds), past its start
            os.kill(pids[worker], signal.SIGKILL)
            return worker, keys[0]
        time.sleep(0.02)
    raise AssertionError("no worker started a candidate")


@pytest.mark.slow
def test_a_worker_killed_mid_candidate_is_retried_on_another_and_replaced(tiny_space, synthetic):
    """The killed worker's candidate trains again elsewhere with the same seed: the same numbers as one by one;
    the nanny restarts the worker, which gets the data again from the plugin."""
    trainer = replace(TRAINER, epochs=4)
    settings = SearchSettings(exit_metric="max_softmax")
    genomes = [tiny_space.sample(np.random.default_rng(i)) for i in range(4)]
    alone = _one_thread(lambda: CandidateEvaluator(synthetic, trainer, settings, CPU).evaluate_all(genomes))
    evaluator = CandidateEvaluator(synthetic, trainer, settings, CPU)
    with start_executor(replace(TWO, retries=1), evaluator.training, pop_size=4) as executor:
        evaluator.pool = executor
        futures = [executor.submit(g) for g in genomes]
        evaluator._pending = {g.network_key: f for g, f in zip(genomes, futures)}
        worker, key = _kill_a_busy_worker(executor)
        pooled = evaluator.evaluate_all(genomes)
        assert [f.future.key for f in futures].count(key) == 1
        assert executor.client.who_has([key]).get(key, ()) not in ((worker,),)  # trained by another worker
        deadline = time.time() + 60
        while executor.workers < 2 and time.time() < deadline:
            time.sleep(0.2)
        assert executor.workers == 2  # the lost worker was replaced
        again = evaluator.evaluate_all([tiny_space.sample(np.random.default_rng(9))])  # the new worker trains
        assert again[0].status == "ok"
    assert [e.status for e in pooled] == ["ok"] * 4
    assert _comparable(pooled) == _comparable(alone)


@pytest.mark.slow
def test_a_candidate_whose_workers_keep_dying_is_recorded_as_failed_and_the_rest_go_on(tiny_space, synthetic):
    trainer = replace(TRAINER, epochs=4)
    evaluator = CandidateEvaluator(synthetic, trainer, SearchSettings(exit_metric="max_softmax"), CPU)
    genomes = [tiny_space.sample(np.random.default_rng(i)) for i in range(3)]
    with start_executor(replace(TWO, retries=0), evaluator.training, pop_size=3) as executor:
        evaluator.pool = executor
        futures = {g.network_key: executor.submit(g) for g in genomes}
        evaluator._pending = dict(futures)
        _, key = _kill_a_busy_worker(executor)
        evaluations = evaluator.evaluate_all(genomes)
    killed = [e for e, g in zip(evaluations, genomes) if futures[g.network_key].future.key == key]
    assert [e.status for e in killed] == ["failed"]
    assert killed[0].error == "CandidateWorkerDied: the worker training it died 1 time(s) (executor.retries=0)"
    assert sorted(e.status for e in evaluations) == ["failed", "ok", "ok"]


def test_an_unreachable_scheduler_is_one_line_within_the_timeout():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = ExecutorSettings(name="dask", address=f"tcp://127.0.0.1:{port}", connect_timeout=1)
    start = time.perf_counter()
    with pytest.raises(WorkerStartError) as info:
        start_executor(settings, None, pop_size=2)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"executor.address: no Dask scheduler answered at tcp://127.0.0.1:{port} within 1 s")


@pytest.mark.slow
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
    assert "WorkerStartError: executor=dask: the worker processes could not start" in proc.stderr
    assert 'if __name__ == "__main__":' in proc.stderr
    assert not multiprocessing.active_children()


@pytest.mark.slow
def test_workers_inherit_from_the_supernet_like_the_search_process(tiny_space, synthetic):
    """With trainer.init=supernet each worker gets a CPU copy of the supernet once: same evaluations as in-process."""
    from aebnas.nn.supernet import Supernet

    torch.manual_seed(0)
    supernet = Supernet(tiny_space.config, synthetic.num_classes, synthetic.in_channels)
    trainer = replace(TRAINER, init="supernet", bn_calibration_images=64)
    settings = SearchSettings(exit_metric="max_softmax", threshold_tuning=True)
    genomes = [tiny_space.sample(np.random.default_rng(i)) for i in range(3)]
    alone = _one_thread(lambda: CandidateEvaluator(synthetic, trainer, settings, CPU, supernet=supernet)
                        .evaluate_all(genomes))
    evaluator = CandidateEvaluator(synthetic, trainer, settings, CPU, supernet=supernet)
    with start_executor(TWO, evaluator.training, pop_size=3) as executor:
        evaluator.pool = executor
        pooled = evaluator.evaluate_all(genomes)
        # the training reached each worker once, through the plugin, and is still there for the next generation
        name = executor.plugin_name
        held = executor.client.run(lambda dask_worker: dask_worker.plugins[name].training is not None)
    assert list(held.values()) == [True, True]
    assert [(e.key, e.val_accuracy, e.head_accuracies) for e in pooled] == \
        [(e.key, e.val_accuracy, e.head_accuracies) for e in alone]


@pytest.mark.slow
def test_a_long_candidate_reports_its_epochs_from_a_worker(tiny_space, synthetic, capfd):
    """A candidate training past epoch_log_seconds logs each epoch; from a worker the line reaches stderr."""
    evaluator = CandidateEvaluator(synthetic, replace(TRAINER, epochs=2), SearchSettings(exit_metric="max_softmax"), CPU)
    evaluator.training = replace(evaluator.training, epoch_log_seconds=0.0)
    genomes = [tiny_space.sample(np.random.default_rng(i)) for i in range(2)]
    with start_executor(TWO, evaluator.training, pop_size=2) as executor:
        evaluator.pool = executor
        evaluator.evaluate_all(genomes)
    err = capfd.readouterr().err
    for genome in genomes:
        name = short_hash(genome.network_key, 8)
        assert f"candidate {name}: epoch 1/2, loss" in err and f"candidate {name}: epoch 2/2, loss" in err
    assert "[worker " in err


# --- the executor group: every option composes and is what the code builds ---

def _executor(*overrides: str) -> ExecutorSettings:
    from omegaconf import OmegaConf

    from tests.conftest import compose_config

    plain = OmegaConf.to_container(compose_config(list(overrides)), resolve=True)
    return ExecutorSettings.from_dict(plain["executor"]).with_workers(plain["workers"])


def test_the_executor_configs_compose():
    assert _executor() == ExecutorSettings(name="local")
    dask = _executor("executor=dask", "executor.n_workers=3")
    assert (dask.name, dask.n_workers, dask.address, dask.retries) == ("dask", 3, None, 2)
    joined = _executor("executor=dask", "executor.address=tcp://node7:8786")
    assert joined.address == "tcp://node7:8786"
    slurm = _executor("executor=slurm", "executor.partition=gpu", "executor.jobs=4", "executor.gpus_per_job=2")
    assert (slurm.name, slurm.partition, slurm.jobs, slurm.gpus_per_job, slurm.walltime) == \
        ("slurm", "gpu", 4, 2, "02:00:00")


def test_workers_is_the_shorthand_for_a_local_dask_cluster():
    assert _executor("workers=3") == replace(_executor("executor=dask"), n_workers=3)
    assert _executor("workers=1") == ExecutorSettings(name="local")
    assert _executor("experiment=quickstart").n_workers == 2  # the preset's workers: 2


@pytest.mark.parametrize("overrides, message", [
    (["executor.name=ray"], "executor.name: 'ray' is not one of ['local', 'dask', 'slurm']"),
    (["executor=dask", "executor.address=node7"], "executor.address: expected a scheduler address"),
    (["executor=dask", "executor.retries=-1"], "executor.retries: must be in [0, inf], got -1"),
    (["executor=slurm", "workers=2"], "workers: executor=slurm sizes its workers with executor.jobs"),
])
def test_bad_executor_settings_name_the_field(overrides, message):
    from aebnas.config_checks import ConfigError

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _executor(*overrides)


def test_gpu_workers_are_pinned_one_process_per_slot():
    from aebnas.search.executors.dask_cluster import local_worker_specs

    settings = ExecutorSettings(name="dask", gpus=(0, 1), candidates_per_gpu=2)
    specs = local_worker_specs(settings, torch.device("cuda"), threads=4)
    pinned = {name: spec["options"]["env"]["CUDA_VISIBLE_DEVICES"] for name, spec in specs.items()}
    assert pinned == {"gpu0-0": "0", "gpu1-0": "1", "gpu0-1": "0", "gpu1-1": "1"}
    assert all(spec["options"]["nthreads"] == 1 and spec["options"]["env"]["OMP_NUM_THREADS"] == "4"
               for spec in specs.values())
    assert len(local_worker_specs(replace(settings, n_workers=3), torch.device("cuda"), 1)) == 3
    assert list(local_worker_specs(ExecutorSettings(name="dask", n_workers=2), CPU, 1)) == ["cpu-0", "cpu-1"]


def test_the_slurm_cluster_is_built_without_submitting_a_job():
    pytest.importorskip("dask_jobqueue")  # the [cluster] and [dev] extras
    from aebnas.search.executors.dask_cluster import slurm_cluster

    settings = _executor("executor=slurm", "executor.partition=gpu", "executor.gpus_per_job=2",
                         "executor.candidates_per_gpu=2", "executor.walltime=01:30:00", "executor.cores_per_job=8",
                         "executor.job_directives=['--account=nas']", "executor.job_prologue=['module load cuda']",
                         "executor.dashboard_address=null")
    cluster = slurm_cluster(settings, threads=2)
    try:
        script = cluster.job_script()
        for line in ("#SBATCH -p gpu", "#SBATCH -t 01:30:00", "#SBATCH --gres=gpu:2", "#SBATCH --account=nas",
                     "#SBATCH --cpus-per-task=8", "module load cuda", "export OMP_NUM_THREADS=2"):
            assert line in script, script
        assert "--nworkers 4" in script and "--nthreads 1" in script  # 2 GPUs x 2 candidates, one each
        assert cluster.workers == {} and cluster.scheduler_info["workers"] == {}  # nothing submitted
    finally:
        cluster.close()


def test_importing_the_dask_executor_keeps_the_runs_log_level_for_distributed():
    """distributed resets its logger to INFO on import; the run's WARNING (conf/config.yaml) must survive it."""
    code = ("import logging; logging.getLogger('distributed').setLevel(logging.WARNING); "
            "import aebnas.search.executors.dask_cluster; print(logging.getLogger('distributed').level)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == str(logging.WARNING)


def _malloc_trim_threshold():
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_workers_keep_glibcs_own_malloc_thresholds(synthetic, monkeypatch):
    """Dask's default MALLOC_TRIM_THRESHOLD_ makes torch on the CPU fault in every tensor anew: workers start without it."""
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    evaluator = CandidateEvaluator(synthetic, TRAINER, SearchSettings(exit_metric="max_softmax"), CPU)
    with start_executor(TWO, evaluator.training, pop_size=2) as executor:
        seen = executor.client.run(_malloc_trim_threshold)
    assert len(seen) == 2 and set(seen.values()) == {None}
