"""The cuDNN-free depthwise path computes what nn.Conv2d computes, forward and backward, and stays scriptable."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import aebnas.nn.depthwise as depthwise
from aebnas.nn.blocks import ConvBNAct
from aebnas.nn.depthwise import DepthwiseConv2d, NativeDepthwiseConv, native_depthwise, native_vs_cudnn


@pytest.mark.parametrize("kernel, stride", [(3, 1), (5, 2)])
def test_native_depthwise_matches_conv2d_forward_and_backward(kernel, stride):
    torch.manual_seed(0)
    x = torch.randn(3, 6, 9, 9, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 1, kernel, kernel, dtype=torch.float64, requires_grad=True)
    conv = (stride, stride), (kernel // 2, kernel // 2), (1, 1), 6
    out = NativeDepthwiseConv.apply(x, w, *conv)
    ref = F.conv2d(x, w, None, stride, kernel // 2, 1, 6)
    assert out.shape == ref.shape == (3, 6, 9 // stride + (9 % stride > 0), 9 // stride + (9 % stride > 0))
    torch.testing.assert_close(out, ref)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(out, (x, w), g)
    ref_grads = torch.autograd.grad(ref, (x, w), g)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda a, b: NativeDepthwiseConv.apply(a, b, *conv), (x, w))


def test_native_depthwise_under_autocast_casts_like_a_convolution():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    w = torch.randn(4, 1, 3, 3, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = NativeDepthwiseConv.apply(x, w, (1, 1), (1, 1), (1, 1), 4)
        ref = F.conv2d(x, w, None, 1, 1, 1, 4)
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref)
    out.float().sum().backward()
    assert x.grad.dtype == torch.float32 and w.grad.dtype == torch.float32  # the leaves' own dtype
    assert torch.isfinite(w.grad).all() and w.grad.abs().sum() > 0


def test_convbnact_uses_the_routable_layer_for_depthwise_only():
    assert type(ConvBNAct(8, 8, 3, groups=8)[0]) is DepthwiseConv2d
    assert type(ConvBNAct(8, 16, 1)[0]) is nn.Conv2d
    assert type(ConvBNAct(8, 16, 3, groups=2)[0]) is nn.Conv2d  # grouped, not depthwise
    plain = nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False)
    routable = DepthwiseConv2d(8, 8, 3, 1, 1, groups=8, bias=False)
    assert plain.state_dict().keys() == routable.state_dict().keys()  # saved weights load either way


def test_depthwise_layer_scripts_and_its_native_forward_matches():
    torch.manual_seed(0)
    layer = DepthwiseConv2d(4, 4, 5, 2, 2, groups=4, bias=False).eval()
    x = torch.randn(2, 4, 10, 10)
    scripted = torch.jit.script(layer)
    torch.testing.assert_close(scripted(x), layer(x))
    torch.testing.assert_close(layer._native_forward(x), layer(x))


def test_native_depthwise_runs_in_inference_mode():  # the val pass and the adaptive runtime use it
    x, w = torch.randn(2, 4, 8, 8), torch.randn(4, 1, 3, 3, requires_grad=True)
    with torch.inference_mode():
        out = NativeDepthwiseConv.apply(x, w, (1, 1), (1, 1), (1, 1), 4)
    torch.testing.assert_close(out, F.conv2d(x, w.detach(), None, 1, 1, 1, 4))
    assert not out.requires_grad


def test_native_depthwise_switch_is_restored_after_an_error():
    before = depthwise._native
    with pytest.raises(ValueError):
        with native_depthwise(True):
            assert depthwise._native is True
            raise ValueError("candidate failed")
    assert depthwise._native is before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the routing to PyTorch's kernel happens on CUDA only")
def test_native_depthwise_matches_cudnn_on_cuda():
    torch.manual_seed(0)
    layer = DepthwiseConv2d(32, 32, 5, 2, 2, groups=32, bias=False).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(8, 32, 16, 16, device="cuda").contiguous(memory_format=torch.channels_last)
    for ref, got in zip(*native_vs_cudnn(layer, x)):
        torch.testing.assert_close(got, ref, rtol=2e-2, atol=2e-2)
