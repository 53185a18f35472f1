"""Executor settings (the Hydra ``executor`` group): where candidates train, validated before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from aebnas.config_checks import ConfigError, Settings, check_int, setting

KINDS = ("local", "dask", "slurm")


def _int_list(value: Any, name: str, error: type[Exception]) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise error(f"{name}: expected a list of GPU indices such as [0, 1], got {value!r}")
    return tuple(check_int(v, f"{name}[]", lo=0, error=error) for v in value)


def _text_list(value: Any, name: str, error: type[Exception]) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise error(f"{name}: expected a list of lines, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class ExecutorSettings(Settings):
    """Where candidates train (the Hydra ``executor`` group; docs/how-to/parallel-and-cluster.md)."""

    section: ClassVar[str] = "executor"

    name: str = setting("local", choices=KINDS,
                        help="local: one candidate at a time in the search's process; dask: Dask workers (a local "
                             "cluster, or the scheduler at address); slurm: Dask workers as SLURM jobs.")
    address: str | None = setting(None, help="dask: the running scheduler to join, e.g. tcp://host:8786 (null: start "
                                             "a local cluster).")
    n_workers: int | None = setting(None, lo=1, help="dask: worker processes (CPU; null: one per core / threads; "
                                                     "GPU: the total, spread over gpus; null: gpus x "
                                                     "candidates_per_gpu).")
    threads: int | None = setting(None, lo=1, help="Torch threads per worker (null: trainer.num_threads, else this "
                                                   "process's threads split between the workers).")
    gpus: tuple[int, ...] | None = setting(None, check=_int_list, allowed="a list of GPU indices or null",
                                           help="dask: GPUs the workers are pinned to (null: all visible).")
    candidates_per_gpu: int = setting(1, lo=1, help="Worker processes (candidates at once) per GPU.")
    retries: int = setting(2, lo=0, help="A candidate whose worker is killed while it trains goes to another "
                                         "worker this many times, then is recorded as failed.")
    connect_timeout: float = setting(10.0, lo=0.1, help="dask: seconds to reach the scheduler at address.")
    dashboard_address: str | None = setting(":8787", help="Where the Dask dashboard listens (needs bokeh); null: "
                                                          "none.")
    partition: str | None = setting(None, help="slurm: the partition (null: the cluster's default).")
    jobs: int = setting(1, lo=1, help="slurm: jobs of workers kept running.")
    gpus_per_job: int = setting(1, lo=0, help="slurm: GPUs per job (--gres=gpu:N).")
    cores_per_job: int = setting(4, lo=1, help="slurm: CPU cores per job.")
    memory_per_job: str = setting("16GB", help="slurm: memory per job.")
    walltime: str = setting("02:00:00", help="slurm: each job's time limit.")
    job_directives: tuple[str, ...] = setting((), check=_text_list, allowed="a list of lines",
                                              help="slurm: extra #SBATCH lines, e.g. ['--account=proj'].")
    job_prologue: tuple[str, ...] = setting((), check=_text_list, allowed="a list of lines",
                                            help="slurm: shell lines run before each worker starts.")

    def check_together(self) -> None:
        if self.address is not None and "://" not in self.address:
            raise ConfigError(f"executor.address: expected a scheduler address such as tcp://host:8786, "
                              f"got {self.address!r}")
        if self.address is not None and self.name != "dask":
            raise ConfigError(f"executor.address: only executor=dask joins a running scheduler, not "
                              f"executor={self.name}")

    def with_workers(self, workers: int | None) -> "ExecutorSettings":
        """The ``workers=N`` shorthand: N > 1 candidates at once on a local Dask cluster, 1 in-process."""
        if workers is None:
            return self
        check_int(workers, "workers", lo=1)
        if self.name == "slurm":
            raise ConfigError("workers: executor=slurm sizes its workers with executor.jobs and "
                              "executor.candidates_per_gpu; drop workers=")
        if workers == 1:
            return self if self.name == "local" else replace(self, n_workers=1)
        return replace(self, name="dask", n_workers=workers)
