"""Where candidates train: in the search's process (``local``) or on Dask workers (``dask``, ``slurm``).

One mechanism for every parallel case: a Dask cluster, started here (one worker
process per CPU slot or per GPU slot), joined at an address, or started as SLURM
jobs by dask-jobqueue. The evaluator hands a generation's new networks to
``submit`` and records the results in the order pymoo asked for them, so the
worker count never steers the search.
"""

from __future__ import annotations

from aebnas.search.executors.settings import KINDS, ExecutorSettings

__all__ = ["KINDS", "ExecutorSettings", "WorkerStartError", "ClusterLost", "start_executor"]


class WorkerStartError(RuntimeError):
    """The workers could not start or be reached; the message says what to check."""


class ClusterLost(ConnectionError):
    """The scheduler went away mid-search: the machine's fault, not a candidate's (finished rows are archived)."""


def start_executor(settings: ExecutorSettings, training, pop_size: int):
    """The running executor for ``settings``, or None for ``local`` (the evaluator then trains in-process)."""
    if settings.name == "local":
        return None
    from aebnas.search.executors.dask_cluster import DaskExecutor

    return DaskExecutor.start(settings, training, pop_size)
