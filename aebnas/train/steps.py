"""One optimisation step of a candidate: launched op by op from Python, or recorded once as a CUDA graph.

Why a graph: on an H100 a warm training step of an mbv3_32 candidate at batch 512 took 25 ms (2.3-2.9 s an
epoch of 45,000 images), so 5 fine-tune epochs cost 11.5-14.5 s against the target of 4 s per candidate on a
GPU. Its forward and backward alone launch 700-960 operators (eight random mbv3_32 candidates, counted
on the CPU by ``bench_train_step.py --count-ops``, docs/results/supernet.md), each paying Python and dispatcher
costs on the host, and a kernel launch where it computes. Where those costs, not the
GPU's arithmetic, set the pace, replaying one recorded graph per step removes them. Whether they do is for
``experiments/bench_train_step.py`` to measure on the GPU; until it has, ``trainer.cuda_graphs`` is off.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch
from torch import nn

log = logging.getLogger("aebnas.train")

#: outputs of every exit and the labels -> the scalar loss to minimise
LossFn = Callable[[Sequence[torch.Tensor], torch.Tensor], torch.Tensor]


def _as_list(outputs: torch.Tensor | Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
    return outputs if isinstance(outputs, (list, tuple)) else [outputs]


def _optimise(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, x: torch.Tensor,
              y: torch.Tensor, device_type: str, amp: bool, zero_grad: bool = True,
              cache_casts: bool = True) -> torch.Tensor:
    """Forward under autocast, loss, backward and the optimizer's update: what both steps run (without the
    learning-rate schedule, which each keeps its own way). ``cache_casts=False`` for a recording: autocast's
    cache of cast weights must not outlive it."""
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp, cache_enabled=cache_casts):
        outputs = model(x)
    loss = loss_fn(_as_list(outputs), y)
    if zero_grad:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


class EagerTrainStep:
    """Forward, loss, backward, optimizer and schedule step, every operator launched from Python."""

    graph_state = "off"

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, loss_fn: LossFn, device: torch.device, amp: bool):
        self.model, self.optimizer, self.scheduler, self.loss_fn = model, optimizer, scheduler, loss_fn
        self.device_type, self.amp = device.type, amp

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        loss = _optimise(self.model, self.optimizer, self.loss_fn, xb, yb, self.device_type, self.amp)
        self.scheduler.step()
        return loss


class GraphedTrainStep:
    """The same step recorded once as a CUDA graph and replayed for every later batch of the same shape.

    What a graph needs, and how this class provides it:

    - fixed input addresses: each batch is copied into static buffers (the trainer drops the short last batch
      of an epoch, so every batch has one shape);
    - no host scalars that change: the learning rate is a 0-dim tensor on the device (``lr``) that the
      schedule ``lr_at(step)`` rewrites in place before each step, and the optimizer must be a fused one that
      reads it there (``trainer.make_graphable_optimizer``);
    - lazy initialisation done before recording: the first ``warmup_steps`` batches train eagerly on a side
      stream (they create the momentum buffers and let cuDNN autotune), then the next batch is recorded and
      every batch from there on is a replay. Warm-up steps are real training steps, not extra ones.

    If recording fails (an operator that cannot be captured, say), the error is logged and this candidate goes
    on training eagerly with the same optimizer and schedule; later steps of this process then skip recording
    altogether (a failed capture may leave the allocator's bookkeeping behind on older torch releases, and the
    next candidate would most likely fail the same way). Running out of memory while recording is raised, as
    it would be eagerly. "Eagerly" keeps the fused optimizer, and ``fit`` keeps dropping short last batches.
    ``graph_state`` says which happened: ``captured``, ``failed: ...``, ``eager`` off CUDA (``fit`` builds
    an :class:`EagerTrainStep` there instead), ``pending`` while no step has been recorded yet (a fit of
    ``warmup_steps`` steps or fewer ends so).
    Off CUDA no graph is ever recorded: every step runs eagerly, the same arithmetic the graph would replay.
    """

    #: why recording failed in this process, if it did: later steps train eagerly from the start
    _process_failure: str | None = None
    #: whether this process has said that its steps are recorded (once, so that a successful run leaves a trace)
    _announced = False

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, lr: torch.Tensor,
                 lr_at: Callable[[int], float], loss_fn: LossFn, device: torch.device, amp: bool,
                 warmup_steps: int = 3):
        self.model, self.optimizer, self.lr, self.lr_at, self.loss_fn = model, optimizer, lr, lr_at, loss_fn
        self.device, self.amp, self.warmup_steps = device, amp, warmup_steps
        self.steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        if device.type != "cuda":
            self.graph_state = "eager"
        elif self._process_failure is not None:
            self.graph_state = f"failed: {self._process_failure}"
        else:
            self.graph_state = "pending"
        self._x = self._y = self._loss = None
        self._side: torch.cuda.Stream | None = None  # warm-up and recording share it (handles made there stay valid)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        self.lr.fill_(self.lr_at(self.steps))  # a device-side write: no wait for the GPU
        self.steps += 1
        if self.graph is not None:
            if xb.shape != self._x.shape or yb.shape != self._y.shape:  # copy_ would broadcast a smaller batch
                raise ValueError(f"a recorded training step replays batches of shape {tuple(self._x.shape)}, "
                                 f"got {tuple(xb.shape)}: every batch of a graphed fit must have one size")
            self._x.copy_(xb)
            self._y.copy_(yb)
            self.graph.replay()
            return self._loss
        if self.graph_state != "pending":  # off CUDA, or recording failed
            return self._run(xb, yb)
        if self.steps <= self.warmup_steps:
            return self._warm_up(xb, yb)
        return self._record_and_replay(xb, yb)

    def _run(self, x: torch.Tensor, y: torch.Tensor, zero_grad: bool = True) -> torch.Tensor:
        return _optimise(self.model, self.optimizer, self.loss_fn, x, y, self.device.type, self.amp, zero_grad,
                         cache_casts=False)

    def _warm_up(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if self._side is None:
            self._side = torch.cuda.Stream(device=self.device)
        self._side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._side):
            loss = self._run(xb, yb)
        torch.cuda.current_stream(self.device).wait_stream(self._side)
        return loss

    def _record_and_replay(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        self._x, self._y = xb.clone(), yb.clone()  # clone keeps channels_last
        self.optimizer.zero_grad(set_to_none=True)  # the recorded backward writes the gradients afresh
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.current_stream(self.device)
        try:
            with torch.cuda.graph(graph, stream=self._side):
                self._loss = self._run(self._x, self._y, zero_grad=False)
        except RuntimeError as exc:
            # when ending an invalidated capture fails, torch leaves the capture stream current: put ours back
            torch.cuda.set_stream(stream)
            if isinstance(exc, torch.cuda.OutOfMemoryError):  # raised as it would be eagerly
                raise
            cause = exc.__context__ if exc.__context__ is not None else exc
            message = f"{type(cause).__name__}: {cause}".splitlines()[0][:300]
            self.graph_state = f"failed: {message}"
            GraphedTrainStep._process_failure = message
            self._x = self._y = self._loss = None
            self.optimizer.zero_grad(set_to_none=True)
            log.warning("trainer.cuda_graphs: recording the training step failed (%s); training eagerly from here "
                        "on in this process", message)
            return self._run(xb, yb)
        self.graph, self.graph_state = graph, "captured"
        if not GraphedTrainStep._announced:
            GraphedTrainStep._announced = True
            log.info("trainer.cuda_graphs: training steps are recorded as CUDA graphs and replayed (each candidate "
                     "after %d eager warm-up steps)", self.warmup_steps)
        graph.replay()  # recording ran nothing: this is the step for this batch
        return self._loss
