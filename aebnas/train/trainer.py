"""Fitting a candidate: joint training of all exits, and per-exit logits for a split.

The whole split lives on the training device as uint8 and is augmented there in
batches: small images make DataLoader workers and PIL the bottleneck, not the
network.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, ContextManager, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from aebnas.data import ArraySplit, DataSplits, augment_batch, normalize
from aebnas.nn.depthwise import cudnn_flags, native_depthwise
from aebnas.train.losses import exit_loss_weights, joint_exit_loss
from aebnas.train.steps import EagerTrainStep, GraphedTrainStep
from aebnas.validation import ConfigError, check_bool, check_int, check_number, reject_unknown_keys


#: Where a candidate's weights come from: the cached supernet (then fine-tuned) or random initialisation.
INITS = ("supernet", "from_scratch")


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
    channels_last: bool = True
    cudnn_benchmark: bool = True
    cudnn_depthwise: bool = True
    cuda_graphs: bool = False
    device: str = "auto"
    num_threads: int | None = None
    init: str = "from_scratch"
    finetune_lr: float = 0.01
    bn_calibration_images: int = 2000

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
        check_bool(tc.channels_last, "trainer.channels_last")
        check_bool(tc.cudnn_benchmark, "trainer.cudnn_benchmark")
        check_bool(tc.cudnn_depthwise, "trainer.cudnn_depthwise")
        check_bool(tc.cuda_graphs, "trainer.cuda_graphs")
        if tc.init not in INITS:
            raise ConfigError(f"trainer.init: '{tc.init}' is not one of {list(INITS)}")
        check_number(tc.finetune_lr, "trainer.finetune_lr", lo=0, lo_open=True)
        check_int(tc.bn_calibration_images, "trainer.bn_calibration_images", lo=0)
        if tc.num_threads is not None:
            check_int(tc.num_threads, "trainer.num_threads", lo=1)
        if not isinstance(tc.device, str):
            raise ConfigError(f"trainer.device: expected a device name such as auto, cpu or cuda, got {tc.device!r}")
        exit_loss_weights(2, tc.exit_weights)  # validates the scheme early
        return tc

    def candidate_schedule(self) -> "TrainerConfig":
        """The schedule a candidate trains with: fine-tuning at ``finetune_lr`` when it inherits supernet weights."""
        return replace(self, lr=self.finetune_lr) if self.init == "supernet" else self


@dataclass
class TrainStats:
    seconds: float
    steps: int
    final_loss: float
    cuda_graph: str = "off"  # GraphedTrainStep.graph_state (captured, failed: ..., pending: too few steps) or off


def _batches(n: int, batch_size: int, generator: torch.Generator | None = None,
             drop_last: bool = False) -> list[torch.Tensor]:
    """Shuffled index batches; a trailing batch of one sample is dropped (BatchNorm cannot train on it), and with
    ``drop_last`` any short trailing batch (a CUDA graph replays one shape), unless it is the only batch."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and (len(batches[-1]) == 1 or (drop_last and len(batches[-1]) < batch_size)):
        batches.pop()
    return batches


def cudnn_autotune(enabled: bool) -> ContextManager[None]:
    """cuDNN autotuning while a block runs: it pays for one fixed network (a candidate: 25 vs 38 ms per
    step on an H100, docs/benchmarks.md) and costs seconds per step when every step brings new shapes
    (supernet sandwich steps: 2.9 s vs 0.13 s)."""
    return cudnn_flags(benchmark=enabled)


@contextmanager
def candidate_cudnn(cfg: TrainerConfig, device: torch.device, autotune: bool = True) -> Iterator[None]:
    """cuDNN as the trainer settings ask, for one candidate's training, BatchNorm calibration and val pass.

    ``autotune`` False keeps cuDNN's autotuning off whatever ``trainer.cudnn_benchmark`` says: a pass that
    runs once (BatchNorm calibration, the val pass at ``eval_batch_size``) would only pay for the tuning.

    ``trainer.cudnn_depthwise=false`` routes depthwise convolutions to PyTorch's own CUDA kernel
    (``aebnas.nn.depthwise``): cuDNN >= 9.10 compiles a depthwise engine at run time for every new layer
    shape (NVIDIA/cudnn-frontend#1066), the suspect for the 27-36 s first epoch of each new candidate on an
    H100 (docs/benchmarks.md). On the CPU both settings are no-ops.
    """
    if device.type != "cuda":
        yield
        return
    with cudnn_flags(benchmark=autotune and cfg.cudnn_benchmark), native_depthwise(not cfg.cudnn_depthwise):
        yield


@contextmanager
def training_layout(model: nn.Module, cfg: TrainerConfig, device: torch.device) -> Iterator[bool]:
    """``model`` on ``device`` in train mode, in NHWC layout while the block runs if ``cfg.channels_last`` and CUDA
    (cuDNN's NHWC kernels; on the CPU depthwise convs get slower); yields whether inputs must be NHWC too.

    The layout is put back afterwards, so saved weights and later eval passes see ordinary tensors.
    """
    channels_last = cfg.channels_last and device.type == "cuda"
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        yield channels_last
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)


class BatchStream:
    """Shuffled, augmented, normalised training batches from the train split held whole on ``device``.

    Everything after the one upload happens on the device in a few tensor ops per
    batch, and nothing waits for the device: the host only queues work.
    """

    def __init__(self, data: DataSplits, batch_size: int, crop_padding: int, device: torch.device, seed: int = 0,
                 channels_last: bool = False, drop_last: bool = False):
        self.x = data.train.x.to(device)
        self.y = data.train.y.to(device)
        self.mean = torch.as_tensor(data.mean, dtype=torch.float32, device=device)
        self.std = torch.as_tensor(data.std, dtype=torch.float32, device=device)
        self.batch_size, self.crop_padding, self.hflip = batch_size, crop_padding, data.hflip
        self.device = device
        self.channels_last, self.drop_last = channels_last, drop_last
        self.order_gen = torch.Generator().manual_seed(seed)
        self.aug_gen = torch.Generator(device=device).manual_seed(seed + 1)

    @property
    def steps_per_epoch(self) -> int:
        return len(_batches(len(self.y), self.batch_size, drop_last=self.drop_last))

    def epoch(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in _batches(len(self.y), self.batch_size, self.order_gen, self.drop_last):
            idx = idx.to(self.device, non_blocking=True)
            xb = normalize(augment_batch(self.x[idx], self.crop_padding, self.hflip, self.aug_gen), self.mean, self.std)
            if self.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yield xb, self.y[idx]


def cosine_factor(step: int, total_steps: int) -> float:
    """The learning-rate multiplier at ``step``: a cosine decay from 1 to 0 over ``total_steps``."""
    total = max(1, total_steps)
    return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def _optimizer(params: Iterable[nn.Parameter], cfg: TrainerConfig, lr: float | torch.Tensor, weight_decay: float,
               fused: bool = False) -> torch.optim.Optimizer:
    fused_arg = True if fused else None  # None: torch's own choice (foreach on CUDA)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=weight_decay, fused=fused_arg)
    capturable = fused and isinstance(lr, torch.Tensor) and lr.device.type == "cuda"
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused_arg, capturable=capturable)


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainerConfig, lr: float, weight_decay: float,
                   total_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimizer of ``cfg`` with a cosine decay to zero over ``total_steps``."""
    opt = _optimizer(params, cfg, lr, weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_factor(s, total_steps))


def make_graphable_optimizer(params: Iterable[nn.Parameter], cfg: TrainerConfig, lr: torch.Tensor,
                             weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer of ``cfg`` in the form a CUDA graph can replay: fused (one kernel, no host-side loop over
    parameters) and reading its learning rate from the 0-dim device tensor ``lr``, which the schedule rewrites
    in place (a scheduler would read it back to the host every step)."""
    return _optimizer(params, cfg, lr, weight_decay, fused=True)


def records_cuda_graphs(cfg: TrainerConfig, device: torch.device) -> bool:
    """Whether ``fit`` records its steps as a CUDA graph (and so drops short last batches): the one place that
    decides it, so the batches and the step always agree."""
    return cfg.cuda_graphs and device.type == "cuda"


def make_train_step(model: nn.Module, cfg: TrainerConfig, device: torch.device,
                    total_steps: int) -> EagerTrainStep | GraphedTrainStep:
    """The training step ``fit`` runs: recorded as a CUDA graph with ``cfg.cuda_graphs`` on CUDA, else eager.

    Both follow the same schedule (``cosine_factor`` from ``cfg.lr``) and loss (``joint_exit_loss`` with
    ``cfg.exit_weights``).
    """
    n_exits = model.n_exits if hasattr(model, "n_exits") else 1
    weights = exit_loss_weights(n_exits, cfg.exit_weights)
    use_amp = cfg.amp and device.type == "cuda"

    def loss_fn(outputs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return joint_exit_loss(outputs, target, weights, cfg.label_smoothing)

    if records_cuda_graphs(cfg, device):
        lr = torch.tensor(float(cfg.lr), device=device)
        opt = make_graphable_optimizer(model.parameters(), cfg, lr, cfg.weight_decay)
        return GraphedTrainStep(model, opt, lr, lambda s: cfg.lr * cosine_factor(s, total_steps), loss_fn, device,
                                use_amp)
    opt, sched = make_optimizer(model.parameters(), cfg, cfg.lr, cfg.weight_decay, total_steps)
    return EagerTrainStep(model, opt, sched, loss_fn, device, use_amp)


def check_finite(loss_sum: torch.Tensor, steps: int) -> None:
    """Raise TrainingDiverged when an epoch's summed loss is NaN/inf (checked once per epoch: no per-step sync)."""
    if not torch.isfinite(loss_sum):
        raise TrainingDiverged(f"loss became {loss_sum.item()} by step {steps}")


def fit(model: nn.Module, data: DataSplits, cfg: TrainerConfig, device: torch.device,
        seed: int = 0, on_epoch: Callable[[int, float], None] | None = None) -> TrainStats:
    """Train all exits jointly with a cosine schedule; raises TrainingDiverged on NaN/inf loss.

    ``on_epoch(epoch, mean_loss)`` runs after each epoch (1-based), e.g. to report progress of a long run.
    With ``cfg.cuda_graphs`` on CUDA the step is a replayed CUDA graph and every epoch drops its short last
    batch (a graph replays one batch shape).
    """
    start = time.perf_counter()
    loss = torch.full((), float("nan"))
    steps = 0
    with training_layout(model, cfg, device) as channels_last, candidate_cudnn(cfg, device):
        stream = BatchStream(data, cfg.batch_size, cfg.crop_padding, device, seed, channels_last,
                             drop_last=records_cuda_graphs(cfg, device))
        step = make_train_step(model, cfg, device, cfg.epochs * stream.steps_per_epoch)
        for epoch in range(1, cfg.epochs + 1):
            loss_sum = torch.zeros((), device=device)
            epoch_steps = steps
            for xb, yb in stream.epoch():
                loss = step(xb, yb)
                steps += 1
                loss_sum += loss.detach()
            check_finite(loss_sum, steps)  # synchronises once per epoch anyway; on_epoch adds no wait
            if on_epoch is not None:
                on_epoch(epoch, float(loss_sum) / max(1, steps - epoch_steps))
        step.optimizer.zero_grad(set_to_none=True)  # no gradients kept (with a graph: held in its memory pool)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return TrainStats(seconds=time.perf_counter() - start, steps=steps, final_loss=float(loss.detach()),
                      cuda_graph=step.graph_state if cfg.epochs else "off")


#: Input values (images x channels x pixels) sent through recalibration at once: 2,000 CIFAR-sized images.
#: Up to this the statistics are exact; beyond it, equal chunks keep activation memory bounded.
CALIBRATION_CHUNK_VALUES = 2000 * 3 * 32 * 32


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, data: DataSplits, device: torch.device, n_images: int,
                          amp: bool = True, chunk_values: int = CALIBRATION_CHUNK_VALUES) -> None:
    """Recompute every BatchNorm's running statistics from ``n_images`` training images.

    Inherited running statistics belong to whatever mix of subnets the supernet
    saw; a candidate's own activations have other statistics. When the images
    hold at most ``chunk_values`` values they go through in one batch, and the
    statistics are exactly their mean and variance (averaging per-batch statistics
    would weigh a short last batch too much and miss the spread between batch
    means). Larger inputs (big ``image_folder`` images) go in equal chunks, whose
    averaged means are still exact and whose variances leave out only the spread
    between chunk means; a few images past a multiple of the chunk are left out.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    n_images = min(n_images, len(data.train))
    if not bns or n_images < 2:  # BatchNorm cannot estimate a variance from one image
        return
    per_image = int(np.prod(data.train.x.shape[1:]))
    n_chunks = max(1, math.ceil(n_images * per_image / chunk_values))
    chunk = max(2, n_images // n_chunks)
    n_chunks = n_images // chunk
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the chunks: with one chunk, exactly its statistics
    model.to(device).train()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
        for start in range(0, n_chunks * chunk, chunk):
            model(normalize(data.train.x[start:start + chunk].to(device), data.mean, data.std))
    for bn, m in zip(bns, momenta):
        bn.momentum = m


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
