"""Where candidates train: in the search's process (``local``) or on Dask workers (``dask``, ``slurm``).

One mechanism for every parallel case: a Dask cluster, started here (one worker
process per CPU slot or per GPU slot), joined at an address, or started as SLURM
jobs by dask-jobqueue. The evaluator hands a generation's new networks to
``submit`` and records the results in the order pymoo asked for them, so the
worker count never steers the search.
"""

from __future__ import annotations

from aebnas.search.executors.settings import KINDS, ExecutorSettings

__all__ = ["KINDS", "ExecutorSettings", "WorkerStartError", "ClusterLost", "check_scheduler_reachable",
           "start_executor"]


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


def unreachable_message(settings: ExecutorSettings, why: str) -> str:
    return (f"executor.address: no Dask scheduler answered at {settings.address} within "
            f"{settings.connect_timeout:g} s ({why}); start one (dask scheduler; dask worker {settings.address}) "
            "or drop executor.address to start a local cluster")


def check_scheduler_reachable(settings: ExecutorSettings) -> None:
    """Before any data is loaded: the scheduler at ``executor.address`` accepts a connection, or one line says not."""
    if settings.address is None:
        return
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(settings.address)
    try:
        with socket.create_connection((where.hostname, where.port or 8786), timeout=settings.connect_timeout):
            pass
    except OSError as exc:
        raise WorkerStartError(unreachable_message(settings, type(exc).__name__)) from None
