"""What the search-speed and ranking benchmarks share: config, data, supernet, genomes, JSON output.

Both benchmarks compose the same Hydra config as ``aebnas-search`` (overrides
on their command line), so a benchmark measures exactly what a search runs.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from aebnas.cli.common import config_dir
from aebnas.data import DataSplits, load_dataset
from aebnas.nn.supernet import Supernet
from aebnas.search import SearchSettings
from aebnas.runtime.stream import StreamSettings
from aebnas.search.evaluator import CandidateEvaluator
from aebnas.space import Genome, SearchSpace, SpaceSettings
from aebnas.train import TrainerSettings, resolve_device
from aebnas.train.supernet import SupernetSettings

DEFAULT_OVERRIDES = ("experiment=fashion_mnist_gpu",)


@dataclass
class Setup:
    overrides: list[str]
    config: dict[str, Any]
    space: SearchSpace
    data: DataSplits
    trainer: TrainerSettings
    supernet: SupernetSettings
    settings: SearchSettings
    device: torch.device
    seed: int


def load_setup(overrides: Sequence[str]) -> Setup:
    """Compose conf/ with ``overrides`` and load the data, as aebnas-search would."""
    overrides = list(overrides) or list(DEFAULT_OVERRIDES)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    plain = OmegaConf.to_container(cfg, resolve=True)
    trainer = TrainerSettings.from_dict(plain["trainer"])
    device = resolve_device(trainer.device)
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    data = load_dataset(plain["dataset"])
    return Setup(overrides, plain, SearchSpace(SpaceSettings.from_dict(plain["space"])), data, trainer,
                 SupernetSettings.from_dict(plain["supernet"]), SearchSettings.from_dict(plain["search"]), device,
                 int(plain["seed"]))


def sample_genomes(space: SearchSpace, n: int, seed: int) -> list[Genome]:
    """``n`` distinct random networks; the same ``seed`` gives both benchmarks the same genomes."""
    rng = np.random.default_rng(seed)
    genomes: dict[str, Genome] = {}
    while len(genomes) < n:
        g = space.sample(rng)
        genomes.setdefault(g.network_key, g)
    return list(genomes.values())


def evaluate_genomes(setup: Setup, genomes: Sequence[Genome], trainer: TrainerSettings,
                     supernet: Supernet | None = None, seed: int | None = None,
                     label: str = "candidate",
                     on_row: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Evaluate genomes one after another as the search does (thresholds tuned); a row per genome with its
    time split into fine-tune (or training), val pass and threshold tuning, and its val accuracies.

    ``seed`` (default: the config's) seeds each network's training. ``on_row(rows)`` runs after each genome,
    e.g. to rewrite the JSON so a run cut short keeps the candidates it finished.
    """
    evaluator = CandidateEvaluator(setup.data, trainer, replace(setup.settings, threshold_tuning=True), setup.device,
                                   seed=setup.seed if seed is None else seed, supernet=supernet)
    rows = []
    n_train = len(setup.data.train)
    for genome in genomes:
        start = time.perf_counter()
        ev = evaluator.evaluate(genome)
        wall = time.perf_counter() - start
        rows.append({"genome": genome.network_key, "wall_seconds": wall, "finetune_seconds": ev.train_seconds,
                     "val_pass_seconds": ev.eval_seconds, "threshold_tuning_seconds": ev.tune_seconds,
                     "finetune_images_per_second": trainer.epochs * n_train / ev.train_seconds
                     if ev.train_seconds else None,
                     "static_macs": ev.static_macs, "expected_macs": ev.expected_macs,
                     "val_accuracy": ev.val_accuracy, "static_val_accuracy": ev.static_val_accuracy,
                     "head_accuracies": list(ev.head_accuracies or []), "status": ev.status, "error": ev.error})
        print(f"{label} {len(rows):3d}: {wall:6.2f}s (training {ev.train_seconds:.2f}s, val {ev.eval_seconds:.2f}s, "
              f"tuning {ev.tune_seconds:.3f}s)  val acc {ev.static_val_accuracy:.4f}  {ev.static_macs / 1e6:.1f}M MACs",
              flush=True)
        if on_row is not None:
            on_row(rows)
    return rows


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
                            "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def summary_stats(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {}
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "mean": float(a.mean()),
            "min": float(a.min()), "max": float(a.max()), "n": int(a.size)}


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    """Atomic: a reader (or a killed run) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    tmp.replace(path)


def stream_settings(overrides: list[str]) -> StreamSettings:
    """aebnas-stream's settings (conf/stream.yaml with ``overrides``), checked as the CLI checks them."""
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name="stream", overrides=overrides)
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    return StreamSettings.from_dict(plain)


def stream_network(overrides: list[str]) -> tuple[StreamSettings, Any, Any]:
    """aebnas-stream's settings, the run's network and data (``load_run_network``), and the network as an
    ``AdaptiveModel`` as the stream runs it (BatchNorm folded when the settings say so)."""
    from aebnas.runtime import AdaptiveModel
    from aebnas.runtime.run_network import load_run_network

    settings = stream_settings(overrides)
    inputs = load_run_network(settings.run, settings.model, settings.device, settings.num_threads, settings.data_dir,
                              settings.recompute_operating_points, settings.exit_metric)
    return settings, inputs, AdaptiveModel.from_saved(inputs.saved, inputs.points, fold=settings.fold_batchnorm)
