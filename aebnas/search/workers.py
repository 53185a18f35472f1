"""Several candidates trained at once, each in its own worker process.

One small candidate cannot keep a machine busy: on a GPU its steps are
launch-bound and the first epoch of every new layer shape waits on cuDNN
(docs/benchmarks.md, #3); on a small CPU a tiny network's per-op overhead keeps
it from using every core. Workers train different candidates side by side.
Results do not depend on how many workers there are: a candidate's seed comes
from its network alone (``candidate_seed``), and the evaluator records results
in the order pymoo asked for them.

Workers are spawned (never forked: CUDA and forked processes do not mix) and
receive the data and settings once, at start, as plain bytes; nothing goes
through shared memory, whose size containers often cap.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import pickle
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace

import torch

from aebnas.nn.supernet import Supernet
from aebnas.search.training import CandidateTraining, TrainedNetwork
from aebnas.space import Genome

_TRAINING: CandidateTraining | None = None  # the worker process's copy, set once by _start_worker


def _exit_with_parent() -> None:
    """End this worker when the search's process dies (killed, say), not hang on as an orphan holding memory."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)


def _start_worker(payload: bytes, threads: int) -> None:
    global _TRAINING
    threading.Thread(target=_exit_with_parent, name="exit-with-parent", daemon=True).start()
    torch.set_num_threads(threads)
    _TRAINING = pickle.loads(payload)
    if _TRAINING.device.type == "cuda" and _TRAINING.device.index is not None:
        torch.cuda.set_device(_TRAINING.device)


def _train_in_worker(genome: Genome) -> TrainedNetwork:
    if _TRAINING is None:
        raise RuntimeError("candidate worker used before _start_worker ran")
    return _TRAINING.train(genome)


def _on_cpu(supernet: Supernet | None) -> Supernet | None:
    """A CPU copy of the supernet for the workers (inherit_weights copies across devices)."""
    if supernet is None:
        return None
    clone = Supernet(supernet.space, supernet.num_classes, supernet.in_channels)
    clone.load_state_dict({k: v.detach().cpu() for k, v in supernet.state_dict().items()})
    return clone


class CandidatePool:
    """``workers`` spawned processes, each training one candidate at a time with ``threads`` torch threads."""

    def __init__(self, training: CandidateTraining, workers: int, threads: int):
        if workers < 2:
            raise ValueError(f"CandidatePool: needs at least 2 workers, got {workers} (train in-process instead)")
        self.workers, self.threads = workers, threads
        payload = pickle.dumps(replace(training, supernet=_on_cpu(training.supernet)),
                               protocol=pickle.HIGHEST_PROTOCOL)
        self._executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(payload, threads))

    def submit(self, genome: Genome) -> "Future[TrainedNetwork]":
        return self._executor.submit(_train_in_worker, genome)

    def close(self) -> None:
        """Stop the workers; candidates not yet started are dropped (the archive holds every finished one)."""
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "CandidatePool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
