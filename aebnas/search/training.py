"""One candidate's training: genome -> trained network -> what the evaluator keeps of it.

Kept apart from the evaluator so that the same code runs in the search's own
process and on Dask workers (``aebnas.search.executors``): a ``CandidateTraining``
holds everything training depends on besides the genome, and pickles.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from aebnas.atomic_write import atomic_path
from aebnas.cost import NetworkCost, network_cost
from aebnas.data import DataSplits
from aebnas.nn import build_model, count_parameters
from aebnas.nn.supernet import Supernet, inherit_weights
from aebnas.exits import confidence
from aebnas.space import Genome
from aebnas.train import TrainerSettings, candidate_cudnn, fit, predict_logits, recalibrate_batchnorm

log = logging.getLogger("aebnas.search")


def short_hash(text: str, n: int = 12) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:n]


def candidate_seed(seed: int, network_key: str) -> int:
    """Seed of one candidate's training, independent of the order candidates are met in (and of the worker)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{network_key}".encode()).digest()[:4], "little") & 0x7FFFFFFF


@dataclass
class TrainedNetwork:
    confidences: np.ndarray        # [n_exits, N_val] decision metric
    correct: np.ndarray            # [n_exits, N_val] bool
    cost: NetworkCost
    params: int
    train_seconds: float
    eval_seconds: float
    model_file: str | None
    path_latency_ms: tuple[float, ...] = ()


class EpochLog:
    """``fit``'s on_epoch for a candidate: an INFO line per epoch once the training has run ``after_seconds``.

    Short candidates stay quiet; a long one (a big network on a CPU can train for tens of
    minutes) shows that it is alive and how its loss goes.
    """

    def __init__(self, network_key: str, epochs: int, after_seconds: float):
        self.name, self.epochs, self.after_seconds = short_hash(network_key, 8), epochs, after_seconds
        self.start = time.perf_counter()

    def __call__(self, epoch: int, mean_loss: float) -> None:
        elapsed = time.perf_counter() - self.start
        if elapsed >= self.after_seconds:
            log.info("candidate %s: epoch %d/%d, loss %.4f, %.0f s", self.name, epoch, self.epochs, mean_loss, elapsed)


@dataclass
class CandidateTraining:
    """What a candidate's training depends on besides its genome: data, trainer settings, the exit metric the
    val confidences are scored with, the device, the search seed, where weights go, and the supernet (or None)."""

    data: DataSplits
    trainer: TrainerSettings
    exit_metric: str
    device: torch.device
    seed: int = 0
    model_dir: Path | None = None
    supernet: Supernet | None = None
    epoch_log_seconds: float = 30.0  # a candidate training longer than this logs each epoch (EpochLog)

    def train(self, genome: Genome, weights_file: str | None = None, epochs: int | None = None) -> TrainedNetwork:
        """Train ``genome``'s network, score every exit on val in one pass, save its weights under ``model_dir``.

        A candidate starts from scratch or from its supernet slice and trains ``trainer.epochs``. Given
        ``weights_file`` (``search.final_epochs``), a network the search chose trains ``epochs`` more from its
        candidate weights instead: a cheap search ranks networks, and the ones it keeps deserve the training a
        user would give them before shipping. That run restarts the candidates' schedule with its own seed, and
        its weights are saved beside the candidate's, never over them.

        Raises whatever training raises (TrainingDiverged, out of memory, OSError): the caller decides
        which of those fail the candidate and which stop the search. After running out of GPU memory the
        cache of this process (the search's or a worker's) is emptied, so the next candidate starts clean.
        """
        try:
            return self._train(genome, weights_file, epochs)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            raise

    def _train(self, genome: Genome, weights_file: str | None, epochs: int | None) -> TrainedNetwork:
        data, trainer = self.data, self.trainer
        further = weights_file is not None
        seed = candidate_seed(self.seed, f"final:{genome.network_key}" if further else genome.network_key)
        torch.manual_seed(seed)
        model = build_model(genome, data.num_classes, data.in_channels)
        schedule = trainer.candidate_schedule()
        if further:
            model.load_state_dict(torch.load(weights_file, map_location="cpu"))
            schedule = replace(schedule, epochs=epochs if epochs is not None else trainer.epochs)
        # trainer.cudnn_depthwise covers calibration and the val pass too; fit turns autotuning on for training only
        with candidate_cudnn(trainer, self.device, autotune=False):
            start = time.perf_counter()
            if self.supernet is not None and not further:  # inherit the backbone, then fit BatchNorm statistics
                inherit_weights(model, self.supernet)
                recalibrate_batchnorm(model, data, self.device, trainer.bn_calibration_images, trainer.amp)
            fit(model, data, schedule, self.device, seed=seed,
                on_epoch=EpochLog(genome.network_key, schedule.epochs, self.epoch_log_seconds))
            return self._scored(model, genome, time.perf_counter() - start, ".final" if further else "")

    def _scored(self, model: torch.nn.Module, genome: Genome, train_seconds: float,
                name_suffix: str = "") -> TrainedNetwork:
        """Every exit scored on val in one pass, and the weights saved under ``model_dir``."""
        data, trainer = self.data, self.trainer
        start = time.perf_counter()
        logits = predict_logits(model, data.val, data.mean, data.std, self.device, trainer.eval_batch_size,
                                trainer.amp)
        labels = data.val.y.numpy()
        conf = confidence(logits, self.exit_metric)
        correct = logits.argmax(-1) == labels[None, :]
        eval_seconds = time.perf_counter() - start  # predict_logits ends in a host copy: the device is done
        model_file = None
        if self.model_dir is not None:
            self.model_dir.mkdir(parents=True, exist_ok=True)
            path = self.model_dir / f"{short_hash(genome.network_key)}{name_suffix}.pt"
            with atomic_path(path) as tmp:  # worker processes never share a temp file
                torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
            model_file = str(path)
        cost = network_cost(genome, data.num_classes, data.in_channels, data.resolution)
        return TrainedNetwork(conf.astype(np.float32), correct, cost, count_parameters(model),
                              train_seconds, eval_seconds, model_file)
