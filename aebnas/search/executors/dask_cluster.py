"""Candidates trained on Dask workers: a local cluster, a running scheduler, or SLURM jobs.

Each worker receives the data, the trainer settings and the supernet once, through
a worker plugin that the scheduler also hands to every worker that joins later (a
restarted or re-queued one), and keeps them across candidates and generations;
a task carries only its genome and returns the trained network's val scores.

A worker process killed while it trains (the out-of-memory killer, a pre-empted
node) is restarted by its nanny, and the scheduler gives the candidate to another
worker, up to ``executor.retries`` times; after that the candidate is recorded as
failed and the search goes on. Each worker trains one candidate at a time
(``nthreads=1``; ``executor.threads`` sets its torch threads), so a dead worker
only ever takes its own candidate with it.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import signal
import threading
import time
import uuid
from collections import deque
from concurrent.futures import CancelledError
from dataclasses import dataclass, replace
from typing import Any

import dask
import torch

# Importing distributed sets its logger to its own default (INFO); keep the level the run configured
# (conf/config.yaml: WARNING), so the console shows aebnas's lines, not every scheduler start and close.
_run_level = logging.getLogger("distributed").level
from distributed import Client, Future, Nanny, Scheduler, SpecCluster, WorkerPlugin, get_worker, wait  # noqa: E402
from distributed.scheduler import KilledWorker  # noqa: E402

if _run_level != logging.NOTSET:
    logging.getLogger("distributed").setLevel(_run_level)

from aebnas.nn.supernet import Supernet
from aebnas.search.executors import ClusterLost, WorkerStartError, unreachable_message
from aebnas.search.executors.settings import ExecutorSettings
from aebnas.search.training import CandidateTraining, TrainedNetwork, short_hash
from aebnas.space import Genome

log = logging.getLogger("aebnas.search")

# Set on the scheduler this module starts; a scheduler met at an address keeps its own (see the how-to).
# worker-saturation 1.0: a worker holds exactly the candidates it trains, none queued behind, so a killed worker
# marks only the candidate it was training as suspicious, and a free worker never waits behind a busy one.
# MALLOC_TRIM_THRESHOLD_ unset (None): Dask's default of 65536 also fixes glibc's mmap threshold, so every
# tensor torch frees on the CPU goes back to the kernel and the next is faulted in again; it doubled the time
# of a small training loop here, and made CPU candidates about 30 % slower on a worker than in the search process.
SCHEDULER_CONFIG = {"distributed.scheduler.worker-saturation": 1.0,
                    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


def worker_env(threads: int, gpu: int | None = None) -> dict[str, str]:
    """Environment of one worker process: its torch threads (Dask pins OpenMP/MKL to 1 by default), its GPU."""
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return env


def visible_gpus(settings: ExecutorSettings) -> list[int]:
    """The GPUs workers are pinned to: ``executor.gpus``, else every GPU this process sees."""
    if settings.gpus is not None:
        return list(settings.gpus)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [int(g) for g in visible.split(",") if g.strip().isdigit()]
    return list(range(torch.cuda.device_count()))


def local_worker_specs(settings: ExecutorSettings, device: torch.device, threads: int) -> dict[str, dict[str, Any]]:
    """One nanny-managed worker process per slot: per CPU slot (``n_workers``), or per GPU slot, pinned to its GPU
    through ``CUDA_VISIBLE_DEVICES`` (``candidates_per_gpu`` on each; ``n_workers`` given instead spreads that
    many over the GPUs in turn). Processes, not threads: torch's seed and cuDNN flags are per process."""
    def spec(gpu: int | None) -> dict[str, Any]:
        return {"cls": Nanny, "options": {"nthreads": 1, "env": worker_env(threads, gpu), "silence_logs": logging.WARNING}}

    if device.type != "cuda":
        n = settings.n_workers or max(1, (os.cpu_count() or 1) // (settings.threads or 1))
        return {f"cpu-{i}": spec(None) for i in range(n)}
    gpus = visible_gpus(settings)
    if not gpus:
        raise WorkerStartError("executor.gpus: no GPU is visible to pin workers to; set trainer.device=cpu or "
                               "executor.gpus=[0,1]")
    n = settings.n_workers or len(gpus) * settings.candidates_per_gpu
    return {f"gpu{gpus[i % len(gpus)]}-{i // len(gpus)}": spec(gpus[i % len(gpus)]) for i in range(n)}


def worker_threads(settings: ExecutorSettings, training: CandidateTraining, n_workers: int) -> int:
    """Torch threads per worker: ``executor.threads``, else ``trainer.num_threads``, else this process's share."""
    return settings.threads or training.trainer.num_threads or max(1, torch.get_num_threads() // max(1, n_workers))


def slurm_cluster(settings: ExecutorSettings, threads: int):
    """dask-jobqueue's SLURMCluster for ``settings``, built but not scaled: no job is submitted yet.

    Each job runs ``gpus_per_job x candidates_per_gpu`` worker processes (at least one) of one candidate each.
    """
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise WorkerStartError("executor=slurm: dask-jobqueue is not installed; pip install -e \".[cluster]\"") \
            from None
    processes = max(1, settings.gpus_per_job) * settings.candidates_per_gpu
    directives = [f"--gres=gpu:{settings.gpus_per_job}"] if settings.gpus_per_job else []
    prologue = [f"export OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads}", *settings.job_prologue]
    with dask.config.set(SCHEDULER_CONFIG | {"distributed.scheduler.allowed-failures": settings.retries}):
        return SLURMCluster(
            queue=settings.partition, cores=max(settings.cores_per_job, processes), processes=processes,
            memory=settings.memory_per_job, walltime=settings.walltime,
            job_extra_directives=directives + list(settings.job_directives), job_script_prologue=prologue,
            worker_extra_args=["--nthreads", "1"],
            scheduler_options={"dashboard_address": settings.dashboard_address or ":0"})


class CandidateTrainingPlugin(WorkerPlugin):
    """The search's ``CandidateTraining`` on a worker, unpacked once when the worker joins.

    ``gpus_per_process_group`` (SLURM jobs with several GPUs) picks the worker's GPU from its rank within the
    job; otherwise a CUDA worker uses the one GPU ``CUDA_VISIBLE_DEVICES`` leaves it.
    """

    def __init__(self, name: str, payload: bytes, threads: int, gpus_per_job: int = 0, per_gpu: int = 1,
                 exit_on_close: bool = False):
        self.name, self.payload, self.threads = name, payload, threads
        self.gpus_per_job, self.per_gpu = gpus_per_job, per_gpu
        self.exit_on_close = exit_on_close
        self.training: CandidateTraining | None = None

    def setup(self, worker) -> None:
        try:  # Ctrl-C is the search process's to handle: it stops the cluster; a worker must not fail a candidate
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:
            pass  # not the worker's main thread
        _log_to_stderr()
        torch.set_num_threads(self.threads)
        training: CandidateTraining = pickle.loads(self.payload)
        if training.device.type == "cuda":
            index = 0
            rank = re.search(r"-(\d+)$", str(worker.name))
            if self.gpus_per_job > 1 and rank is not None:
                index = (int(rank.group(1)) // self.per_gpu) % self.gpus_per_job
            training = replace(training, device=torch.device("cuda", index))
            torch.cuda.set_device(training.device)
        self.training = training

    def teardown(self, worker) -> None:
        """On a cluster this search started, a closing worker ends its process at once: after torch was used
        the interpreter's own shutdown takes seconds, and the nanny would wait for it, then kill it anyway."""
        self.training = None
        if self.exit_on_close and str(getattr(worker, "status", "")).endswith(("closing", "closed")):
            threading.Timer(0.5, os._exit, (0,)).start()


def _log_to_stderr() -> None:
    """The worker's INFO lines (a long candidate's epochs) on stderr, marked with its pid."""
    logger = logging.getLogger("aebnas")
    if not any(getattr(h, "_aebnas_worker", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler._aebnas_worker = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("[%(asctime)s][worker %(process)d][%(name)s][%(levelname)s] - %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def train_on_worker(genome: Genome, plugin_name: str) -> TrainedNetwork:
    """A Dask task: train ``genome`` with the training this worker was given at setup."""
    plugin = get_worker().plugins[plugin_name]
    if plugin.training is None:
        raise RuntimeError(f"worker plugin {plugin_name} did not set up")
    torch.set_num_threads(plugin.threads)  # per thread in torch's OpenMP pool: Dask runs tasks on its own thread
    return plugin.training.train(genome)


def _on_cpu(supernet: Supernet | None) -> Supernet | None:
    """A CPU copy of the supernet for the workers (inherit_weights copies across devices)."""
    import copy

    return None if supernet is None else copy.deepcopy(supernet).cpu()


@dataclass
class PendingCandidate:
    """A candidate handed to the executor; ``result`` waits for it and turns Dask's outcomes into the evaluator's
    terms. Its task is sent to the scheduler only when a worker is free (``DaskExecutor._top_up``)."""

    executor: "DaskExecutor"
    genome: Genome
    future: Future | None = None
    outcome: tuple[Any, BaseException | None] | None = None  # (result, error) once fetched from the worker

    @property
    def finished(self) -> bool:
        return self.outcome is not None or (self.future is not None and self.future.done())

    def collect(self) -> None:
        """Fetch the finished candidate's outcome now and let its worker forget it.

        A result left on its worker until the search asks for it would be lost, and trained again on another
        worker, if that worker died in the meantime.
        """
        if self.outcome is not None:
            return
        try:
            self.outcome = (self.future.result(), None)
        except BaseException as exc:  # kept, and raised in the search's own terms by result()
            self.outcome = (None, exc)
        self.future.release()

    def result(self) -> TrainedNetwork:
        self.executor._wait_for(self)
        self.collect()
        value, error = self.outcome
        if error is None:
            return value
        try:
            raise error
        except KilledWorker:
            retries = self.executor.settings.retries
            raise CandidateWorkerDied(f"the worker training it died {retries + 1} time(s) "
                                      f"(executor.retries={retries})") from None
        except CancelledError:
            raise ClusterLost("the Dask scheduler or this search's connection to it was lost") from None


class CandidateWorkerDied(RuntimeError):
    """Every worker given this candidate died while training it: the candidate is recorded as failed."""


class DaskExecutor:
    """Candidates trained on Dask workers, one at a time per worker, with the training sent to each worker once."""

    def __init__(self, client: Client, cluster: Any, settings: ExecutorSettings, plugin_name: str,
                 expected_workers: int | None):
        self.client, self.cluster, self.settings = client, cluster, settings
        self.plugin_name = plugin_name
        self.expected_workers = expected_workers
        self.start_seconds = 0.0
        self._queue: deque[PendingCandidate] = deque()
        self._in_flight: list[PendingCandidate] = []
        self._short_of_workers = False

    @classmethod
    def start(cls, settings: ExecutorSettings, training: CandidateTraining, pop_size: int) -> "DaskExecutor":
        """Start (or join) the cluster and hand every worker the training; fails here, with a message, not later."""
        start = time.perf_counter()
        cluster = None
        expected: int | None
        if settings.address is not None:
            client = _connect(settings)
            expected = None
            threads = settings.threads or training.trainer.num_threads or 1
        elif settings.name == "slurm":
            threads = settings.threads or training.trainer.num_threads or max(
                1, settings.cores_per_job // (max(1, settings.gpus_per_job) * settings.candidates_per_gpu))
            cluster = slurm_cluster(settings, threads)
            jobs = settings.jobs
            cluster.adapt(minimum_jobs=jobs, maximum_jobs=jobs)  # a job that ends (walltime, pre-emption) is replaced
            client = Client(cluster)
            expected = jobs * max(1, settings.gpus_per_job) * settings.candidates_per_gpu
            log.info("executor=slurm: %d job(s) of %d worker(s) submitted to partition %s; candidates start as "
                     "the jobs do", jobs, expected // jobs, settings.partition or "(default)")
        else:
            specs = local_worker_specs(settings, training.device, 1)
            threads = worker_threads(settings, training, len(specs))
            specs = local_worker_specs(settings, training.device, threads)
            _warn_about_size(settings, training.device, len(specs), threads, pop_size)
            scheduler = {"cls": Scheduler, "options": {"dashboard_address": settings.dashboard_address,
                                                       "host": "127.0.0.1"}}
            try:
                with dask.config.set(SCHEDULER_CONFIG | {"distributed.scheduler.allowed-failures": settings.retries}):
                    cluster = SpecCluster(workers=specs, scheduler=scheduler, silence_logs=logging.WARNING,
                                          name="aebnas")
            except Exception as exc:
                raise WorkerStartError(
                    f"executor=dask: the worker processes could not start ({type(exc).__name__}: {exc}); a script "
                    "that starts a search with workers needs an `if __name__ == \"__main__\":` guard, or use "
                    "executor=local") from None
            client = Client(cluster)
            expected = len(specs)
        if training.device.type == "cuda":
            torch.cuda.empty_cache()  # the workers have their own CUDA contexts; free what this process cached
        name = f"aebnas-training-{uuid.uuid4().hex[:8]}"
        # Workers never score the test split; leaving it out saves a copy of it per worker.
        data = replace(training.data, test=training.data.test[:0])
        payload = pickle.dumps(replace(training, data=data, supernet=_on_cpu(training.supernet)),
                               protocol=pickle.HIGHEST_PROTOCOL)
        plugin = CandidateTrainingPlugin(name, payload, threads, settings.gpus_per_job if settings.name == "slurm"
                                         else 0, settings.candidates_per_gpu, exit_on_close=cluster is not None)
        client.register_plugin(plugin, name=name)
        executor = cls(client, cluster, settings, name, expected)
        executor.start_seconds = time.perf_counter() - start
        log.info("executor=%s: %s worker(s), one candidate and %d torch thread(s) each, ready in %.1f s; data and "
                 "settings sent once (%.1f MB)", settings.name, expected if expected is not None else executor.workers,
                 threads, executor.start_seconds, len(payload) / 1e6)
        link = executor.dashboard_link
        if link:
            print(f"Dask dashboard: {link}", flush=True)
            log.info("Dask dashboard: %s", link)
        return executor

    @property
    def workers(self) -> int:
        """Workers connected now."""
        try:
            return len(self.client.scheduler_info(n_workers=-1)["workers"])
        except Exception:
            return 0

    @property
    def dashboard_link(self) -> str | None:
        """The dashboard's address, when one runs (it needs bokeh)."""
        try:
            import bokeh  # noqa: F401
        except ImportError:
            return None
        try:
            return self.client.dashboard_link
        except Exception:
            return None

    def submit(self, genome: Genome) -> PendingCandidate:
        """Queue ``genome``; it goes to the scheduler as soon as a worker is free.

        At most one candidate per worker thread is with the scheduler at a time: Dask would otherwise assign
        several to one worker up front, and a worker killed then would count against candidates it never began.
        """
        pending = PendingCandidate(self, genome)
        self._queue.append(pending)
        self._top_up()
        return pending

    def _capacity(self) -> int:
        try:
            workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
            return max(1, sum(w.get("nthreads", 1) for w in workers))
        except Exception:
            return 1

    def _collect_finished(self) -> None:
        """Fetch every finished candidate's outcome (see ``PendingCandidate.collect``); keep those still training."""
        for p in self._in_flight:
            if p.finished:
                p.collect()
        self._in_flight = [p for p in self._in_flight if p.outcome is None]

    def _top_up(self) -> None:
        self._collect_finished()
        free = self._capacity() - len(self._in_flight)
        while free > 0 and self._queue:
            pending = self._queue.popleft()
            key = f"train-{short_hash(pending.genome.network_key)}-{uuid.uuid4().hex[:8]}"
            pending.future = self.client.submit(train_on_worker, pending.genome, self.plugin_name, key=key,
                                                pure=False)
            self._in_flight.append(pending)
            free -= 1

    def _wait_for(self, pending: PendingCandidate) -> None:
        """Block until ``pending`` is done, handing queued candidates to workers as others finish."""
        while True:
            self._top_up()
            if pending.finished:
                return
            try:  # wake on any finished candidate, and every second to see workers that joined (SLURM jobs)
                wait([p.future for p in self._in_flight], timeout=1, return_when="FIRST_COMPLETED")
            except TimeoutError:
                pass

    def busy(self) -> tuple[int, int]:
        """(workers training a candidate now, workers connected); logs once when fewer are up than started."""
        self._collect_finished()
        n = self.workers
        if self.expected_workers is not None and n < self.expected_workers and not self._short_of_workers:
            log.warning("executor: %d of %d workers connected (one was lost; its candidate goes to another worker "
                        "and the worker is restarted)", n, self.expected_workers)
        self._short_of_workers = self.expected_workers is not None and n < self.expected_workers
        return min(len(self._in_flight), n), n

    def close(self, abort: bool = False) -> None:
        """Stop what this search started: its cluster, or, on a shared cluster, its tasks and its plugin."""
        try:
            self._queue.clear()
            futures = [p.future for p in self._in_flight if not p.future.done()]
            if futures:
                self.client.cancel(futures, force=True)
            if self.cluster is None and not abort:
                try:
                    self.client.unregister_worker_plugin(self.plugin_name)
                except Exception:
                    pass
        finally:
            self.client.close(timeout=10)
            if self.cluster is not None:
                self.cluster.close(timeout=10)

    def __enter__(self) -> "DaskExecutor":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(abort=exc_type is not None)


def _connect(settings: ExecutorSettings) -> Client:
    """A client of the scheduler at ``executor.address``, or one line saying it did not answer in time."""
    try:
        return Client(settings.address, timeout=settings.connect_timeout)
    except (OSError, TimeoutError) as exc:
        raise WorkerStartError(unreachable_message(settings, type(exc).__name__)) from None


def _warn_about_size(settings: ExecutorSettings, device: torch.device, n: int, threads: int, pop_size: int) -> None:
    cores = os.cpu_count() or 1
    if device.type == "cpu" and n * threads > cores:
        log.warning("executor: %d workers x %d thread(s) each is more than this machine's %d cores: they will slow "
                    "each other down; use executor.n_workers=%d or fewer", n, threads, cores, max(1, cores // threads))
    if n > pop_size:
        log.warning("executor: %d workers, but at most pop_size=%d candidates are new at a time: the other workers "
                    "stay idle", n, pop_size)
