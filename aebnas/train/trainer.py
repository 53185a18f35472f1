"""Fitting a candidate: joint training of all exits, and per-exit logits for a split.

The whole split lives on the training device as uint8 and is augmented there in
batches: small images make DataLoader workers and PIL the bottleneck, not the
network.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from aebnas.data import ArraySplit, DataSplits, augment_batch, normalize
from aebnas.train.losses import exit_loss_weights, joint_exit_loss
from aebnas.validation import ConfigError, check_bool, check_int, check_number, reject_unknown_keys


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the candidate cannot be scored."""


@dataclass(frozen=True)
class TrainerConfig:
    """Candidate training settings (the Hydra ``trainer`` group; field meanings in conf/trainer/default.yaml)."""

    epochs: int = 5
    batch_size: int = 128
    eval_batch_size: int = 1024
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-5
    label_smoothing: float = 0.0
    exit_weights: Any = "uniform"
    crop_padding: int = 4
    amp: bool = True
    device: str = "auto"
    num_threads: int | None = None

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> "TrainerConfig":
        """Validate types and ranges of every field before any work starts."""
        reject_unknown_keys(cfg, (f.name for f in fields(cls)), "trainer")
        tc = cls(**dict(cfg))
        check_int(tc.epochs, "trainer.epochs", lo=0)
        check_int(tc.batch_size, "trainer.batch_size", lo=1)
        check_int(tc.eval_batch_size, "trainer.eval_batch_size", lo=1)
        if tc.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"trainer.optimizer: '{tc.optimizer}' is not one of [sgd, adamw]")
        check_number(tc.lr, "trainer.lr", lo=0, lo_open=True)
        check_number(tc.momentum, "trainer.momentum", lo=0, hi=1)
        check_bool(tc.nesterov, "trainer.nesterov")
        check_number(tc.weight_decay, "trainer.weight_decay", lo=0)
        check_number(tc.label_smoothing, "trainer.label_smoothing", lo=0, hi=0.999)
        check_int(tc.crop_padding, "trainer.crop_padding", lo=0)
        check_bool(tc.amp, "trainer.amp")
        if tc.num_threads is not None:
            check_int(tc.num_threads, "trainer.num_threads", lo=1)
        if not isinstance(tc.device, str):
            raise ConfigError(f"trainer.device: expected a device name such as auto, cpu or cuda, got {tc.device!r}")
        exit_loss_weights(2, tc.exit_weights)  # validates the scheme early
        return tc


@dataclass
class TrainStats:
    seconds: float
    steps: int
    final_loss: float


def _batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Shuffled index batches; a trailing batch of one sample is dropped (BatchNorm cannot train on it)."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def fit(model: nn.Module, data: DataSplits, cfg: TrainerConfig, device: torch.device,
        seed: int = 0) -> TrainStats:
    """Train all exits jointly with a cosine schedule; raises TrainingDiverged on NaN/inf loss."""
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator(device=device).manual_seed(seed + 1)
    model.to(device).train()
    x_all = data.train.x.to(device)
    y_all = data.train.y.to(device)
    n_exits = model.n_exits if hasattr(model, "n_exits") else 1
    weights = exit_loss_weights(n_exits, cfg.exit_weights)
    steps_per_epoch = len(_batches(len(data.train), cfg.batch_size))
    total_steps = max(1, cfg.epochs * steps_per_epoch)
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                              nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    use_amp = cfg.amp and device.type == "cuda"
    loss_value, steps = float("nan"), 0
    for _ in range(cfg.epochs):
        for idx in _batches(len(data.train), cfg.batch_size, gen):
            idx = idx.to(device)
            xb = augment_batch(x_all[idx], cfg.crop_padding, data.hflip, aug_gen)
            xb = normalize(xb, data.mean, data.std)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                outputs = model(xb)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            loss = joint_exit_loss(outputs, y_all[idx], weights, cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise TrainingDiverged(f"loss became {loss.item()} at step {steps}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
            loss_value = float(loss.detach())
    return TrainStats(seconds=time.perf_counter() - start, steps=steps, final_loss=loss_value)


@torch.no_grad()
def predict_logits(model: nn.Module, split: ArraySplit, mean: Sequence[float], std: Sequence[float],
                   device: torch.device, batch_size: int = 1024, amp: bool = True) -> np.ndarray:
    """Logits of every exit in one pass over the split: array [n_exits, N, num_classes], float32."""
    model.to(device).eval()
    chunks: list[list[torch.Tensor]] = []
    use_amp = amp and device.type == "cuda"
    for start in range(0, len(split), batch_size):
        xb = normalize(split.x[start:start + batch_size].to(device), mean, std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            outputs = model(xb)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        chunks.append([o.float().cpu() for o in outputs])
    return np.stack([torch.cat([c[k] for c in chunks]).numpy() for k in range(len(chunks[0]))])
