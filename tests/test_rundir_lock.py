"""One writer per run directory: a live holder refuses a second process at start; a dead holder's lock is void."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from aebnas.search.rundir_lock import LOCK_NAME, RunDirBusy, RunDirLock
from tests.conftest import ROOT

HOLD = ("import sys, time\n"
        "from aebnas.search.rundir_lock import RunDirLock\n"
        "RunDirLock(sys.argv[1]).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n")


def _holder(run_dir) -> subprocess.Popen:
    """Another process holding ``run_dir`` (it says 'held' once it does)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_refuses_a_second_process_naming_it(tmp_path):
    proc = _holder(tmp_path / "run")
    try:
        with pytest.raises(RunDirBusy) as info:
            RunDirLock(tmp_path / "run").acquire()
        message = str(info.value)
        assert f"pid {proc.pid} on host {socket.gethostname()}" in message
        assert message.startswith(f"run dir: '{tmp_path / 'run'}' is being written by another process")
        assert "\n" not in message
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holders_lock_never_blocks(tmp_path):
    proc = _holder(tmp_path / "run")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "run" / LOCK_NAME).exists()  # the file stays; the kernel dropped the lock with its holder
    with RunDirLock(tmp_path / "run"):
        assert f'"pid": {os.getpid()}' in (tmp_path / "run" / LOCK_NAME).read_text()


def test_the_same_process_may_take_its_lock_again_and_releases_it_at_the_outermost(tmp_path):
    with RunDirLock(tmp_path / "run"):
        with RunDirLock(tmp_path / "run"):  # the CLI holds it, then run_search takes it
            pass
        proc = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(600)", ""), str(tmp_path / "run")],
                              capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode != 0 and "RunDirBusy" in proc.stderr  # still held after the inner release
    with RunDirLock(tmp_path / "run"):
        pass


def test_a_second_search_on_a_live_run_directory_is_refused_in_one_line(tmp_path):
    proc = _holder(tmp_path / "run")
    try:
        start = time.perf_counter()
        cli = subprocess.run([sys.executable, "-m", "aebnas.cli.search", f"hydra.run.dir={tmp_path / 'run'}",
                              "experiment=quickstart", "progress=false"], capture_output=True, text=True,
                             timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
        lines = cli.stderr.strip().splitlines()
        assert cli.returncode == 2 and len(lines) == 1, cli.stderr
        assert lines[0].startswith("aebnas-search: error: run dir: ") and f"pid {proc.pid} on host" in lines[0]
        assert not (tmp_path / "run" / "config.yaml").exists()  # refused before writing anything
        assert time.perf_counter() - start < 120
    finally:
        proc.kill()
        proc.wait()
