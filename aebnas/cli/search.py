"""``aebnas-search``: one Hydra run = one NSGA-II search, written to one run directory."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from aebnas.cli.common import (check_group_choices, check_overrides, config_dir, load_latency_table,
                               require_config_dir, user_errors)
from aebnas.cost.latency import InputShape, LatencyTable
from aebnas.data import load_dataset
from aebnas.search import RunSettings, SearchJob, SearchSettings, run_search
from aebnas.search.algorithms import parse_initial_genomes
from aebnas.search.executors import ExecutorSettings, check_scheduler_reachable
from aebnas.search.rundir_lock import RunDirLock
from aebnas.search.settings import fill_legacy_search_settings
from aebnas.space import SearchSpace, SpaceSettings
from aebnas.train import TrainerSettings, resolve_device
from aebnas.train.supernet import SupernetSettings
from aebnas.config_checks import ConfigError

log = logging.getLogger("aebnas")


# How a run is carried out, not what it computes: free to change when resuming.
IGNORED_FOR_IDENTITY = ("resume", "progress", "workers", "executor")


def resumed_config(cfg: DictConfig, user_overrides: list[str]) -> tuple[DictConfig, Path]:
    """The saved config of the run to continue; an override that contradicts it is refused."""
    run_dir = Path(str(cfg.resume)).expanduser()
    saved_path = run_dir / "config.yaml"
    if not saved_path.exists():
        raise FileNotFoundError(f"resume: no config.yaml in '{run_dir}'; pass the run directory of an earlier search")
    saved = OmegaConf.load(saved_path)
    fill_legacy_search_settings(saved)
    overridden = [o.split("=", 1)[0].lstrip("+~") for o in user_overrides]
    for key in overridden:
        if key.split(".")[0] in IGNORED_FOR_IDENTITY or isinstance(OmegaConf.select(cfg, key), DictConfig) or key == "experiment":
            continue  # group choices (experiment=, dataset=) are not values; what they set is in the saved config
        now, then = OmegaConf.select(cfg, key), OmegaConf.select(saved, key)
        if now != then:
            raise ConfigError(f"resume: {key} was {then!r} in '{run_dir}', not {now!r}; resume without changing it")
    for key in IGNORED_FOR_IDENTITY:  # the saved run's way of running, unless this command line says otherwise
        if any(o.split(".")[0] == key for o in overridden) or key not in saved:
            saved[key] = cfg.get(key)
    saved.resume = str(run_dir)
    return saved, run_dir


def search(cfg: DictConfig, run_dir: Path, user_overrides: list[str] | None = None) -> Path:
    """Validate every setting, then load data and search; returns the run directory."""
    RunSettings.from_config(cfg)  # a bad seed or workers stops here, before the run directory is locked
    resume = cfg.get("resume") not in (None, "")
    if resume:
        cfg, run_dir = resumed_config(cfg, user_overrides or [])
    with RunDirLock(run_dir):  # before anything is loaded or written: a second process on this directory stops here
        return _search(cfg, run_dir, resume)


def _search(cfg: DictConfig, run_dir: Path, resume: bool) -> Path:
    plain = OmegaConf.to_container(cfg, resolve=True)
    run = RunSettings.from_config(plain)
    space = SearchSpace(SpaceSettings.from_dict(plain["space"]))
    settings = SearchSettings.from_dict(plain["search"])
    parse_initial_genomes(space, settings)
    trainer = TrainerSettings.from_dict(plain["trainer"])
    supernet = SupernetSettings.from_dict(plain["supernet"]) if trainer.init == "supernet" else None
    device = resolve_device(trainer.device)
    executor = ExecutorSettings.from_dict(plain.get("executor")).with_workers(run.workers)
    check_scheduler_reachable(executor)
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    data = load_dataset(plain["dataset"])
    shape = InputShape(data.resolution, data.in_channels, data.num_classes)
    kept = run_dir / "latency_table.json"  # the table (calibrated or not) this run prices with, kept for a resume
    if resume and kept.exists() and plain.get("hardware") is not None:
        latency_table = LatencyTable.load(kept)
        print(f"latency table: {kept} (the one this run started with, from {latency_table.meta.get('loaded_from')})")
    else:
        latency_table = load_latency_table(plain.get("hardware"), space.config, shape, required=settings.needs_latency)
    run_dir.mkdir(parents=True, exist_ok=True)
    if latency_table is not None and not kept.exists():
        latency_table.save(kept)
    if not resume:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    log.info("data %s: train %d, val %d, test %d, %d classes, %dx%dx%d; device %s",
             data.name, len(data.train), len(data.val), len(data.test), data.num_classes,
             data.in_channels, data.resolution, data.resolution, device)
    record = {k: v for k, v in plain.items() if k not in IGNORED_FOR_IDENTITY}
    result = run_search(SearchJob(space, data, trainer, settings, device, run_dir, seed=run.seed,
                                  progress=run.progress, resume=resume, config_record=record,
                                  latency_table=latency_table, method=(plain.get("method") or {}).get("name"),
                                  supernet=supernet, executor=executor))
    best = max(result.pareto, key=lambda r: r["test_accuracy"], default=None)
    failed = sum(e.status != "ok" for e in result.evaluations)
    n = len(result.pareto)
    after = (f", each then trained {settings.final_epochs} more epoch{'' if settings.final_epochs == 1 else 's'} "
             f"(figures below are after that training)" if settings.final_epochs and n else "")
    print(f"\n{len(result.evaluations)} candidate{'' if len(result.evaluations) == 1 else 's'} ({failed} failed) "
          f"in {result.seconds:.0f}s; Pareto set: {n} network{'' if n == 1 else 's'}{after}")
    for r in result.pareto:
        latency = (f"E[lat] {r['expected_latency_ms']:.3f}ms (static {r['static_latency_ms']:.3f}ms)  "
                   if latency_table is not None else "")
        print(f"  val {r['val_accuracy']:.4f}  test {r['test_accuracy']:.4f}  "
              f"E[MACs] {r['expected_macs'] / 1e6:7.3f}M (static {r['static_macs'] / 1e6:.3f}M)  {latency}{r['genome']}")
    if best is not None:
        print(f"most accurate on test: {best['test_accuracy']:.4f}")
    print(f"run directory: {run_dir}")
    return run_dir


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    with user_errors("aebnas-search"):
        hc = HydraConfig.get()
        search(cfg, Path(hc.runtime.output_dir), list(hc.overrides.task))


def main() -> None:
    require_config_dir("aebnas-search")
    check_group_choices("aebnas-search", sys.argv[1:])
    check_overrides("aebnas-search", sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
