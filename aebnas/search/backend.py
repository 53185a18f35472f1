"""The evaluation backend's training pool: where a batch's new networks train while the search runs.

``CandidateEvaluator.evaluate_all`` hands each network it must train to
``evaluator.pool`` (anything with ``submit(genome) -> Future[TrainedNetwork]``
and ``close(abort=False)``) and records the results in the order asked; with no
pool it trains them in this process. ``training_pool`` chooses and starts the
pool for the search's lifetime and stops it however the search ends.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

import torch

from aebnas.search.evaluator import CandidateEvaluator
from aebnas.search.workers import CandidatePool

log = logging.getLogger("aebnas.search")


def _start_pool(evaluator: CandidateEvaluator, workers: int, batch_size: int) -> CandidatePool:
    """The worker processes, with torch's threads split between them unless ``trainer.num_threads`` is set."""
    device = evaluator.training.device
    threads = evaluator.training.trainer.num_threads or max(1, torch.get_num_threads() // workers)
    cores = os.cpu_count() or 1
    if device.type == "cpu" and workers * threads > cores:
        log.warning("workers=%d x %d thread(s) each is more than this machine's %d cores: they will slow each other "
                    "down; use workers=%d or fewer", workers, threads, cores, max(1, cores // threads))
    if workers > batch_size:
        log.warning("workers=%d: at most pop_size=%d candidates are new at a time, the other workers stay idle",
                    workers, batch_size)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the workers have their own CUDA contexts; free what this process cached
    log.info("training %d candidates at once in worker processes, %d torch thread(s) each", workers, threads)
    return CandidatePool(evaluator.training, workers, threads)


@contextmanager
def training_pool(evaluator: CandidateEvaluator, workers: int, batch_size: int) -> Iterator[None]:
    """``evaluator`` trains in ``workers`` processes inside the block (in-process for 1); on an error or Ctrl-C
    the workers stop at once, not after their candidates."""
    if workers > 1:
        evaluator.pool = _start_pool(evaluator, workers, batch_size)
    try:
        yield
    except BaseException:
        if evaluator.pool is not None:
            evaluator.pool.close(abort=True)
        raise
    finally:
        pool, evaluator.pool = evaluator.pool, None
    if pool is not None:
        pool.close()
