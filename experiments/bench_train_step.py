"""Where a training step's time goes on this device: cold (new layer shapes) vs warm steps, per data layout.

    python experiments/bench_train_step.py --out train_step.json [hydra overrides ...]

For every combination of bf16 autocast, channels_last and cuDNN autotuning, a
candidate never seen before in this process is trained: the first step (every
layer shape new to the process) and the mean of ``--steps`` later steps are
timed. On an H100 the first epoch of each new candidate cost 27-36 s against
2.3-2.9 s for later ones (docs/benchmarks.md), so the cold step is the figure
to drive down. The suspect: cuDNN 9.10 and later compile depthwise engines at
run time, about 1.5 s per new configuration (NVIDIA/cudnn-frontend issue #1066).
So some rows run the depthwise convolutions on PyTorch's own kernel
(``cudnn_depthwise`` false: what ``trainer.cudnn_depthwise=false`` does) and two
run with cuDNN off altogether (every other convolution then loops over the
batch: slow, but free of cuDNN set-up). The most telling rows come first, so a
run cut short keeps them; the JSON is rewritten after every row. Supernet
sandwich steps (autotuning off: their shapes change every step) come last, per
layout.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from bench_common import DEFAULT_OVERRIDES, load_setup, machine, sample_genomes, write_json

from aebnas.cli.common import user_errors
from aebnas.nn import build_model
from aebnas.nn.depthwise import native_depthwise
from aebnas.nn.supernet import Supernet
from aebnas.train.losses import joint_exit_loss
from aebnas.train.supernet import sandwich_backbones, sandwich_step


def timed(fn, device: torch.device) -> float:
    torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize(device)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    setup = load_setup(args.overrides or list(DEFAULT_OVERRIDES))
    dev, data = setup.device, setup.data
    if dev.type != "cuda":
        raise SystemExit(f"bench_train_step.py times cuDNN and CUDA kernels; trainer.device resolved to {dev}, "
                         "run it on a machine with a GPU")
    x = torch.randn(args.batch, data.in_channels, data.resolution, data.resolution, device=dev)
    y = torch.randint(0, data.num_classes, (args.batch,), device=dev)
    # Most telling first (a call cut short keeps those rows): today's default, then depthwise without cuDNN
    # (trainer.cudnn_depthwise=false), then no autotuning, then cuDNN off altogether, then the rest.
    # (amp, channels_last, autotune, cudnn, cudnn for depthwise)
    variants = [(True, True, True, True, True), (True, True, True, True, False), (True, True, False, True, True),
                (True, True, False, True, False), (True, False, False, True, False), (True, False, False, False, True),
                (True, True, False, False, True)]
    variants += [(amp, cl, bench, True, True) for amp, cl, bench in itertools.product((True, False), (True, False),
                                                                                       (False, True))
                 if (amp, cl, bench, True, True) not in variants]
    genomes = iter(sample_genomes(setup.space, len(variants), setup.seed + 1))
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    result = {"machine": machine(), "batch": args.batch, "rows": rows}
    for amp, cl, bench, cudnn, cudnn_dw in variants:
        torch.backends.cudnn.benchmark = bench
        torch.backends.cudnn.enabled = cudnn
        xb = x.contiguous(memory_format=torch.channels_last) if cl else x
        genome = next(genomes)
        model = build_model(genome, data.num_classes, data.in_channels).to(dev)
        if cl:
            model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            with native_depthwise(not cudnn_dw):
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    out = model(xb)
                loss = joint_exit_loss(out, y, [1.0] * len(out))
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
        row = {"what": "new candidate", "genome": genome.network_key, "amp": amp, "channels_last": cl,
               "cudnn": cudnn, "cudnn_benchmark": bench, "cudnn_depthwise": cudnn_dw}
        try:  # one variant failing on this machine must not cost the rows after it
            cold = timed(step, dev)
            warm = timed(lambda: [step() for _ in range(args.steps)], dev) / args.steps
            row.update({"first_step_ms": cold, "later_step_ms": warm, "images_per_s_later": args.batch / warm * 1000})
        except RuntimeError as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        rows.append(row)
        print(rows[-1], flush=True)
        write_json(args.out, result)
    # Supernet sandwich steps (autotuning off: their shapes change every step), per layout.
    torch.backends.cudnn.enabled = True
    torch.backends.cudnn.benchmark = False
    for amp, cl in itertools.product((True, False), (True, False)):
        xb = x.contiguous(memory_format=torch.channels_last) if cl else x
        sn = Supernet(setup.space.config, data.num_classes, data.in_channels).to(dev)
        if cl:
            sn.to(memory_format=torch.channels_last)
        sopt = torch.optim.SGD(sn.parameters(), lr=0.01, momentum=0.9)

        def sstep():
            sopt.zero_grad(set_to_none=True)
            sandwich_step(sn, xb, y, sandwich_backbones(setup.space, rng, setup.supernet.random_subnets),
                          setup.supernet, amp)
            sopt.step()
        per_step = [timed(sstep, dev) for _ in range(args.steps)]
        rows.append({"what": "supernet sandwich step", "amp": amp, "channels_last": cl, "cudnn_benchmark": False,
                     "step_ms_first": per_step[0], "step_ms_median": float(np.median(per_step))})
        print(rows[-1], flush=True)
        write_json(args.out, result)

if __name__ == "__main__":
    with user_errors("bench_train_step.py"):  # a bad override or missing data: one line, no traceback
        main()
