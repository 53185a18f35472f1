"""Where candidates train, timed: one by one, the former process pool, and Dask workers; plus killed workers.

    python experiments/bench_executors.py --out executors.json                        # CPU stages
    python experiments/bench_executors.py --out executors.json --baseline /path/to/old/checkout
    python experiments/bench_executors.py --out executors_gpu.json --stages gpu       # on a GPU machine

Stages (``--stages``, comma-separated; JSON is written after each):

- ``quickstart``: ``aebnas-search experiment=quickstart search.final_epochs=0`` one by one (``workers=1``), on 1
  and 2 Dask workers, and, with ``--baseline <checkout>``, that checkout's ``workers=2`` (the process pool Dask
  replaced), each as a user runs it, in a subprocess, ``--repeats`` rounds interleaved; search seconds from each
  run's summary.json, and whether the runs on 1-thread workers wrote the same archive rows.
- ``cluster_start``: seconds until a local cluster of 2 workers holds the quickstart's data, ``--repeats`` times.
- ``kills``: the quickstart on 2 Dask workers with one worker process SIGKILLed in every generation while it
  trains, against the same search without kills: rows, submissions per network, Pareto set.
- ``preset340``: ``experiment=fashion_mnist_supernet_cpu`` (340 proposals) one by one, on 1 and 2 Dask workers
  (``--fmnist-dir``); minutes each on a 2-core CPU.
- ``gpu``: candidates per minute with ``executor.candidates_per_gpu`` 1, 2, 4 and 8 (``--gpu-overrides``; default
  experiment=fashion_mnist_gpu at 32 candidates of 1 epoch), one GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# search=nsga2: the search the process pool ran before the surrogate search existed, so --baseline times the same work.
QUICKSTART = ["experiment=quickstart", "search=nsga2", "search.final_epochs=0", "progress=false"]
VARYING = ("train_seconds", "eval_seconds", "tune_seconds", "model_file")


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    info = {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "load_average_1_5_15": [round(x, 2) for x in load],
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def pareto_rows(run_dir: Path) -> list[dict[str, str]]:
    """pareto.csv's rows without the columns that time the run (they differ between any two runs)."""
    with open(run_dir / "pareto.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in VARYING} for row in csv.DictReader(f)]


def archive_rows(run_dir: Path) -> list[tuple[str, dict]]:
    """The run's archive rows (key, record) in order, timings and paths left out."""
    with sqlite3.connect(run_dir / "archive.sqlite") as db:
        rows = db.execute("SELECT key, data FROM evaluations ORDER BY id").fetchall()
    out = []
    for key, data in rows:
        record = json.loads(data)
        for name in VARYING:
            record.pop(name, None)
        out.append((key, record))
    return out


def run_cli(args: list[str], run_dir: Path, pythonpath: Path, timeout: float) -> dict[str, Any]:
    """``aebnas-search`` in a subprocess with the code at ``pythonpath``; wall time and what the run reports."""
    cmd = [sys.executable, "-m", "aebnas.cli.search", *args, f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    log_path = run_dir.parent / f"{run_dir.name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, cwd=pythonpath,
                              env={**os.environ, "PYTHONPATH": str(pythonpath), "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - start
    result: dict[str, Any] = {"command": "aebnas-search " + " ".join(args), "code": str(pythonpath),
                              "returncode": proc.returncode, "wall_seconds": round(wall, 2), "log": str(log_path)}
    summary_path = run_dir / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        supernet = (summary.get("supernet") or {}).get("train_seconds", 0.0)
        result.update(search_seconds=summary["search_seconds"], supernet_train_seconds=supernet,
                      search_seconds_without_supernet=round(summary["search_seconds"] - supernet, 2),
                      evaluations=summary["evaluations"], failed=summary["failed"],
                      workers=summary.get("workers"))
        pareto = (run_dir / "pareto.csv").read_text().splitlines()
        result["pareto_genomes"] = [line.split(",")[0] for line in pareto[1:]]
    return result


# The runs both CPU stages compare. workers=null: a preset's `workers: 2` would otherwise override
# executor.n_workers.
EXECUTOR_CONFIGS = {"serial": ["workers=1"], "dask_1": ["executor=dask", "executor.n_workers=1", "workers=null"],
                    "dask_2": ["executor=dask", "executor.n_workers=2", "executor.threads=1", "workers=null"]}


def stage_quickstart(args, out_dir: Path) -> dict[str, Any]:
    configs = dict(EXECUTOR_CONFIGS)
    if args.baseline:
        configs["pool_2"] = ["workers=2"]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
    for r in range(args.repeats):
        for name, extra in configs.items():
            code = Path(args.baseline) if name == "pool_2" else ROOT
            run_dir = out_dir / f"quickstart_{name}_{r}"
            runs[name].append(run_cli([*QUICKSTART, *extra], run_dir, code, args.timeout))
            print(name, r, runs[name][-1].get("search_seconds"), flush=True)
    result: dict[str, Any] = {"runs": runs}
    if "pool_2" in runs:
        ratios = [p["search_seconds"] / d["search_seconds"] for p, d in zip(runs["pool_2"], runs["dask_2"])
                  if "search_seconds" in p and "search_seconds" in d]
        result["ratio_pool2_over_dask2_per_round"] = [round(x, 3) for x in ratios]
        result["same_rows_pool2_dask2"] = all(
            archive_rows(out_dir / f"quickstart_pool_2_{r}") == archive_rows(out_dir / f"quickstart_dask_2_{r}")
            for r in range(args.repeats))
    return result


def stage_cluster_start(args, out_dir: Path) -> dict[str, Any]:
    """Seconds from nothing to 2 workers holding the quickstart's data (the worker plugin set up on both)."""
    sys.path.insert(0, str(ROOT))
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from aebnas.cli.common import config_dir
    from aebnas.data import load_dataset
    from aebnas.search import SearchSettings
    from aebnas.search.evaluator import CandidateEvaluator
    from aebnas.search.executors import ExecutorSettings, start_executor
    from aebnas.train import TrainerSettings, resolve_device

    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        plain = OmegaConf.to_container(compose("config", overrides=QUICKSTART), resolve=True)
    data = load_dataset(plain["dataset"])
    trainer = TrainerSettings.from_dict(plain["trainer"])
    evaluator = CandidateEvaluator(data, trainer, SearchSettings.from_dict(plain["search"]),
                                   resolve_device(trainer.device))
    settings = ExecutorSettings(name="dask", n_workers=2, threads=1, dashboard_address=None)
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        executor = start_executor(settings, evaluator.training, pop_size=8)
        seconds.append(round(time.perf_counter() - start, 2))
        executor.close()
    return {"what": "start_executor(executor=dask, 2 workers x 1 thread) with the quickstart's data, until both "
                    "workers hold it", "seconds": seconds, "target_seconds": 5.0}


def stage_kills(args, out_dir: Path) -> dict[str, Any]:
    """One worker SIGKILLed in every generation while it trains, against the same search without kills."""
    sys.path.insert(0, str(ROOT))
    from hydra import compose, initialize_config_dir

    from aebnas.cli.common import config_dir
    from aebnas.cli.search import search
    from aebnas.search.evaluator import CandidateEvaluator
    from aebnas.search.executors.dask_cluster import DaskExecutor

    overrides = [*QUICKSTART, "executor=dask", "executor.n_workers=2", "executor.threads=1",
                 "executor.dashboard_address=null"]
    submitted: list[str] = []
    kills: list[dict[str, Any]] = []
    real_submit, real_evaluate_all = DaskExecutor.submit, CandidateEvaluator.evaluate_all

    def counting_submit(self, genome):
        submitted.append(genome.network_key)
        return real_submit(self, genome)

    def kill_one(executor: DaskExecutor, generation: int) -> None:
        pids = executor.client.run(os.getpid)
        deadline = time.time() + 300
        while time.time() < deadline:
            busy = [w for w, keys in executor.client.processing().items() if keys]
            if busy:
                time.sleep(0.3)  # inside the candidate's training
                if busy[0] in pids:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    kills.append({"generation": generation, "worker": busy[0], "pid": pids[busy[0]]})
                return
            time.sleep(0.02)

    def killing_evaluate_all(self, genomes, generation=0):
        if self.pool is not None and any(self._needs_training(g) for g in genomes):
            threading.Thread(target=kill_one, args=(self.pool, generation), daemon=True).start()
        return real_evaluate_all(self, genomes, generation)

    results = {}
    for name in ("no_kills", "one_kill_per_generation"):
        submitted.clear()
        DaskExecutor.submit = counting_submit
        if name != "no_kills":
            CandidateEvaluator.evaluate_all = killing_evaluate_all
        try:
            with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
                cfg = compose("config", overrides=overrides)
            run_dir = out_dir / f"kills_{name}"
            start = time.perf_counter()
            search(cfg, run_dir)
            results[name] = {"seconds": round(time.perf_counter() - start, 2), "rows": archive_rows(run_dir),
                             "submissions_per_network": {k: submitted.count(k) for k in set(submitted)},
                             "pareto": pareto_rows(run_dir)}
        finally:
            DaskExecutor.submit, CandidateEvaluator.evaluate_all = real_submit, real_evaluate_all
    a, b = results["no_kills"], results["one_kill_per_generation"]
    keys = [k for k, _ in b["rows"]]
    return {"command": "aebnas-search " + " ".join(overrides), "kills": kills,
            "rows_no_kills": len(a["rows"]), "rows_with_kills": len(b["rows"]),
            "same_rows": a["rows"] == b["rows"], "same_pareto": a["pareto"] == b["pareto"],
            "every_row_ok": all(r["status"] == "ok" for _, r in b["rows"]),
            "each_candidate_recorded_once": len(keys) == len(set(keys)),
            "each_network_submitted_once": all(n == 1 for n in b["submissions_per_network"].values()),
            "seconds_no_kills": a["seconds"], "seconds_with_kills": b["seconds"]}


def stage_preset340(args, out_dir: Path) -> dict[str, Any]:
    base = ["experiment=fashion_mnist_supernet_cpu", f"dataset.data_dir={args.fmnist_dir}", "search.final_epochs=0",
            "progress=false", f"supernet.cache_dir={out_dir / 'supernet_cache'}"]
    runs = {}
    for name in args.preset_configs.split(","):
        runs[name] = run_cli([*base, *EXECUTOR_CONFIGS[name]], out_dir / f"preset340_{name}", ROOT, args.timeout)
        print(name, runs[name].get("search_seconds_without_supernet"), flush=True)
    return {"runs": runs, "note": "the first run trains the supernet (cached for the others); "
                                  "search_seconds_without_supernet leaves that out"}


def stage_gpu(args, out_dir: Path) -> dict[str, Any]:
    base = args.gpu_overrides.split() + ["progress=false", "search.final_epochs=0",
                                         f"supernet.cache_dir={out_dir / 'supernet_cache'}"]
    runs = {}
    for k in (1, 2, 4, 8):
        run = run_cli([*base, "executor=dask", f"executor.candidates_per_gpu={k}", "executor.gpus=[0]"],
                      out_dir / f"gpu_per_gpu_{k}", ROOT, args.timeout)
        if run.get("search_seconds_without_supernet"):
            run["candidates_per_minute"] = round(60 * run["evaluations"] / run["search_seconds_without_supernet"], 2)
        runs[k] = run
        print(k, run.get("candidates_per_minute"), flush=True)
    return {"runs": runs}


STAGES = {"quickstart": stage_quickstart, "cluster_start": stage_cluster_start, "kills": stage_kills,
          "preset340": stage_preset340, "gpu": stage_gpu}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--stages", default="quickstart,cluster_start,kills", help=f"comma-separated, of {list(STAGES)}")
    p.add_argument("--baseline", default=None, help="a checkout whose `workers=2` is the process pool, timed beside")
    p.add_argument("--repeats", type=int, default=1, help="rounds of the quickstart stage, and cluster starts")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per search")
    p.add_argument("--fmnist-dir", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--preset-configs", default="serial,dask_1,dask_2")
    p.add_argument("--gpu-overrides", default="experiment=fashion_mnist_gpu search.pop_size=32 search.generations=1 "
                   f"trainer.epochs=1 dataset.data_dir=/usr/share/datasets/fashion-mnist")
    p.add_argument("--work-dir", default=None, help="where runs go (default: beside --out)")
    args = p.parse_args()
    out = Path(args.out).resolve()
    out_dir = Path(args.work_dir or out.with_suffix("")).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(), "argv": sys.argv[1:], "stages": {}}
    for name in args.stages.split(","):
        start = time.perf_counter()
        report["stages"][name] = STAGES[name](args, out_dir)
        report["stages"][name]["stage_seconds"] = round(time.perf_counter() - start, 1)
        report["machine_after"] = machine()
        write_json(out, report)
    print(json.dumps({k: {m: v for m, v in s.items() if m not in ("runs",)} for k, s in report["stages"].items()},
                     indent=1, default=str))


if __name__ == "__main__":
    main()
