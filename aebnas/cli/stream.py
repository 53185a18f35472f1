"""``aebnas-stream``: a saved Pareto network on a stream of test images, static vs adaptive."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from aebnas.cli.common import check_overrides, config_dir, require_config_dir, user_errors
from aebnas.runtime.stream import StreamSettings, run_stream

PROG = "aebnas-stream"


def stream(cfg: DictConfig, out_dir: Path) -> dict:
    """Validate the settings, run the benchmark, print the comparison; returns what stream.json holds."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    settings = StreamSettings.from_dict({k: v for k, v in plain.items() if k != "hydra"})
    result = run_stream(settings, out_dir)
    print(f"{result['dataset']}: {result['test_images']} test images on {result['device']} "
          f"({result['num_threads']} threads); operating point {result['operating_point_label']} "
          f"thresholds {result['operating_point']['thresholds']}")
    for c in result["comparisons"]:
        s, a = c["static"], c["adaptive"]
        print(f"  batch {c['batch_size']:4d}: static {s['images_per_second']:9.1f} img/s acc {s['accuracy']:.4f} "
              f"{s['effective_macs'] / 1e6:.3f}M MACs | adaptive {a['images_per_second']:9.1f} img/s "
              f"acc {a['accuracy']:.4f} {a['effective_macs'] / 1e6:.3f}M MACs | {c['speedup']:.2f}x, "
              f"{c['macs_reduction']:.2f}x fewer MACs, exits {a['exit_histogram']}")
    for r in result["operating_points"]:
        lost = [f"{split} {r[key]:.2f}" + (f" +- {r[key + '_se']:.2f}" if key + "_se" in r else "")
                for split, key in (("test", "test_points_lost"), ("val", "val_points_lost")) if key in r]
        print(f"  {r['operating_point']:>12s} (batch 1): {r['images_per_second']:9.1f} img/s acc {r['accuracy']:.4f} "
              f"(val {r['val_accuracy']:.4f} +- {r['val_accuracy_se']:.4f}) {r['effective_macs'] / 1e6:.3f}M MACs "
              f"p99 {r['p99_latency_ms']:.2f} ms" + (f" | points lost vs static: {', '.join(lost)}" if lost else ""))
    if "budget" in result:
        b = result["budget"]
        t, w = b["target"], b["windows"]
        within = sum(x["within_10pct"] for x in w)
        held = sum(x["held"] for x in w)
        short = sum(x["short_at_cheapest"] for x in w)
        logged = " (each in stream.json and the run's log)" if b["switch_count"] else ""
        beyond = f", {held - within} beyond it on the most accurate point" if held > within else ""
        print(f"  budget {t['kind']}={t['value']:g} (batch {b['batch_size']}): {b['images_per_second']:.1f} img/s "
              f"acc {b['accuracy']:.4f} {b['effective_macs'] / 1e6:.3f}M MACs, {b['switch_count']} switches{logged}; "
              f"{held}/{len(w)} windows of {b['settings']['window']} images held ({within} within +-10 % of the "
              f"target{beyond})" + (f"; {short} missed it while on the cheapest point (no point was cheap enough then)"
                                     if short else ""))
    print(f"written: {out_dir / 'stream.json'}")
    return result


def switch_log_to_files() -> None:
    """Send the budget controller's switch lines to the log files the root logger writes, and not the console.

    Deciding after every image, a batch-1 stream switches hundreds of times: the lines belong in the run's log
    (and stream.json), the console gets their count. Under a logging set-up without a log file (Hydra's
    ``hydra/job_logging=stdout``, for one) the lines stay where the root logger sends them.
    """
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    switches = logging.getLogger("aebnas.runtime.budget")
    for handler in list(switches.handlers):  # an earlier job's file (a multirun): its lines must not go on there
        if isinstance(handler, logging.FileHandler) and handler not in files:
            switches.removeHandler(handler)
    for handler in files:
        if handler not in switches.handlers:
            switches.addHandler(handler)
    switches.propagate = not files


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="stream")
def _hydra_main(cfg: DictConfig) -> None:
    switch_log_to_files()
    with user_errors(PROG):
        stream(cfg, Path(HydraConfig.get().runtime.output_dir))


def main() -> None:
    require_config_dir(PROG)
    check_overrides(PROG, sys.argv[1:], config_name="stream")
    _hydra_main()


if __name__ == "__main__":
    main()
