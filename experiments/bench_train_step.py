"""Where a training step's time goes on this device: cold (new layer shapes) vs warm steps, per data layout.

    python experiments/bench_train_step.py --out train_step.json [hydra overrides ...]

For every combination of bf16 autocast, channels_last and cuDNN autotuning, a
candidate never seen before in this process is trained: the first step (every
layer shape new to the process) and the mean of ``--steps`` later steps are
timed. On an H100 the first epoch of each new candidate cost 27-36 s against
2.3-2.9 s for later ones (docs/results/supernet.md), so the cold step is the figure
to drive down. The suspect: cuDNN 9.10 and later compile depthwise engines at
run time, about 1.5 s per new configuration (NVIDIA/cudnn-frontend issue #1066).
So some rows run the depthwise convolutions on PyTorch's own kernel
(``cudnn_depthwise`` false: what ``trainer.cudnn_depthwise=false`` does) and two
run with cuDNN off altogether (every other convolution then loops over the
batch: slow, but free of cuDNN set-up). Two rows record the step as a CUDA graph
(``trainer.cuda_graphs=true``) and time its replays: whether the host's cost per
operator, not the GPU, sets the warm step's pace. Every row runs the trainer's own
step (``make_train_step``). The most telling rows come first, so a
run cut short keeps them; the JSON is rewritten after every row. Supernet
sandwich steps (autotuning off: their shapes change every step) come last, per
layout.

In one process every row trains another network (so no row finds its shapes
compiled by an earlier one), but engines and the allocator stay warm from row
to row. ``--fresh`` runs each variant in a process of its own on one shared
network: the clean comparison, at the price of a process start per row. The
first row compares PyTorch's depthwise kernel with cuDNN's numerically.

    python experiments/bench_train_step.py --out train_step.json --fresh --variants 5 --no-supernet

``--count-ops N`` only counts the operators one training step issues, for N random networks, on any device;
``--compile-cost N`` only times ``torch.compile``'s first and later steps against eager ones for N networks.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench_common import DEFAULT_OVERRIDES, load_setup, machine, sample_genomes, write_json

from aebnas.cli.common import user_errors
from aebnas.nn import build_model
from aebnas.nn.depthwise import DepthwiseConv2d, native_depthwise, native_vs_cudnn
from aebnas.nn.supernet import Supernet
from aebnas.train.supernet import sandwich_backbones, sandwich_heads, sandwich_step
from aebnas.train.trainer import make_train_step


def timed(fn, device: torch.device) -> float:
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000


# (amp, channels_last, autotune, cudnn, cudnn for depthwise, CUDA graph). Most telling first (a run cut short
# keeps those rows): today's default, depthwise without cuDNN (trainer.cudnn_depthwise=false), the default with
# the step recorded as a CUDA graph (trainer.cuda_graphs=true), both depthwise settings without autotuning,
# depthwise without cuDNN recorded as a graph, NCHW, cuDNN off altogether, then the remaining layouts.
VARIANTS = [(True, True, True, True, True, False), (True, True, True, True, False, False),
            (True, True, True, True, True, True), (True, True, False, True, True, False),
            (True, True, False, True, False, False), (True, True, True, True, False, True),
            (True, False, False, True, False, False), (True, False, False, False, True, False),
            (True, True, False, False, True, False)]
VARIANTS += [(amp, cl, bench, True, True, False) for amp, cl, bench in itertools.product((True, False), (True, False),
                                                                                         (False, True))
             if (amp, cl, bench, True, True, False) not in VARIANTS]


def depthwise_check(dev: torch.device) -> dict:
    """PyTorch's depthwise kernel against cuDNN's on one layer, bf16 autocast and channels_last as in training:
    the largest differences of the output and of both gradients, relative to the largest cuDNN value."""
    torch.manual_seed(0)
    layer = DepthwiseConv2d(96, 96, 5, 1, 2, groups=96, bias=False).to(dev).to(memory_format=torch.channels_last)
    x = torch.randn(64, 96, 16, 16, device=dev).contiguous(memory_format=torch.channels_last)
    ref, got = native_vs_cudnn(layer, x)
    rel = [float((g - r).abs().max() / r.abs().max()) for r, g in zip(ref, got)]
    return {"what": "native depthwise vs cuDNN (bf16, channels_last)", "output_rel_diff": rel[0],
            "grad_input_rel_diff": rel[1], "grad_weight_rel_diff": rel[2]}


def time_variant(setup, variant: tuple, genome, x: torch.Tensor, y: torch.Tensor, steps: int) -> dict:
    """First and later training steps of ``genome``'s network, new to this process, under ``variant``: the
    trainer's own step (``make_train_step``: its optimizer, loss and, with ``cuda_graphs``, the recorded graph).

    With a CUDA graph the steps after the first are the eager warm-up steps and the recording
    (``recording_ms``: the 2nd to the 4th step); ``later_step_ms`` then times replays.
    """
    amp, cl, bench, cudnn, cudnn_dw, graphs = variant
    dev, data = setup.device, setup.data
    torch.backends.cudnn.benchmark = bench
    torch.backends.cudnn.enabled = cudnn
    xb = x.contiguous(memory_format=torch.channels_last) if cl else x
    model = build_model(genome, data.num_classes, data.in_channels).to(dev).train()
    if cl:
        model.to(memory_format=torch.channels_last)
    cfg = replace(setup.trainer, amp=amp, channels_last=cl, cudnn_benchmark=bench, cudnn_depthwise=cudnn_dw,
                  cuda_graphs=graphs)
    train_step = make_train_step(model, cfg, dev, total_steps=1000)

    def step():
        with native_depthwise(not cudnn_dw):
            train_step(xb, y)
    row = {"what": "new candidate", "genome": genome.network_key, "amp": amp, "channels_last": cl,
           "cudnn": cudnn, "cudnn_benchmark": bench, "cudnn_depthwise": cudnn_dw, "cuda_graphs": graphs}
    try:  # one variant failing on this machine must not cost the rows after it
        row["first_step_ms"] = timed(step, dev)
        if graphs:
            row["recording_ms"] = timed(lambda: [step() for _ in range(train_step.warmup_steps)], dev)
            row["cuda_graph"] = train_step.graph_state
        warm = timed(lambda: [step() for _ in range(steps)], dev) / steps
        row.update({"later_step_ms": warm, "images_per_s_later": x.shape[0] / warm * 1000})
    except RuntimeError as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        torch.backends.cudnn.enabled = True
    return row


def time_supernet_steps(setup, x: torch.Tensor, y: torch.Tensor, steps: int, rng: np.random.Generator) -> list[dict]:
    """Supernet sandwich steps per layout (autotuning off: their shapes change every step); with exit heads
    when the config says ``supernet.exits=joint``."""
    dev, data = setup.device, setup.data
    torch.backends.cudnn.benchmark = False
    rows = []
    for amp, cl in itertools.product((True, False), (True, False)):
        xb = x.contiguous(memory_format=torch.channels_last) if cl else x
        joint = setup.supernet.exits == "joint"
        sn = Supernet(setup.space.config, data.num_classes, data.in_channels, exits=joint).to(dev)
        if cl:
            sn.to(memory_format=torch.channels_last)
        sopt = torch.optim.SGD(sn.parameters(), lr=0.01, momentum=0.9)

        def sstep():
            sopt.zero_grad(set_to_none=True)
            n = setup.supernet.random_subnets
            heads = sandwich_heads(setup.space, rng, n, setup.supernet.head_samples) if joint else None
            sandwich_step(sn, xb, y, sandwich_backbones(setup.space, rng, n), setup.supernet, amp, heads)
            sopt.step()
        per_step = [timed(sstep, dev) for _ in range(steps)]
        rows.append({"what": "supernet sandwich step", "exit_heads": setup.supernet.exits, "amp": amp, "channels_last": cl, "cudnn_benchmark": False,
                     "step_ms_first": per_step[0], "step_ms_median": float(np.median(per_step))})
        print(rows[-1], flush=True)
    return rows


class _OpCounter(TorchDispatchMode):
    """Counts the aten operators torch dispatches (after autograd; composites such as conv2d arrive
    decomposed): each one costs the host a dispatch, and those that compute launch a kernel on a GPU."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _eager_candidates(setup, n_genomes: int, batch: int):
    """``n_genomes`` random networks of the space, each with the trainer's eager step and a random batch on the
    config's device: (genome, model, step, x, y)."""
    dev, data = setup.device, setup.data
    for genome in sample_genomes(setup.space, n_genomes, setup.seed + 1):
        model = build_model(genome, data.num_classes, data.in_channels).to(dev).train()
        train_step = make_train_step(model, replace(setup.trainer, cuda_graphs=False), dev, total_steps=1000)
        x = torch.randn(batch, data.in_channels, data.resolution, data.resolution, device=dev)
        y = torch.randint(0, data.num_classes, (batch,), device=dev)
        yield genome, model, train_step, x, y


def count_step_ops(setup, n_genomes: int, batch: int) -> list[dict]:
    """Operators one training step of the trainer issues, for ``n_genomes`` random networks of the space, on
    whatever device the config resolves to (the CPU too: without autocast, which runs on CUDA only): forward,
    joint loss and backward, and the optimizer's step apart (torch loops over the parameters on the CPU and
    uses its multi-tensor kernels on CUDA). The figure says how much host work a CUDA graph can save."""
    dev = setup.device
    rows = []
    for genome, model, train_step, x, y in _eager_candidates(setup, n_genomes, batch):
        train_step(x, y)  # the optimizer's state exists from here on, as in every later step
        train_step.optimizer.zero_grad(set_to_none=True)
        with _OpCounter() as forward_backward:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=train_step.amp):
                outputs = model(x)
            train_step.loss_fn(outputs, y).backward()
        with _OpCounter() as optimizer:
            train_step.optimizer.step()
        rows.append({"what": "operators per training step", "genome": genome.network_key,
                     "forward_backward_operators": forward_backward.count, "optimizer_operators": optimizer.count,
                     "parameter_tensors": sum(1 for _ in model.parameters()), "device": str(dev),
                     "amp": train_step.amp})
        print({k: v for k, v in rows[-1].items() if k != "genome"}, flush=True)
    return rows


def compile_cost(setup, n_genomes: int, batch: int, steps: int) -> list[dict]:
    """What ``torch.compile`` of a candidate costs and gives, on whatever device the config resolves to: the
    first (compiling) step and later steps of the compiled network against the eager ones. Every candidate is
    a new network, so a search would pay the compilation once per candidate."""
    dev = setup.device
    rows = []
    for genome, model, train_step, x, y in _eager_candidates(setup, n_genomes, batch):

        def run(k: int) -> float:  # seconds for k steps, the device finished
            start = time.perf_counter()
            for _ in range(k):
                train_step(x, y)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return time.perf_counter() - start
        row = {"what": "torch.compile of a candidate", "genome": genome.network_key, "device": str(dev),
               "batch": batch, "eager_first_step_s": run(1), "eager_step_ms": run(steps) / steps * 1000}
        train_step.model = torch.compile(model)
        row.update({"compiled_first_step_s": run(1), "compiled_step_ms": run(steps) / steps * 1000})
        rows.append(row)
        print({k: v for k, v in row.items() if k != "genome"}, flush=True)
    return rows


def fresh_process_row(args: argparse.Namespace, index: int) -> dict:
    """Variant ``index`` in a process of its own: no engine, autotuning result or allocation of another row."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        cmd = [sys.executable, __file__, "--out", str(out), "--only", str(index), "--steps", str(args.steps),
               "--batch", str(args.batch), *args.overrides]
        try:
            subprocess.run(cmd, timeout=args.row_timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"what": "new candidate", "variant": list(VARIANTS[index]), "error": f"over {args.row_timeout} s"}
        if not out.exists():
            return {"what": "new candidate", "variant": list(VARIANTS[index]), "error": "the process wrote nothing"}
        return json.loads(out.read_text())["rows"][0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--variants", type=int, default=len(VARIANTS), help="time only the first N variants")
    p.add_argument("--fresh", action="store_true", help="each variant in a process of its own, all on one genome")
    p.add_argument("--row-timeout", type=float, default=90, help="with --fresh: seconds one variant may take")
    p.add_argument("--no-supernet", action="store_true", help="skip the supernet sandwich steps")
    p.add_argument("--count-ops", type=int, default=0, metavar="N",
                   help="only count the operators of one training step for N random networks (any device)")
    p.add_argument("--compile-cost", type=int, default=0, metavar="N",
                   help="only time torch.compile's first and later steps against eager ones for N random networks")
    p.add_argument("--only", type=int, default=None, help=argparse.SUPPRESS)  # one variant, for --fresh
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    setup = load_setup(args.overrides or list(DEFAULT_OVERRIDES))
    dev, data = setup.device, setup.data
    if args.count_ops:
        # batch 2: the operators do not depend on the batch size, and the count runs on any CPU in seconds
        write_json(args.out, {"machine": machine(), "batch": 2, "rows": count_step_ops(setup, args.count_ops, 2)})
        return
    if args.compile_cost:
        write_json(args.out, {"machine": machine(), "batch": args.batch,
                              "rows": compile_cost(setup, args.compile_cost, args.batch, args.steps)})
        return
    if dev.type != "cuda":
        raise SystemExit(f"bench_train_step.py times cuDNN and CUDA kernels; trainer.device resolved to {dev}, "
                         "run it on a machine with a GPU")
    x = torch.randn(args.batch, data.in_channels, data.resolution, data.resolution, device=dev)
    y = torch.randint(0, data.num_classes, (args.batch,), device=dev)
    rows: list[dict] = []
    result = {"machine": machine(), "batch": args.batch, "fresh_processes": args.fresh, "rows": rows}
    variants = VARIANTS[:args.variants]
    if args.only is not None:  # a child of --fresh: the one shared genome, one row
        genome = sample_genomes(setup.space, 1, setup.seed + 1)[0]
        rows.append(time_variant(setup, VARIANTS[args.only], genome, x, y, args.steps))
        write_json(args.out, result)
        return
    rows.append(depthwise_check(dev))
    print(rows[-1], flush=True)
    write_json(args.out, result)
    genomes = sample_genomes(setup.space, len(variants), setup.seed + 1)  # in one process: a new network per row
    for index, variant in enumerate(variants):
        rows.append(fresh_process_row(args, index) if args.fresh
                    else time_variant(setup, variant, genomes[index], x, y, args.steps))
        print(rows[-1], flush=True)
        write_json(args.out, result)
    if not args.no_supernet:
        rows.extend(time_supernet_steps(setup, x, y, args.steps, np.random.default_rng(0)))
        write_json(args.out, result)

if __name__ == "__main__":
    with user_errors("bench_train_step.py"):  # a bad override or missing data: one line, no traceback
        main()
