"""Does the fast supernet path rank candidates as full training does?

    python experiments/bench_ranking.py --out ranking.json [--genomes 20] [--scratch-epochs 15]
        [--workers 4] [--speed-json search_speed.json] [--scratch-json ranking.json] [hydra overrides ...]

Each random genome is scored (a) the search's way: supernet weights, BatchNorm
recalibration, ``trainer.epochs`` of fine-tuning, one val pass; and (b) trained
from scratch for ``--scratch-epochs``. Reported: Kendall tau and Spearman rho
between (a) and (b) val accuracies (final exit, and the tuned adaptive network),
and the mean accuracy gap. (a) can be taken from a bench_search_speed.py JSON of
the same genomes. (b) runs in ``--workers`` processes on the one GPU at once:
one small network alone leaves most of an H100 idle; or it is taken from an
earlier ranking's JSON (``--scratch-json``), so two fast paths (fresh and joint
exit heads, ``supernet.exits``) are compared against one from-scratch training.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau, spearmanr

from bench_common import DEFAULT_OVERRIDES, evaluate_genomes, load_setup, machine, sample_genomes, write_json

from aebnas.cli.common import user_errors
from aebnas.train.supernet import prepare_supernet
from aebnas.config_checks import ConfigError

SCORES = ("static_val_accuracy", "val_accuracy")


def score(setup, genomes, supernet=None, epochs: int | None = None, seed: int | None = None) -> list[dict]:
    """Evaluate genomes (supernet path when ``supernet`` is given, else from scratch for ``epochs``).

    ``seed`` (default: the config's) seeds each network's training; another seed for the
    from-scratch half measures how well training from scratch ranks against itself.
    """
    if supernet is not None:
        return evaluate_genomes(setup, genomes, setup.trainer, supernet, seed, label="supernet")
    return evaluate_genomes(setup, genomes, replace(setup.trainer, init="from_scratch", epochs=epochs), None, seed,
                            label="scratch")


def scratch_in_workers(args, overrides: list[str], n_genomes: int, out: Path) -> list[dict]:
    """Run the from-scratch half in ``args.workers`` processes, each taking every workers-th genome."""
    procs = []
    for w in range(args.workers):
        part = out.parent / f"{out.stem}.scratch{w}.json"
        seed = [] if args.scratch_seed is None else ["--scratch-seed", str(args.scratch_seed)]
        cmd = [sys.executable, __file__, "--out", str(part), "--genomes", str(n_genomes), "--scratch-epochs",
               str(args.scratch_epochs), "--worker", f"{w}/{args.workers}", *seed, *overrides]
        procs.append((part, subprocess.Popen(cmd)))
    rows: dict[str, dict] = {}
    for w, (part, proc) in enumerate(procs):
        if proc.wait() != 0:
            print(f"worker {w} exited with {proc.returncode}: its genomes are missing from the comparison",
                  file=sys.stderr)
        if part.exists():
            for r in json.loads(part.read_text())["scratch"]:
                rows[r["genome"]] = r
    return list(rows.values())


def reuse_scratch(path: Path, genomes, scratch_epochs: int, scratch_seed: int) -> list[dict]:
    """The from-scratch half of an earlier run, refused unless it trained these very genomes as long, as seeded."""
    earlier = json.loads(path.read_text())
    if earlier.get("scratch_epochs") != scratch_epochs:
        raise ConfigError(f"--scratch-json: {path} trained {earlier.get('scratch_epochs')} epochs from scratch, this "
                         f"run asks for {scratch_epochs} (--scratch-epochs)")
    if "scratch_seed" not in earlier:
        raise ConfigError(f"--scratch-json: {path} does not record the seed it trained from scratch with (written "
                         f"before bench_ranking.py recorded it); add \"scratch_seed\": N to it if you know N")
    if earlier["scratch_seed"] != scratch_seed:
        raise ConfigError(f"--scratch-json: {path} trained from scratch with seed {earlier['scratch_seed']}, this "
                         f"run asks for {scratch_seed} (--scratch-seed, else the config's seed)")
    rows = {r["genome"]: r for r in earlier.get("scratch", [])}
    missing = [g.network_key for g in genomes if g.network_key not in rows]
    if missing:
        raise ConfigError(f"--scratch-json: {path} lacks {len(missing)} of these {len(genomes)} genomes (other "
                         "--genomes, data or seed?)")
    return [rows[g.network_key] for g in genomes]


def fast_exits(earlier: dict) -> str:
    """Which exit heads an earlier fast half used: bench_ranking's record, bench_search_speed's supernet
    record, else fresh (the only kind before supernet.exits existed)."""
    return earlier.get("supernet_exits") or earlier.get("supernet", {}).get("exits", "fresh")


def compare(fast: list[dict], scratch: list[dict]) -> dict:
    by_key = {r["genome"]: r for r in scratch if r["status"] == "ok"}
    pairs = [(f, by_key[f["genome"]]) for f in fast if f["status"] == "ok" and f["genome"] in by_key]
    out: dict = {"pairs": len(pairs)}
    for name in SCORES:
        a = np.array([f[name] for f, _ in pairs])
        b = np.array([s[name] for _, s in pairs])
        if len(pairs) >= 3:
            out[name] = {"kendall_tau": float(kendalltau(a, b).statistic), "spearman_rho": float(spearmanr(a, b).statistic),
                         "mean_gap_scratch_minus_fast": float((b - a).mean()),
                         "fast_mean": float(a.mean()), "scratch_mean": float(b.mean())}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--genomes", type=int, default=20)
    p.add_argument("--scratch-epochs", type=int, default=15)
    p.add_argument("--workers", type=int, default=1, help="processes training from scratch at once")
    p.add_argument("--speed-json", default=None, help="take (a) from this bench_search_speed.py output (or an "
                   "earlier bench_ranking.py output)")
    p.add_argument("--scratch-json", default=None, help="take (b) from this earlier bench_ranking.py output (same "
                   "genomes, data and seed)")
    p.add_argument("--cache-dir", default=None, help="supernet cache (reused when the settings match)")
    p.add_argument("--scratch-seed", type=int, default=None, help="seed of the from-scratch training (default: the "
                   "config's seed); compare two runs' scratch halves for the noise ceiling of the ranking")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    out = Path(args.out)
    overrides = (args.overrides or list(DEFAULT_OVERRIDES)) + ([f"supernet.cache_dir={args.cache_dir}"]
                                                               if args.cache_dir else [])
    setup = load_setup(overrides)
    genomes = sample_genomes(setup.space, args.genomes, setup.seed)
    if args.worker:  # one slice of the from-scratch half
        w, of = (int(v) for v in args.worker.split("/"))
        write_json(out, {"scratch": score(setup, genomes[w::of], epochs=args.scratch_epochs, seed=args.scratch_seed)})
        return
    result: dict = {"machine": machine(), "overrides": setup.overrides, "genomes": args.genomes,
                    "finetune_epochs": setup.trainer.epochs, "scratch_epochs": args.scratch_epochs,
                    "workers": args.workers, "train_images": len(setup.data.train),
                    "scratch_seed": setup.seed if args.scratch_seed is None else args.scratch_seed,
                    "supernet_exits": setup.supernet.exits}
    scratch = None
    if args.scratch_json:  # refused now, not after the supernet has trained
        scratch = reuse_scratch(Path(args.scratch_json), genomes, args.scratch_epochs, result["scratch_seed"])
        result["scratch_from"] = args.scratch_json
    fast = None
    if args.speed_json:
        earlier = json.loads(Path(args.speed_json).read_text())  # bench_search_speed's, or an earlier ranking's
        if fast_exits(earlier) != setup.supernet.exits:
            raise ConfigError(f"--speed-json: {args.speed_json} scored {fast_exits(earlier)} exit heads, this run "
                             f"asks for supernet.exits={setup.supernet.exits}")
        rows = {r["genome"]: r for r in earlier.get("candidates", earlier.get("fast", []))}
        if all(g.network_key in rows for g in genomes):
            fast = [rows[g.network_key] for g in genomes]
            result["fast_from"] = args.speed_json
    if fast is None:
        supernet, info = prepare_supernet(setup.space, setup.data, setup.supernet, setup.trainer, setup.device,
                                          setup.seed, progress=False)
        result["supernet_train_seconds"] = info.train_seconds
        fast = score(setup, genomes, supernet)
    result["fast"] = fast
    write_json(out, result)
    start = time.perf_counter()
    if scratch is None:
        scratch = (scratch_in_workers(args, overrides, args.genomes, out) if args.workers > 1
                   else score(setup, genomes, epochs=args.scratch_epochs, seed=args.scratch_seed))
        result["scratch_seconds"] = time.perf_counter() - start  # the from-scratch half alone
    result["scratch"] = scratch  # what a later --scratch-json run compares its fast half against
    result["comparison"] = compare(fast, scratch)
    write_json(out, result)
    print(json.dumps(result["comparison"], indent=2))


if __name__ == "__main__":
    with user_errors("bench_ranking.py"):  # a bad override or missing data: one line, no traceback
        main()
