"""Executor settings (the Hydra ``executor`` group): where candidates train, validated before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

from aebnas.validation import ConfigError, check_int, check_number, reject_unknown_keys

KINDS = ("local", "dask", "slurm")


@dataclass(frozen=True)
class ExecutorSettings:
    """How candidates are trained (field meanings in conf/executor/*.yaml).

    ``local`` trains one candidate at a time in the search's process; ``dask`` starts a local Dask cluster
    (or joins the scheduler at ``address``); ``slurm`` starts Dask workers as SLURM jobs (dask-jobqueue).
    """

    name: str = "local"
    # dask (local cluster or address)
    address: str | None = None
    n_workers: int | None = None
    threads: int | None = None
    gpus: tuple[int, ...] | None = None
    candidates_per_gpu: int = 1
    retries: int = 2
    connect_timeout: float = 10.0
    dashboard_address: str | None = ":8787"
    # slurm
    partition: str | None = None
    jobs: int = 1
    gpus_per_job: int = 1
    cores_per_job: int = 4
    memory_per_job: str = "16GB"
    walltime: str = "02:00:00"
    job_directives: tuple[str, ...] = ()
    job_prologue: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> "ExecutorSettings":
        """Validate types, ranges and combinations before any work starts."""
        cfg = dict(cfg or {})
        reject_unknown_keys(cfg, (f.name for f in fields(cls)), "executor")
        for name in ("gpus", "job_directives", "job_prologue"):
            value = cfg.get(name)
            if value is not None and not isinstance(value, (list, tuple)):
                raise ConfigError(f"executor.{name}: expected a list, got {value!r}")
            if value is not None:
                cfg[name] = tuple(value)
        s = cls(**cfg)
        if s.name not in KINDS:
            raise ConfigError(f"executor.name: unknown executor {s.name!r}; choose one of {list(KINDS)}")
        if s.n_workers is not None:
            check_int(s.n_workers, "executor.n_workers", lo=1)
        if s.threads is not None:
            check_int(s.threads, "executor.threads", lo=1)
        for i in s.gpus or ():
            check_int(i, "executor.gpus[]", lo=0)
        check_int(s.candidates_per_gpu, "executor.candidates_per_gpu", lo=1)
        check_int(s.retries, "executor.retries", lo=0)
        check_number(s.connect_timeout, "executor.connect_timeout", lo=0.1)
        check_int(s.jobs, "executor.jobs", lo=1)
        check_int(s.gpus_per_job, "executor.gpus_per_job", lo=0)
        check_int(s.cores_per_job, "executor.cores_per_job", lo=1)
        if s.address is not None and not (isinstance(s.address, str) and "://" in s.address):
            raise ConfigError(f"executor.address: expected a scheduler address such as tcp://host:8786, "
                              f"got {s.address!r}")
        if s.address is not None and s.name != "dask":
            raise ConfigError(f"executor.address: only executor=dask joins a running scheduler, not "
                              f"executor={s.name}")
        return s

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
