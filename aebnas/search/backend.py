"""The evaluation backend's executor: where a batch's new networks train while the search runs.

``CandidateEvaluator.evaluate_all`` hands each network it must train to
``evaluator.pool`` (anything with ``submit(genome)`` returning an object whose
``result()`` is the trained network, and ``close(abort=False)``) and records the
results in the order asked; with no pool it trains them in this process.
``training_pool`` starts the executor ``executor`` names (aebnas/search/executors)
for the search's lifetime and stops it however the search ends.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator

from aebnas.search.evaluator import CandidateEvaluator
from aebnas.search.executors import ExecutorSettings, start_executor

log = logging.getLogger("aebnas.search")


@contextmanager
def training_pool(evaluator: CandidateEvaluator, executor: ExecutorSettings, batch_size: int) -> Iterator[Any]:
    """``evaluator`` trains on ``executor``'s workers inside the block (in-process for ``local``), which yields
    the running executor (None for ``local``); on an error or Ctrl-C the workers stop at once, not after their
    candidates."""
    evaluator.pool = start_executor(executor, evaluator.training, batch_size)
    try:
        yield evaluator.pool
    except BaseException:
        if evaluator.pool is not None:
            evaluator.pool.close(abort=True)
        raise
    finally:
        pool, evaluator.pool = evaluator.pool, None
    if pool is not None:
        pool.close()
