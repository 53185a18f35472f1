"""The torch half of each exit-branch layer kind: how a candidate's layer is built, and how it is sliced out of
(and copied from) the supernet's largest layer of that kind.

A kind's name, display name and convolutions are declared torch-free in
``aebnas.space.layer_kinds``; here the same name maps to a :class:`LayerModules`.
Building a network or a supernet asks this table; a kind declared but given no
modules fails there with one line saying what to register.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from aebnas.nn.blocks import ConvBNAct, MBConv
from aebnas.nn.slicing import copy_conv_bn, sliced_conv_bn_act
from aebnas.space.layer_kinds import layer_kind


class LayerModules:
    """Modules of one layer kind (``kind``: its registered name). ``n_modules``: how many modules :meth:`build`
    appends to an exit head (weight copying walks them)."""

    kind: str = ""
    n_modules: int = 1

    def build(self, c_in: int, width: int, kernel: int, activation: str, expansion: int) -> list[nn.Module]:
        """The candidate's modules of this layer, fresh weights."""
        raise NotImplementedError

    def build_elastic(self, c_in: int, width: int, kernel: int, activation: str, expansion: int) -> nn.Module:
        """The supernet's largest layer of this kind (``width`` and ``kernel`` are the largest choices)."""
        raise NotImplementedError

    def forward_slice(self, module: nn.Module, x: Tensor, width: int, kernel: int, expansion: int) -> Tensor:
        """Run the slice of ``module`` (from :meth:`build_elastic`) with ``width`` outputs and a ``kernel`` centre."""
        raise NotImplementedError

    def copy_slice(self, module: nn.Module, dst: Sequence[nn.Module], expansion: int) -> None:
        """Copy the slice of ``module`` into ``dst``, the candidate's modules from :meth:`build` (its shapes say
        which slice)."""
        raise NotImplementedError


_MODULES: dict[str, LayerModules] = {}


def register_layer_modules(modules: LayerModules) -> LayerModules:
    """Add a kind's modules; the kind must already be declared (``aebnas.space.layer_kinds.register_layer_kind``)."""
    layer_kind(modules.kind)  # an undeclared name fails here, naming the known kinds
    if modules.kind in _MODULES:
        raise ValueError(f"layer kind {modules.kind!r} already has modules registered")
    _MODULES[modules.kind] = modules
    return modules


def unregister_layer_modules(name: str) -> None:
    """Remove a kind's modules (tests that register a toy kind take it out again)."""
    _MODULES.pop(name, None)


def layer_modules(name: str) -> LayerModules:
    try:
        return _MODULES[name]
    except KeyError:
        layer_kind(name)  # unknown altogether: that error names the known kinds
        raise ValueError(f"exit layer type '{name}' is declared but has no modules; register a LayerModules for it "
                         "with aebnas.nn.layer_modules.register_layer_modules") from None


class ConvModules(LayerModules):
    kind = "conv"

    def build(self, c_in, width, kernel, activation, expansion):
        return [ConvBNAct(c_in, width, kernel, activation=activation)]

    def build_elastic(self, c_in, width, kernel, activation, expansion):
        return self.build(c_in, width, kernel, activation, expansion)[0]  # the largest layer is the layer itself

    def forward_slice(self, module, x, width, kernel, expansion):
        return sliced_conv_bn_act(x, module, width, kernel)

    def copy_slice(self, module, dst, expansion):
        (conv,) = dst
        copy_conv_bn(conv, module)


class DepthwiseSeparableModules(LayerModules):
    kind, n_modules = "dwsep", 2

    def build(self, c_in, width, kernel, activation, expansion):
        return [ConvBNAct(c_in, c_in, kernel, groups=c_in, activation=activation),
                ConvBNAct(c_in, width, 1, activation=activation)]

    def build_elastic(self, c_in, width, kernel, activation, expansion):
        return nn.Sequential(*self.build(c_in, width, kernel, activation, expansion))

    def forward_slice(self, module, x, width, kernel, expansion):
        y = sliced_conv_bn_act(x, module[0], x.shape[1], kernel, depthwise=True)
        return sliced_conv_bn_act(y, module[1], width, 1)

    def copy_slice(self, module, dst, expansion):
        dw, pw = dst
        copy_conv_bn(dw, module[0], depthwise=True)
        copy_conv_bn(pw, module[1])


class InvertedResidualModules(LayerModules):
    kind = "ir"

    def build(self, c_in, width, kernel, activation, expansion):
        return [MBConv(c_in, width, kernel, expansion, 1, squeeze_excite=False, activation=activation)]

    def build_elastic(self, c_in, width, kernel, activation, expansion):
        return self.build(c_in, width, kernel, activation, expansion)[0]

    def forward_slice(self, module, x, width, kernel, expansion):
        body = list(module.body)
        hidden = x.shape[1] * expansion
        y = sliced_conv_bn_act(x, body.pop(0), hidden, 1) if expansion != 1 else x
        y = sliced_conv_bn_act(y, body.pop(0), hidden, kernel, depthwise=True)
        project = body.pop(0)  # 1x1, no activation: the slice of its input columns is the hidden width
        y = sliced_conv_bn_act(y, project, width, 1)
        return x + y if x.shape[1] == width else y  # the residual of an MBConv with stride 1

    def copy_slice(self, module, dst, expansion):
        (block,) = dst
        dst_body, src_body = list(block.body), list(module.body)
        if expansion != 1:
            copy_conv_bn(dst_body.pop(0), src_body.pop(0))
        copy_conv_bn(dst_body.pop(0), src_body.pop(0), depthwise=True)
        copy_conv_bn(dst_body.pop(0), src_body.pop(0))


for _modules in (ConvModules(), DepthwiseSeparableModules(), InvertedResidualModules()):
    register_layer_modules(_modules)

__all__ = ["LayerModules", "layer_modules", "register_layer_modules", "unregister_layer_modules"]
