"""A search killed with SIGKILL mid-generation, twice, then resumed, ends exactly like an uninterrupted one
(the first run trains on two Dask worker processes, which must die with it; the others in-process)."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aebnas.analysis import load_run

ARGS = ["dataset=synthetic", "dataset.num_samples=400", "dataset.resolution=8", "dataset.channels=1",
        "dataset.num_classes=4", "search.pop_size=4", "search.generations=3", "trainer.epochs=2",
        "trainer.device=cpu", "trainer.num_threads=1", "progress=false", "seed=3", "search=nsga2"]
# The surrogate loop on the same budget of 12: 4 sampled, then 4 iterations of 2 chosen from a small inner search.
MSUNAS_ARGS = [a for a in ARGS if a != "search=nsga2"] + [
    "search=msunas", "search.n_doe=4", "search.per_iteration=2", "search.inner_pop_size=8",
    "search.inner_generations=3", "search.predictor=adaptive"]


def _start(hydra_dir: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "aebnas.cli.search", f"hydra.run.dir={hydra_dir}", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _archive(run_dir: Path) -> list[tuple]:
    path = run_dir / "archive.sqlite"
    if not path.exists():
        return []
    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, key, data FROM evaluations ORDER BY id").fetchall()


def _children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (its candidate workers, for one), from /proc."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _generation_rows(run_dir: Path) -> int:
    path = run_dir / "generations.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.exists() else 0


def _kill_after(proc: subprocess.Popen, run_dir: Path, n_rows: int, timeout: float = 240,
                generations: int | None = None) -> None:
    """SIGKILL once the archive holds ``n_rows`` (or, with ``generations``, once generations.csv has that many
    rows: for msunas, right when predictors start fitting for the next iteration)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if (_generation_rows(run_dir) >= generations if generations is not None
                    else len(_archive(run_dir)) >= n_rows):
                break
        except sqlite3.OperationalError:
            pass  # the database is being created
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before it could be killed:\n{proc.communicate()[1][-2000:]}"
    children = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    deadline = time.time() + 20
    while any(_alive(c) for c in children) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(c) for c in children), "candidate workers outlived the killed search"


def _comparable(row: tuple) -> tuple:
    data = json.loads(row[2])
    for varying in ("train_seconds", "eval_seconds", "tune_seconds", "model_file"):
        data.pop(varying)
    return row[1], data


@pytest.mark.slow
def test_killed_twice_then_resumed_equals_uninterrupted(tmp_path):
    run = tmp_path / "killed"
    _kill_after(_start(run, *ARGS, "workers=2"), run, 2)             # inside generation 1 (4 candidates), 2 workers
    first = _archive(run)
    # rows are recorded in order: a slow first candidate can hold back the other three, so up to 4 at once
    assert 2 <= len(first) <= 4 and not (run / "pareto.csv").exists()
    _kill_after(_start(tmp_path / "log1", f"resume={run}"), run, 6)  # inside generation 2
    second = _archive(run)
    assert second[:len(first)] == first                              # finished rows are kept as they were
    assert 6 <= len(second) <= 8 and not (run / "pareto.csv").exists()
    done = _start(tmp_path / "log2", f"resume={run}")
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-2000:]
    assert "executor=dask: 2 worker(s)" in out + err  # the saved run's workers=2, kept without an override

    clean = tmp_path / "clean"
    proc = _start(clean, *ARGS)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]

    resumed_rows, clean_rows = _archive(run), _archive(clean)
    assert resumed_rows[:len(second)] == second
    # same candidates, same order, same metrics (timings and paths aside); ids 1..n: nothing evaluated twice
    assert [_comparable(r) for r in resumed_rows] == [_comparable(r) for r in clean_rows]
    assert [r[0] for r in resumed_rows] == list(range(1, len(clean_rows) + 1)) == [r[0] for r in clean_rows]
    a, b = load_run(run), load_run(clean)
    assert list(a.pareto["genome"]) == list(b.pareto["genome"])
    assert list(a.pareto["test_accuracy"]) == list(b.pareto["test_accuracy"])
    assert list(a.generations["pareto_size"]) == list(b.generations["pareto_size"])
    ca, cb = (json.loads((d / "checkpoint.json").read_text()) for d in (run, clean))
    assert ca["population"] == cb["population"] and ca["rng_state"] == cb["rng_state"]


def test_resume_refuses_another_config(tmp_path):
    run = tmp_path / "run"
    proc = _start(run, *[a.replace("search.generations=3", "search.generations=1").replace("search.pop_size=4", "search.pop_size=2") for a in ARGS])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    proc = _start(tmp_path / "log", f"resume={run}", "search.pop_size=6")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines() == [f"aebnas-search: error: resume: search.pop_size was 2 in '{run}', not 6; "
                                        "resume without changing it"]
    proc = _start(tmp_path / "log2", f"resume={tmp_path / 'nothing'}")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "resume: no config.yaml" in err


@pytest.mark.slow
def test_killed_msunas_search_resumes_to_the_same_archive_and_front(tmp_path):
    """Killed right after the sampled networks (while the predictors fit and the inner NSGA-II runs), then inside
    an iteration's training, then resumed: the same archive, front and per-iteration records as a clean run."""
    run = tmp_path / "killed"
    _kill_after(_start(run, *MSUNAS_ARGS), run, 0, generations=1)     # the sampling row written: fitting now
    first = _archive(run)
    assert len(first) == 4 and not (run / "pareto.csv").exists()
    _kill_after(_start(tmp_path / "log1", f"resume={run}"), run, 7)  # inside the third iteration's training
    second = _archive(run)
    assert second[:len(first)] == first and 7 <= len(second) < 12
    done = _start(tmp_path / "log2", f"resume={run}")
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-2000:]

    clean = tmp_path / "clean"
    proc = _start(clean, *MSUNAS_ARGS)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    resumed_rows, clean_rows = _archive(run), _archive(clean)
    assert [_comparable(r) for r in resumed_rows] == [_comparable(r) for r in clean_rows]
    assert [r[0] for r in resumed_rows] == list(range(1, 13)) == [r[0] for r in clean_rows]
    a, b = load_run(run), load_run(clean)
    assert list(a.pareto["genome"]) == list(b.pareto["genome"])
    assert list(a.pareto["test_accuracy"]) == list(b.pareto["test_accuracy"])
    columns = ["generation", "evaluations", "pareto_size", "predictor", "predictor_tau", "cost_predictor"]
    assert a.generations[columns].equals(b.generations[columns])
    ca, cb = (json.loads((d / "checkpoint.json").read_text()) for d in (run, clean))
    assert ca["population"] == cb["population"] and len(ca["population"]) == 12  # msunas: the whole archive


def test_a_saved_config_without_cost_predictor_resumes_with_the_accuracy_model_for_cost(tmp_path):
    """A run whose config.yaml has no search.cost_predictor fitted its cost model with search.predictor's: the
    resumed run must refit the same model, not the schema's default, or its replayed iterations pick other networks."""
    from omegaconf import OmegaConf

    from aebnas.cli.search import resumed_config

    run = tmp_path / "run"
    run.mkdir()
    OmegaConf.save(OmegaConf.create({"seed": 0, "search": {"algorithm": "msunas", "predictor": "rbf"}}),
                   run / "config.yaml")
    cfg = OmegaConf.create({"resume": str(run), "seed": 0,
                            "search": {"algorithm": "msunas", "predictor": "trees", "cost_predictor": "adaptive"}})
    saved, _ = resumed_config(cfg, [])
    assert saved.search.predictor == "rbf" and saved.search.cost_predictor is None
    OmegaConf.save(OmegaConf.create({"seed": 0, "search": {"algorithm": "msunas", "predictor": "rbf",
                                                           "cost_predictor": "gp"}}), run / "config.yaml")
    assert resumed_config(cfg, [])[0].search.cost_predictor == "gp"  # a saved choice is kept as it is


def test_a_saved_config_without_max_per_backbone_resumes_uncapped(tmp_path):
    """A saved config without search.max_per_backbone comes from a run that picked without a cap; under
    macs_target the schema's null would cap its replayed iterations at 2 and they would pick other networks."""
    from omegaconf import OmegaConf

    from aebnas.cli.search import resumed_config
    from aebnas.search import SearchSettings

    run = tmp_path / "run"
    run.mkdir()
    search = {"algorithm": "msunas", "objective": "macs_target", "target_macs": 6e5}
    OmegaConf.save(OmegaConf.create({"seed": 0, "search": search}), run / "config.yaml")
    cfg = OmegaConf.create({"resume": str(run), "seed": 0, "search": {**search, "max_per_backbone": None}})
    saved, _ = resumed_config(cfg, [])
    assert saved.search.max_per_backbone == 0
    assert SearchSettings.from_dict(saved.search).backbone_cap is None
    OmegaConf.save(OmegaConf.create({"seed": 0, "search": {**search, "max_per_backbone": None}}), run / "config.yaml")
    saved, _ = resumed_config(cfg, [])
    assert saved.search.max_per_backbone is None and SearchSettings.from_dict(saved.search).backbone_cap == 2


@pytest.mark.slow
def test_a_run_saved_without_the_newer_search_keys_resumes_to_the_same_archive(tmp_path):
    """A run whose config.yaml and archive record lack search.cost_predictor and search.max_per_backbone resumes
    (not refused as another config) and ends with the archive of a clean run under the values it ran with."""
    from aebnas.search.archive import EvaluationArchive

    args = [*MSUNAS_ARGS, "search.objective=macs_target", "search.target_macs=2e4"]
    legacy = ["search.cost_predictor=null", "search.max_per_backbone=0"]  # what such a run did
    run = tmp_path / "old"
    _kill_after(_start(run, *args, *legacy), run, 0, generations=1)
    text = (run / "config.yaml").read_text()
    dropped = [line for line in text.splitlines() if line.strip().startswith(("cost_predictor:", "max_per_backbone:"))]
    assert len(dropped) == 2
    (run / "config.yaml").write_text("\n".join(line for line in text.splitlines() if line not in dropped) + "\n")
    archive = EvaluationArchive(run / "archive.sqlite")
    record = json.loads(archive.get_meta("config"))
    del record["search"]["cost_predictor"], record["search"]["max_per_backbone"]
    archive.set_meta("config", json.dumps(record, sort_keys=True))
    archive.close()

    done = _start(tmp_path / "log", f"resume={run}")
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-2000:]
    clean = tmp_path / "clean"
    proc = _start(clean, *args, *legacy)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert [_comparable(r) for r in _archive(run)] == [_comparable(r) for r in _archive(clean)]
    assert len(_archive(run)) == 12
