"""Fitting a candidate: joint training of all exits, and per-exit logits for a split.

The whole split lives on the training device as uint8 and is augmented there in
batches: small images make DataLoader workers and PIL the bottleneck, not the
network.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar, ContextManager, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from aebnas.data import ArraySplit, DataSplits, augment_batch, normalize
from aebnas.nn.depthwise import cudnn_flags, native_depthwise
from aebnas.train.losses import exit_loss_weights, joint_exit_loss
from aebnas.train.steps import EagerTrainStep, GraphedTrainStep
from aebnas.config_checks import Settings, setting


#: Where a candidate's weights come from: the cached supernet (then fine-tuned) or random initialisation.
INITS = ("supernet", "from_scratch")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the candidate cannot be scored."""


def _check_exit_weights(value: Any, name: str, error: type[Exception]) -> Any:
    exit_loss_weights(2, value, name)  # validates the scheme early
    return value


@dataclass(frozen=True)
class TrainerSettings(Settings):
    """Candidate training settings (the Hydra ``trainer`` group)."""

    section: ClassVar[str] = "trainer"

    epochs: int = setting(5, lo=0, help="Candidate epochs: fine-tuning with init=supernet (0 allowed), training "
                                        "with init=from_scratch.")
    batch_size: int = setting(128, lo=1, help="Training batch size.")
    eval_batch_size: int = setting(1024, lo=1, help="Batch size of the val and test passes.")
    optimizer: str = setting("sgd", choices=("sgd", "adamw"), help="Optimizer of candidate training.")
    lr: float = setting(0.05, lo=0, lo_open=True, help="Learning rate of from-scratch training (init=from_scratch).")
    momentum: float = setting(0.9, lo=0, hi=1, help="SGD momentum (AdamW's beta1).")
    nesterov: bool = setting(True, help="Nesterov momentum for SGD.")
    weight_decay: float = setting(5e-5, lo=0, help="Weight decay.")
    label_smoothing: float = setting(0.0, lo=0, hi=0.999, help="Label smoothing of the cross-entropy loss.")
    exit_weights: Any = setting("uniform", check=_check_exit_weights,
                                allowed="uniform | linear | a list of non-negative numbers",
                                help="Loss weight per exit: uniform, linear (deeper exits weigh more) or a list, "
                                     "final exit last.")
    exit_distill: float = setting(0.0, lo=0, hi=1,
                                  help="Self-distillation of the early exits: the weight of the final exit's "
                                       "softened predictions in each early exit's loss (0 = labels only).")
    distill_temperature: float = setting(3.0, lo=0, lo_open=True,
                                         help="Softmax temperature of the final exit's predictions that the early "
                                              "exits learn (with exit_distill > 0).")
    crop_padding: int = setting(4, lo=0, help="Random-crop padding in pixels (0 turns cropping off); flips follow "
                                              "dataset.hflip.")
    amp: bool = setting(True, help="bf16 autocast, on CUDA only.")
    channels_last: bool = setting(True, help="NHWC memory layout for cuDNN, on CUDA only (on the CPU it slows "
                                             "depthwise convolutions).")
    cudnn_benchmark: bool = setting(True, help="cuDNN autotuning of candidate training, on CUDA only: faster steps "
                                               "for one fixed network, but every new layer shape is benchmarked first.")
    cudnn_depthwise: bool = setting(True, help="cuDNN for a candidate's depthwise convolutions, on CUDA only; false "
                                               "runs them on PyTorch's own kernel (no run-time engine compilation).")
    cuda_graphs: bool = setting(False, help="Record a candidate's training step once as a CUDA graph and replay it "
                                            "(CUDA only); each epoch then drops its short last batch.")
    device: str = setting("auto", help="auto = cuda when available, else cpu; or cpu, cuda, cuda:1 ...")
    num_threads: int | None = setting(None, lo=1, help="CPU threads for torch (null = torch's default).")
    init: str = setting("from_scratch", choices=INITS,
                        help="Where a candidate's weights come from: random init at `lr`, or the cached supernet "
                             "(BatchNorm recalibrated, `epochs` of fine-tuning at `finetune_lr`; see supernet).")
    finetune_lr: float = setting(0.01, lo=0, lo_open=True,
                                 help="Learning rate of a candidate's fine-tuning after it inherits supernet weights.")
    bn_calibration_images: int = setting(2000, lo=0, help="Training images whose activations re-estimate BatchNorm "
                                                          "statistics of an inherited subnet.")

    def candidate_schedule(self) -> "TrainerSettings":
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
    step on an H100, docs/results/supernet.md) and costs seconds per step when every step brings new shapes
    (supernet sandwich steps: 2.9 s vs 0.13 s)."""
    return cudnn_flags(benchmark=enabled)


@contextmanager
def candidate_cudnn(cfg: TrainerSettings, device: torch.device, autotune: bool = True) -> Iterator[None]:
    """cuDNN as the trainer settings ask, for one candidate's training, BatchNorm calibration and val pass.

    ``autotune`` False keeps cuDNN's autotuning off whatever ``trainer.cudnn_benchmark`` says: a pass that
    runs once (BatchNorm calibration, the val pass at ``eval_batch_size``) would only pay for the tuning.

    ``trainer.cudnn_depthwise=false`` routes depthwise convolutions to PyTorch's own CUDA kernel
    (``aebnas.nn.depthwise``): cuDNN >= 9.10 compiles a depthwise engine at run time for every new layer
    shape (NVIDIA/cudnn-frontend#1066), the suspect for the 27-36 s first epoch of each new candidate on an
    H100 (docs/results/supernet.md). On the CPU both settings are no-ops.
    """
    if device.type != "cuda":
        yield
        return
    with cudnn_flags(benchmark=autotune and cfg.cudnn_benchmark), native_depthwise(not cfg.cudnn_depthwise):
        yield


@contextmanager
def training_layout(model: nn.Module, cfg: TrainerSettings, device: torch.device) -> Iterator[bool]:
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


def _optimizer(params: Iterable[nn.Parameter], cfg: TrainerSettings, lr: float | torch.Tensor, weight_decay: float,
               fused: bool = False) -> torch.optim.Optimizer:
    fused_arg = True if fused else None  # None: torch's own choice (foreach on CUDA)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=weight_decay, fused=fused_arg)
    capturable = fused and isinstance(lr, torch.Tensor) and lr.device.type == "cuda"
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused_arg, capturable=capturable)


def make_optimizer(params: Iterable[nn.Parameter], cfg: TrainerSettings, lr: float, weight_decay: float,
                   total_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimizer of ``cfg`` with a cosine decay to zero over ``total_steps``."""
    opt = _optimizer(params, cfg, lr, weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_factor(s, total_steps))


def make_graphable_optimizer(params: Iterable[nn.Parameter], cfg: TrainerSettings, lr: torch.Tensor,
                             weight_decay: float) -> torch.optim.Optimizer:
    """The optimizer of ``cfg`` in the form a CUDA graph can replay: fused (one kernel, no host-side loop over
    parameters) and reading its learning rate from the 0-dim device tensor ``lr``, which the schedule rewrites
    in place (a scheduler would read it back to the host every step)."""
    return _optimizer(params, cfg, lr, weight_decay, fused=True)


def records_cuda_graphs(cfg: TrainerSettings, device: torch.device) -> bool:
    """Whether ``fit`` records its steps as a CUDA graph (and so drops short last batches): the one place that
    decides it, so the batches and the step always agree."""
    return cfg.cuda_graphs and device.type == "cuda"


def make_train_step(model: nn.Module, cfg: TrainerSettings, device: torch.device,
                    total_steps: int) -> EagerTrainStep | GraphedTrainStep:
    """The training step ``fit`` runs: recorded as a CUDA graph with ``cfg.cuda_graphs`` on CUDA, else eager.

    Both follow the same schedule (``cosine_factor`` from ``cfg.lr``) and loss (``joint_exit_loss`` with
    ``cfg.exit_weights`` and ``cfg.exit_distill``).
    """
    n_exits = model.n_exits if hasattr(model, "n_exits") else 1
    weights = exit_loss_weights(n_exits, cfg.exit_weights)
    use_amp = cfg.amp and device.type == "cuda"

    def loss_fn(outputs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return joint_exit_loss(outputs, target, weights, cfg.label_smoothing, cfg.exit_distill,
                               cfg.distill_temperature)

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


def fit(model: nn.Module, data: DataSplits, cfg: TrainerSettings, device: torch.device,
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
