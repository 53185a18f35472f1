"""Running and copying a slice of a larger layer: the one rule every weight-shared module follows.

A smaller choice is always the *first* channels and the *centre* of the largest
kernel, so the forward of a slice (supernet training) and the copy of a slice
into a standalone module (a candidate inheriting weights) must agree exactly;
both sides use these functions, and tests hold them together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def centre(max_kernel: int, kernel: int) -> slice:
    """Rows/columns of a ``max_kernel`` x ``max_kernel`` kernel that make up a ``kernel`` x ``kernel`` one."""
    offset = (max_kernel - kernel) // 2
    return slice(offset, offset + kernel)


def conv_slice(weight: torch.Tensor, c_out: int, c_in: int, kernel: int, depthwise: bool = False) -> torch.Tensor:
    """First ``c_out`` filters over the first ``c_in`` inputs (all of a depthwise filter's one), centre ``kernel``."""
    c = centre(weight.shape[-1], kernel)
    return weight[:c_out, :, c, c] if depthwise else weight[:c_out, :c_in, c, c]


def sliced_batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d, n: int) -> torch.Tensor:
    """BatchNorm over the first ``n`` channels of ``bn``; running statistics of that slice are updated in place."""
    if n == bn.num_features:
        return bn(x)
    momentum = bn.momentum
    if bn.training and bn.track_running_stats:  # the same bookkeeping as nn.BatchNorm2d.forward
        bn.num_batches_tracked.add_(1)
        if momentum is None:  # cumulative moving average
            momentum = 1.0 / float(bn.num_batches_tracked)
    return F.batch_norm(x, bn.running_mean[:n], bn.running_var[:n], bn.weight[:n], bn.bias[:n],
                        bn.training, momentum if momentum is not None else 0.0, bn.eps)


def sliced_conv_bn_act(x: torch.Tensor, module: nn.Sequential, c_out: int, kernel: int, stride: int = 1,
                       depthwise: bool = False) -> torch.Tensor:
    """A ConvBNAct run as its slice with ``c_out`` outputs and the input's channels (all of them if depthwise)."""
    c_in = x.shape[1]
    w = conv_slice(module[0].weight, c_out, c_in, kernel, depthwise)
    y = sliced_batch_norm(F.conv2d(x, w, None, stride, kernel // 2, groups=c_out if depthwise else 1), module[1], c_out)
    return module[2](y) if len(module) > 2 else y


@torch.no_grad()
def copy_batch_norm(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, n: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).copy_(getattr(src, name)[:n])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


@torch.no_grad()
def copy_conv_bn(dst: nn.Sequential, src: nn.Sequential, depthwise: bool = False) -> None:
    """Copy the slice of the ConvBNAct ``src`` that has ``dst``'s shape into ``dst``."""
    c_out, c_in, kernel, _ = dst[0].weight.shape
    dst[0].weight.copy_(conv_slice(src[0].weight, c_out, c_in, kernel, depthwise))
    copy_batch_norm(dst[1], src[1], c_out)
