"""A found network loaded from its run directory, with what running it needs: shared by stream and export.

The run's config names the dataset (its val split gives the operating points, its test split the stream),
so a run copied from another machine needs only ``data_dir``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from aebnas.data import ArraySplit, DataSplits, load_dataset
from aebnas.runtime.adaptive import SavedModel, load_saved_model
from aebnas.exits.thresholds import METRICS
from aebnas.runtime.operating_points import FILE_NAME, NAMES, OperatingPoints, compute_operating_points
from aebnas.train import predict_logits, resolve_device
from aebnas.config_checks import ConfigError, Settings, setting

log = logging.getLogger("aebnas.runtime")


def _check_point_name(value: Any, name: str, error: type[Exception]) -> str:
    if value not in NAMES:
        raise error(f"{name}: unknown name '{value}'; use one of {list(NAMES)}, or set it to "
                    "null and give min_accuracy or max_macs")
    return value


def _check_data_dir(value: Any, name: str, error: type[Exception]) -> str | None:
    return None if value in (None, "") else str(value)


def operating_point_setting(default: str) -> Any:
    """The ``operating_point`` setting with its default (stream and export start from different points)."""
    return setting(default, check=_check_point_name, allowed=" | ".join(NAMES) + " | null",
                   help="Named operating point of the adaptive model; null to choose by min_accuracy or max_macs "
                        "instead.")


@dataclass(frozen=True)
class RunChoiceSettings(Settings):
    """What every job on one of a run's networks shares (aebnas-stream, aebnas-export): which run and network,
    which operating point and exit metric, where the data is, which device and threads. Errors name the bare
    key (run=...)."""

    prefix: ClassVar[str | None] = ""

    run: str | None = setting(None, check=lambda v, n, e: None if v in (None, "") else str(v),
                              allowed="a run directory", help="The run directory of an aebnas-search (required).")
    model: int = setting(0, lo=0, help="Which Pareto network: its row in pareto.csv (0 = cheapest).")
    operating_point: str | None = operating_point_setting("balanced")
    min_accuracy: float | None = setting(None, lo=0.0, hi=1.0, help="The cheapest point at or above this val "
                                                                    "accuracy (with operating_point=null).")
    max_macs: float | None = setting(None, lo=0.0, lo_open=True, help="The most accurate point within this "
                                                                      "expected-MACs budget (with operating_point=null).")
    recompute_operating_points: bool = setting(False, help="Recompute the stored operating points from val logits.")
    exit_metric: str | None = setting(None, choices=METRICS,
                                      help="Exit confidence metric of the adaptive network (null: the one its search "
                                           "used); another metric recomputes the operating points for it.")
    data_dir: str | None = setting(None, check=_check_data_dir, allowed="a path or null",
                                   help="Where the run's dataset files are on this machine, when not where the "
                                        "search read them (null: the run's own dataset.data_dir).")
    device: str = setting("cpu", check=lambda v, n, e: str(v), allowed="auto | cpu | cuda | cuda:N",
                          help="Where missing operating points are computed (auto = cuda when available).")
    num_threads: int | None = setting(None, lo=1, help="torch's CPU threads (null: torch's default).")

    def check_together(self) -> None:
        """A run is required; exactly one of operating_point (a name), min_accuracy or max_macs."""
        if self.run is None:
            raise ConfigError("run: required; pass run=<the run directory of an aebnas-search>")
        chosen = [k for k in ("operating_point", "min_accuracy", "max_macs") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ConfigError(f"operating_point: give exactly one of operating_point (a name), min_accuracy or "
                              f"max_macs, got {chosen or 'none'}; e.g. operating_point=null min_accuracy=0.9")


def point_label(name: str | None, min_accuracy: float | None, max_macs: float | None) -> str:
    """How the chosen operating point was asked for, for the result files."""
    return name or (f"min_accuracy={min_accuracy}" if min_accuracy is not None else f"max_macs={max_macs:g}")


def ensure_operating_points(saved: SavedModel, val: ArraySplit, mean, std, device: torch.device,
                            recompute: bool = False, metric: str | None = None) -> OperatingPoints:
    """The model's stored operating points; computed from its val logits and saved beside it when missing
    (or written for another genome, another exit metric, or in the older format without standard errors).

    ``metric`` (default: the one the search used) is a run-time choice: the thresholds mean different things
    under each metric, so a network's points are recomputed for the metric it runs with.
    """
    genome = saved.net.genome.to_text()
    metric = metric or saved.meta.get("exit_metric", "max_softmax")
    path = saved.path / FILE_NAME
    if path.exists() and not recompute:
        points = OperatingPoints.load(saved.path)
        if points.genome == genome and points.is_current and points.metric == metric:
            return points
        if points.genome == genome and points.metric != metric:
            log.info("operating points of %s: computed for exit_metric=%s, recomputing them for %s",
                     saved.path.name, points.metric, metric)
    logits = predict_logits(saved.net, val, mean, std, device, batch_size=1024, amp=False)
    points = compute_operating_points(logits, val.y.numpy(), saved.cost, metric)
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
                     data_dir: str | None = None, recompute_operating_points: bool = False,
                     exit_metric: str | None = None) -> RunNetwork:
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
    points = ensure_operating_points(saved, data.val, data.mean, data.std, on, recompute_operating_points, exit_metric)
    return RunNetwork(run.path, saved, points, data, on)
