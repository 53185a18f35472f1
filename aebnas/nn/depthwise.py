"""Depthwise convolutions that can bypass cuDNN on CUDA, forward and backward.

On an H100 the first epoch of every new candidate took 27-36 s against 2.3-2.9 s
for later ones (docs/results/supernet.md). The suspect is cuDNN >= 9.10 compiling a
depthwise engine at run time for each new layer shape (NVIDIA/cudnn-frontend#1066);
PyTorch's own CUDA depthwise kernel needs no such set-up. Switching cuDNN off for a
whole network is no answer: every other convolution then falls back to a kernel
that loops over the batch. So only depthwise layers are routed, and only inside
``native_depthwise()``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_native = False  # process-wide, like torch.backends.cudnn's own flags


@contextmanager
def cudnn_flags(**flags: bool) -> Iterator[None]:
    """Set ``torch.backends.cudnn`` flags (``enabled``, ``benchmark``) while a block runs, then put them back,
    so one candidate's choice never leaks into the next candidate or the caller."""
    before = {name: getattr(torch.backends.cudnn, name) for name in flags}
    for name, value in flags.items():
        setattr(torch.backends.cudnn, name, value)
    try:
        yield
    finally:
        for name, value in before.items():
            setattr(torch.backends.cudnn, name, value)


@contextmanager
def native_depthwise(enabled: bool = True) -> Iterator[None]:
    """While the block runs, ``DepthwiseConv2d`` layers on CUDA use PyTorch's kernel instead of cuDNN's."""
    global _native
    before, _native = _native, enabled
    try:
        yield
    finally:
        _native = before


class NativeDepthwiseConv(torch.autograd.Function):
    """A bias-free depthwise convolution whose forward and backward both run with cuDNN off.

    A plain ``F.conv2d`` under a cuDNN-off block would not do: autograd runs the
    backward later, outside the block, where cuDNN is on again. Under autocast the
    inputs are cast here, as autocast would cast a convolution's inputs.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: tuple[int, int], padding: tuple[int, int],
                dilation: tuple[int, int], groups: int) -> torch.Tensor:
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
            x, weight = x.to(dtype), weight.to(dtype)
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, dilation, groups)
        with cudnn_flags(enabled=False), torch.autocast(device_type, enabled=False):
            return F.conv2d(x, weight, None, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False]
        with cudnn_flags(enabled=False):
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad.to(x.dtype), x, weight, None, list(stride), list(padding), list(dilation), False, [0, 0],
                groups, mask)
        return grad_x, grad_w, None, None, None, None


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d`` with ``groups == in_channels``; inside ``native_depthwise()`` on CUDA it skips cuDNN.

    Same parameters and state-dict keys as ``nn.Conv2d``, so saved weights, the MAC
    counter and ONNX export see an ordinary convolution.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting():  # exported models: always the ordinary convolution
            return self._conv_forward(x, self.weight, self.bias)
        else:
            return self._eager_forward(x)

    @torch.jit.unused
    def _eager_forward(self, x: torch.Tensor) -> torch.Tensor:
        if _native and x.is_cuda and self.bias is None and self.padding_mode == "zeros" and \
                not isinstance(self.padding, str):
            return self._native_forward(x)
        return self._conv_forward(x, self.weight, self.bias)

    @torch.jit.unused
    def _native_forward(self, x: torch.Tensor) -> torch.Tensor:
        return NativeDepthwiseConv.apply(x, self.weight, self.stride, self.padding, self.dilation, self.groups)


def native_vs_cudnn(layer: DepthwiseConv2d, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Output, input gradient and weight gradient of ``layer`` on ``x`` under bf16 autocast, through cuDNN
    and then through PyTorch's kernel: the check that the route computes the same numbers on a new machine."""
    results = []
    for native in (False, True):
        xg = x.detach().clone().requires_grad_()
        layer.zero_grad(set_to_none=True)
        with native_depthwise(native), torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = layer(xg)
        out.float().square().sum().backward()
        results.append([out.detach().float(), xg.grad.float(), layer.weight.grad.float()])
    return results[0], results[1]
