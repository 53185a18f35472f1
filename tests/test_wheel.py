"""The package as a user gets it: a wheel, installed outside the clone, runs a search with its own configs.

Installing torch into a fresh environment takes minutes, so the fresh venv gets the
wheel alone (``--no-deps``) and sees this environment's dependencies through one
path line in a ``.pth`` file. Path lines are added to ``sys.path`` but the ``.pth``
files inside the added directory are not processed, so an editable install of
aebnas there stays inactive: the test checks that ``aebnas`` is imported from the
fresh venv, not from the clone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
# What setup.cfg needs to build the wheel; the rest of the clone stays behind.
SOURCE = ["aebnas", "setup.cfg", "pyproject.toml", "README.md"]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_wheel_installed_outside_the_clone_runs_the_quickstart(tmp_path):
    start = time.perf_counter()
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCE:
        item = REPO / name
        if item.is_dir():
            shutil.copytree(item, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        else:
            shutil.copy2(item, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AEBNAS_CONFIG_DIR", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
          str(src)], tmp_path, env, 120)
    wheels = list((tmp_path / "dist").glob("aebnas-*.whl"))
    assert len(wheels) == 1, wheels

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env, 60)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheels[0])],
         tmp_path, env, 120)
    fresh_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           tmp_path, env, 30).stdout.strip())
    (fresh_site / "current_env_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([str(python), "-c", "import aebnas; print(aebnas.__file__)"], work, env, 60).stdout.strip()
    assert Path(where).is_relative_to(venv), f"aebnas imported from {where}, not from the fresh venv"
    conf = fresh_site / "aebnas" / "conf"
    assert (conf / "experiment" / "quickstart.yaml").is_file()
    assert list((conf / "hardware" / "tables").glob("*/*.json")), "latency tables missing from the wheel"

    run_dir = work / "run"
    done = _run([str(venv / "bin" / "aebnas-search"), "experiment=quickstart", "search.generations=1",
                 "search.pop_size=4", "search.final_epochs=1", "workers=1", "trainer.epochs=1",
                 "trainer.num_threads=1", "dataset.max_train_samples=256", "progress=false",
                 f"hydra.run.dir={run_dir}"], work, env, 600)
    evaluations = pd.read_csv(run_dir / "evaluations.csv")
    assert len(evaluations) == 4 and (evaluations["status"] == "ok").all()
    pareto = pd.read_csv(run_dir / "pareto.csv")
    assert 1 <= len(pareto) <= 4 and pareto["test_accuracy"].between(0, 1).all()
    assert (run_dir / "pareto.png").stat().st_size > 0
    n = len(pareto)
    assert f"Pareto set: {n} network{'' if n == 1 else 's'}, each then trained 1 more epoch " in done.stdout
    print(f"wheel built, installed and searched with in {time.perf_counter() - start:.0f} s")
