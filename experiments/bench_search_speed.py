"""How fast the supernet path searches: supernet training, per-candidate evaluation, a full search.

    python experiments/bench_search_speed.py --out search_speed.json [hydra overrides ...]

Default overrides: experiment=fashion_mnist_gpu (Fashion-MNIST at 32x32x3, 45k
training images, mbv3_32, 5 fine-tune epochs). Writes JSON after every stage, so
a run stopped early still leaves what it measured.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from bench_common import (DEFAULT_OVERRIDES, evaluate_genomes, load_setup, machine, sample_genomes, summary_stats,
                          write_json)

from aebnas.cli.common import user_errors
from aebnas.search.archive import EvaluationArchive
from aebnas.train.supernet import prepare_supernet


def full_search(overrides: list[str], evals: int, pop_size: int, run_dir: Path, cache_dir: str,
                timeout: float) -> dict:
    """``aebnas-search`` as a user runs it, in a subprocess, stopped after ``timeout`` seconds if unfinished."""
    generations = math.ceil(evals / pop_size)
    cmd = [sys.executable, "-m", "aebnas.cli.search", *overrides, f"search.pop_size={pop_size}",
           f"search.generations={generations}", f"supernet.cache_dir={cache_dir}", "progress=false",
           f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=timeout)
            returncode, finished = proc.returncode, proc.returncode == 0
        except subprocess.TimeoutExpired:
            returncode, finished = None, False
    seconds = time.perf_counter() - start
    archive = run_dir / "archive.sqlite"
    done = len(EvaluationArchive(archive)) if archive.exists() else 0
    return {"command": " ".join(cmd), "requested_evaluations": pop_size * generations, "finished": finished,
            "returncode": returncode, "seconds": seconds, "archived_evaluations": done,
            "seconds_per_archived_evaluation": seconds / done if done else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--candidates", type=int, default=20, help="random genomes to evaluate one by one")
    p.add_argument("--search-evals", type=int, default=0, help="also run a full search of at least this many "
                   "evaluations (0: skip)")
    p.add_argument("--search-timeout", type=float, default=1800, help="stop the full search after this many seconds")
    p.add_argument("--cache-dir", default=None, help="supernet cache (default: a fresh one beside --out, so the "
                   "supernet is trained and timed)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for aebnas-search")
    args = p.parse_args()
    out = Path(args.out)
    cache_dir = args.cache_dir or str(out.parent / "supernet_cache")
    overrides = args.overrides or list(DEFAULT_OVERRIDES)
    setup = load_setup(overrides + [f"supernet.cache_dir={cache_dir}"])
    supernet_cfg = replace(setup.supernet, cache_dir=cache_dir)
    result: dict = {"machine": machine(), "overrides": setup.overrides, "device": str(setup.device),
                    "train_images": len(setup.data.train), "val_images": len(setup.data.val),
                    "input": [setup.data.in_channels, setup.data.resolution, setup.data.resolution],
                    "trainer": asdict(setup.trainer), "supernet_config": asdict(supernet_cfg)}
    write_json(out, result)

    supernet, info = prepare_supernet(setup.space, setup.data, supernet_cfg, setup.trainer, setup.device, setup.seed,
                                      progress=False)
    result["supernet"] = asdict(info)
    write_json(out, result)
    print(f"supernet: {'loaded' if info.cached else 'trained'} in {info.train_seconds:.1f}s "
          f"({info.images_per_second:.0f} images/s per subnet pass)", flush=True)

    def keep(rows: list[dict]) -> None:
        result["candidates"] = rows
        write_json(out, result)
    rows = evaluate_genomes(setup, sample_genomes(setup.space, args.candidates, setup.seed), setup.trainer, supernet,
                            on_row=keep)
    timed = [r for r in rows[1:] if r["status"] == "ok"] or rows  # the first pays cuDNN's and the allocator's warm-up
    result["candidates"] = rows
    result["candidate_seconds"] = {k: summary_stats([r[k] for r in timed]) for k in
                                   ("wall_seconds", "finetune_seconds", "val_pass_seconds", "threshold_tuning_seconds",
                                    "finetune_images_per_second")}
    result["candidate_seconds"]["note"] = "statistics over candidates 2..n (the first includes warm-up)"
    write_json(out, result)
    del supernet
    if setup.device.type == "cuda":
        torch.cuda.empty_cache()

    if args.search_evals:
        run_dir = out.parent / f"full_search_{time.strftime('%Y%m%d_%H%M%S')}"  # never an earlier run's archive
        result["full_search"] = full_search(overrides, args.search_evals, setup.settings.pop_size, run_dir,
                                            cache_dir, args.search_timeout)
        result["full_search"]["supernet_train_seconds"] = info.train_seconds
        write_json(out, result)
        print(f"full search: {result['full_search']}", flush=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    with user_errors("bench_search_speed.py"):  # a bad override or missing data: one line, no traceback
        main()
