"""The console script as a user meets it: a short real run, and one-line errors for bad input."""

import os
import subprocess
import sys

import pytest

from aebnas.analysis import load_run
from aebnas.search.executors import ClusterLost

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _cli(tmp_path, *args):
    cmd = [sys.executable, "-m", "aebnas.cli.search", f"hydra.run.dir={tmp_path / 'run'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=300)


def test_short_search_through_the_cli(tmp_path):
    proc = _cli(tmp_path, "dataset=synthetic", "dataset.num_samples=300", "dataset.resolution=8", "dataset.channels=1",
                "dataset.num_classes=3", "search.pop_size=3", "search.generations=1", "trainer.epochs=1",
                "trainer.device=cpu", "progress=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = load_run(tmp_path / "run")
    assert len(run.evaluations) == 3 and len(run.pareto) >= 1
    assert run.config["search"]["pop_size"] == 3
    assert "Pareto set" in proc.stdout


@pytest.mark.parametrize("args, fragment", [
    (["dataset=imagenet"], "dataset: no config 'imagenet'"),
    (["method=darts"], "method: no config 'darts'; choose one of: aebnas, edanas, manual, nachos, random, static"),
    (["space.exit_heads=[conv8k3]"], "space.exit_heads: 1 heads for 4 exit stages"),
    (["search.algorithm=grid"], "search.algorithm: 'grid' is not one of"),
    (["dataset.name=imagenet"], "dataset.name: unknown dataset 'imagenet'"),
    (["dataset=cifar10", "dataset.data_dir=/nonexistent/cifar"], "dataset.data_dir: CIFAR-10 not found"),
    (["search.pop_size=1"], "search.pop_size: must be an integer >= 2"),
    (["search.n_doe=1000"], "search.n_doe: 1000 sampled networks do not fit the budget of 360"),
    (["search.per_iteration=41"], "search.per_iteration: 41 is more than the inner population"),
    (["search.predictor=xgboost"], "search.predictor: 'xgboost' is not one of"),
    (["workers=0"], "workers: must be in [1, inf], got 0"),
    (["executor=dask", "executor.address=tcp://127.0.0.1:9", "executor.connect_timeout=1"],
     "executor.address: no Dask scheduler answered at tcp://127.0.0.1:9 within 1 s"),
    (["space.thresholds=[0.5,1.5]"], "space.thresholds: choice 1.5 is outside (0, 1]"),
    (["search.initial_genomes=[k3e2/garbage]"], "search.initial_genomes[0]: genome text"),
    (["search.objective=aebnas"], "search.target_macs"),
    (["trainer.optimizer=adam"], "trainer.optimizer"),
    (["trainer.lr=abc"], "trainer.lr: expected a number"),
    (["search.threshold_tuning=no"], "search.threshold_tuning: expected true or false"),
    (["+dataset.val_sise=3"], "dataset.val_sise: unknown key"),
    (["dataset.val_sise=3"], "Could not override 'dataset.val_sise'; To append to your config use +dataset.val_sise=3"),
    (["dataset.data_dir=~/data"], "override 'dataset.data_dir=~/data' cannot be parsed"),
    (["trainer.device=cuda:0"] if not __import__("torch").cuda.is_available() else ["trainer.device=tpu"],
     "trainer.device"),
])
def test_bad_input_gets_one_line(tmp_path, args, fragment):
    proc = _cli(tmp_path, *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("aebnas-search: error: ") and fragment in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "evaluations.csv").exists()


@pytest.mark.parametrize("failure, fragment", [
    (OSError(28, "No space left on device"), "No space left on device"),
    (ClusterLost("the Dask scheduler or this search's connection to it was lost"), "ClusterLost: the Dask scheduler"),
])
def test_machine_failure_is_one_line_with_the_way_back(capsys, failure, fragment):
    from aebnas.cli.common import user_errors

    with pytest.raises(SystemExit) as info:
        with user_errors("aebnas-search"):
            raise failure
    assert info.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and "resume=<run dir>" in err[0]
