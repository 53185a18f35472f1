"""A found network loaded from its run directory, with what running it needs: shared by stream and export.

The run's config names the dataset (its val split gives the operating points, its test split the stream),
so a run copied from another machine needs only ``data_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from aebnas.data import ArraySplit, DataSplits, load_dataset
from aebnas.runtime.adaptive import SavedModel, load_saved_model
from aebnas.runtime.operating_points import FILE_NAME, NAMES, OperatingPoints, compute_operating_points
from aebnas.train import predict_logits, resolve_device
from aebnas.validation import ConfigError, check_bool, check_int, check_number


def check_point_choice(cfg: Mapping[str, Any]) -> str | None:
    """Exactly one of operating_point (a name), min_accuracy or max_macs, each in range; returns the name."""
    chosen = [k for k in ("operating_point", "min_accuracy", "max_macs") if cfg.get(k) is not None]
    if len(chosen) != 1:
        raise ConfigError(f"operating_point: give exactly one of operating_point (a name), min_accuracy or "
                          f"max_macs, got {chosen or 'none'}; e.g. operating_point=null min_accuracy=0.9")
    point = cfg.get("operating_point")
    if point is not None and point not in NAMES:
        raise ConfigError(f"operating_point: unknown name '{point}'; use one of {list(NAMES)}, or set it to "
                          "null and give min_accuracy or max_macs")
    if cfg.get("min_accuracy") is not None:
        check_number(cfg["min_accuracy"], "min_accuracy", 0.0, 1.0)
    if cfg.get("max_macs") is not None:
        check_number(cfg["max_macs"], "max_macs", 0.0, lo_open=True)
    return point


def read_run_choice(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The settings every job on one of a run's networks shares (aebnas-stream, aebnas-export), checked:
    which run and network, which operating point, where the data is, which device and threads."""
    if cfg.get("run") in (None, ""):
        raise ConfigError("run: required; pass run=<the run directory of an aebnas-search>")
    point = check_point_choice(cfg)
    num_threads = cfg.get("num_threads")
    return {"run": str(cfg["run"]), "model": check_int(cfg.get("model", 0), "model", lo=0),
            "operating_point": point, "min_accuracy": cfg.get("min_accuracy"), "max_macs": cfg.get("max_macs"),
            "recompute_operating_points": check_bool(cfg.get("recompute_operating_points", False),
                                                     "recompute_operating_points"),
            "data_dir": None if cfg.get("data_dir") in (None, "") else str(cfg["data_dir"]),
            "device": str(cfg.get("device", "cpu")),
            "num_threads": None if num_threads is None else check_int(num_threads, "num_threads", lo=1)}


def point_label(name: str | None, min_accuracy: float | None, max_macs: float | None) -> str:
    """How the chosen operating point was asked for, for the result files."""
    return name or (f"min_accuracy={min_accuracy}" if min_accuracy is not None else f"max_macs={max_macs:g}")


def ensure_operating_points(saved: SavedModel, val: ArraySplit, mean, std, device: torch.device,
                            recompute: bool = False) -> OperatingPoints:
    """The model's stored operating points; computed from its val logits and saved beside it when missing
    (or written for another genome, or in the older format without standard errors)."""
    genome = saved.net.genome.to_text()
    path = saved.path / FILE_NAME
    if path.exists() and not recompute:
        points = OperatingPoints.load(saved.path)
        if points.genome == genome and points.is_current:
            return points
    logits = predict_logits(saved.net, val, mean, std, device, batch_size=1024, amp=False)
    points = compute_operating_points(logits, val.y.numpy(), saved.cost, saved.meta.get("exit_metric", "max_softmax"))
    points.genome = genome
    points.save(saved.path)
    saved.net.to("cpu")
    return points


def _device(name: str) -> torch.device:
    try:
        return resolve_device(name)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("trainer.device", "device")) from None


@dataclass
class RunNetwork:
    """One of a run's Pareto networks with what running it needs: operating points, the data, the device."""

    run_path: Path
    saved: SavedModel
    points: OperatingPoints
    data: DataSplits
    device: torch.device


def load_run_network(run_dir: str, model: int, device: str = "cpu", num_threads: int | None = None,
                     data_dir: str | None = None, recompute_operating_points: bool = False) -> RunNetwork:
    """The run's Pareto network number ``model``, its operating points (computed once and stored), its dataset.

    Checks the run first, so a wrong run directory or model index is one line, not a traceback.
    """
    from aebnas.analysis.run import load_run

    run = load_run(Path(run_dir).expanduser())
    if len(run.pareto) == 0:
        raise ConfigError(f"run: '{run.path}' has no Pareto network (pareto.csv is empty); run a search that finds one")
    if model >= len(run.pareto):
        raise ConfigError(f"model: {model} is out of range; '{run.path}' has {len(run.pareto)} Pareto "
                          f"networks (0..{len(run.pareto) - 1})")
    if "dataset" not in run.config:
        raise ConfigError(f"run: no dataset section in '{run.path / 'config.yaml'}'; "
                          "pass a run written by aebnas-search")
    on = _device(device)
    if num_threads:
        torch.set_num_threads(num_threads)
    saved = load_saved_model(run.model_dir(model))
    dataset = dict(run.config["dataset"])
    if data_dir is not None:  # the run came from another machine, where the files lay elsewhere
        dataset["data_dir"] = data_dir
    data = load_dataset(dataset)
    points = ensure_operating_points(saved, data.val, data.mean, data.std, on, recompute_operating_points)
    return RunNetwork(run.path, saved, points, data, on)
