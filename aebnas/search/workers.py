"""Several candidates trained at once, each in its own worker process.

One small candidate cannot keep a machine busy: on a GPU its steps are
launch-bound and the first epoch of every new layer shape waits on cuDNN
(docs/benchmarks.md, #3); on a small CPU a tiny network's per-op overhead keeps
it from using every core. Workers train different candidates side by side.
The worker count does not steer the search: a candidate's seed comes from its
network alone (``candidate_seed``), and the evaluator records results in the
order pymoo asked for them. On the CPU the results are then identical to
training one by one with the same number of torch threads per process; another
thread count changes the last bits of the arithmetic, and so the search's path.

Workers are spawned (never forked: CUDA and forked processes do not mix) and
receive the data and settings once, at start, as plain bytes; nothing goes
through shared memory, whose size containers often cap. Spawning re-imports the
calling script, so a script that calls ``run_search(..., workers=2)`` needs the
usual ``if __name__ == "__main__":`` guard (the console scripts have it).
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace

import torch

from aebnas.nn.supernet import Supernet
from aebnas.search.training import CandidateTraining, TrainedNetwork
from aebnas.space import Genome

_TRAINING: CandidateTraining | None = None  # the worker process's copy, set once by _start_worker


class WorkerStartError(RuntimeError):
    """The worker processes could not start; the message says what to check."""


def _exit_with_parent() -> None:
    """End this worker when the search's process dies (killed, say), not hang on as an orphan holding memory."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)


def _log_to_stderr() -> None:
    """The worker's INFO lines (a long candidate's epochs) on stderr, marked with its pid; spawned processes
    start with no logging set up, and the search process's handlers (Hydra's) are not inherited."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[%(asctime)s][worker %(process)d][%(name)s][%(levelname)s] - %(message)s"))
    logger = logging.getLogger("aebnas")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _start_worker(payload: bytes, threads: int) -> None:
    global _TRAINING
    # Ctrl-C is the search process's to handle: it stops the pool; a worker must not turn it into a failed candidate.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _log_to_stderr()
    threading.Thread(target=_exit_with_parent, name="exit-with-parent", daemon=True).start()
    torch.set_num_threads(threads)
    _TRAINING = pickle.loads(payload)
    if _TRAINING.device.type == "cuda" and _TRAINING.device.index is not None:
        torch.cuda.set_device(_TRAINING.device)


def _ready() -> int:
    return os.getpid()


def _train_in_worker(genome: Genome) -> TrainedNetwork:
    if _TRAINING is None:
        raise RuntimeError("candidate worker used before _start_worker ran")
    return _TRAINING.train(genome)


def _on_cpu(supernet: Supernet | None) -> Supernet | None:
    """A CPU copy of the supernet for the workers (inherit_weights copies across devices)."""
    return None if supernet is None else copy.deepcopy(supernet).cpu()


class CandidatePool:
    """``workers`` spawned processes, each training one candidate at a time with ``threads`` torch threads.

    The workers are started and checked at construction, so a pool that cannot
    work fails here with a message, not later as a broken pool.
    """

    def __init__(self, training: CandidateTraining, workers: int, threads: int):
        if workers < 2:
            raise ValueError(f"CandidatePool: needs at least 2 workers, got {workers} (train in-process instead)")
        self.workers, self.threads = workers, threads
        # Workers never score the test split; leaving it out saves a copy of it per worker.
        data = replace(training.data, test=training.data.test[:0])
        payload = pickle.dumps(replace(training, data=data, supernet=_on_cpu(training.supernet)),
                               protocol=pickle.HIGHEST_PROTOCOL)
        self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(payload, threads))
        try:
            self._executor.submit(_ready).result()
        except BrokenProcessPool:
            self.close(abort=True)
            raise WorkerStartError(
                "workers: the worker processes could not start (their error is printed above); a script that "
                "calls run_search with workers > 1 needs an `if __name__ == \"__main__\":` guard, or use "
                "workers=1") from None

    def submit(self, genome: Genome) -> "Future[TrainedNetwork]":
        return self._executor.submit(_train_in_worker, genome)

    def close(self, abort: bool = False) -> None:
        """Stop the workers. Normally after the last candidate; with ``abort`` (an error, Ctrl-C) at once:
        candidates still training are lost, and so are finished ones not yet recorded (they wait for
        earlier ones in pymoo's order), but every recorded one is in the archive."""
        if not abort:
            self._executor.shutdown(wait=True, cancel_futures=True)
            return
        processes = list(getattr(self._executor, "_processes", {}).values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(timeout=10)

    def __enter__(self) -> "CandidatePool":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(abort=exc_type is not None)
