"""One writer per run directory: an OS lock on ``<run dir>/run.lock``, held while a search writes there.

Two processes on one run directory (a second ``resume=``, a cluster job queued
again while the first still runs) would both train and then collide in the
archive. The lock is ``fcntl.flock``: the kernel drops it when its holder dies,
however it dies, so a killed search never blocks its own resume. The file keeps
the holder's pid, host and start time, for the message that refuses the second.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = "run.lock"

_held: dict[str, "RunDirLock"] = {}  # this process's locks by path: taking one again is a no-op


class RunDirBusy(RuntimeError):
    """Another live process writes this run directory."""


class RunDirLock:
    """``with RunDirLock(run_dir):`` holds the run directory for this process, or raises ``RunDirBusy`` at once."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self._depth = 0

    def acquire(self) -> "RunDirLock":
        key = str(self.path.resolve())
        held = _held.get(key)
        if held is not None:  # the CLI holds it and run_search takes it again
            held._depth += 1
            return held
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.read(fd, 4096))
            os.close(fd)
            raise RunDirBusy(f"run dir: '{self.run_dir}' is being written by another process ({holder}); wait for "
                             f"it to end or stop it, then continue with resume={self.run_dir}") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}).encode())
        os.fsync(fd)
        self._fd, self._depth = fd, 1
        _held[key] = self
        return self

    def release(self) -> None:
        self._depth -= 1
        if self._depth > 0 or self._fd is None:
            return
        _held.pop(str(self.path.resolve()), None)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "RunDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        held = _held.get(str(self.path.resolve()), self)
        held.release()


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.decode())
        return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
    except (ValueError, KeyError, UnicodeDecodeError):
        return "it has not written its pid yet"
