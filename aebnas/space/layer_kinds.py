"""The table of exit-branch layer kinds: each kind says once what it is called, how it is built, what it costs
and how a candidate's layer is sliced out of the supernet's largest one.

A kind is one object, registered by name. The search space reads its name (the
genome grammar ``<kind><width>k<kernel>``, the ``space.branch.layer_types``
choices), ``aebnas.analysis`` its display name, ``aebnas.cost`` its MACs and
``aebnas.nn`` its modules and elastic slicing. The declaration stays importable
without torch (the space and the analysis must not load it): the parts that
make modules import ``aebnas.nn`` inside their bodies, and only ``aebnas.nn``
calls them, so torch is already loaded when they run. Adding a kind is
subclassing :class:`LayerKind` and calling :func:`register_layer_kind`; no other
file changes.

Every kind keeps the input resolution (stride 1, "same" padding); the optional
2x2 pooling in front of a layer belongs to the layer, not to its kind.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover - annotations only
    from torch import Tensor, nn


class LayerKind:
    """One kind of exit-branch layer. Subclasses set the names and fill in the four parts.

    ``expands``: the kind uses the space's ``branch.ir_expansion`` (it changes
    its operators, so latency tables key it). ``n_modules``: how many modules
    :meth:`build` appends to an exit head (weight copying walks them).
    """

    name: str = ""
    display_name: str = ""
    expands: bool = False
    n_modules: int = 1

    def macs(self, size: int, c_in: int, width: int, kernel: int, expansion: int) -> int:
        """Multiply-accumulates of the layer at input ``size`` x ``size`` (what FlopCounterMode counts / 2)."""
        raise NotImplementedError

    def build(self, c_in: int, width: int, kernel: int, activation: str, expansion: int) -> list["nn.Module"]:
        """The candidate's modules of this layer, fresh weights."""
        raise NotImplementedError

    def build_elastic(self, c_in: int, width: int, kernel: int, activation: str, expansion: int) -> "nn.Module":
        """The supernet's largest layer of this kind (``width`` and ``kernel`` are the largest choices)."""
        raise NotImplementedError

    def forward_slice(self, module: "nn.Module", x: "Tensor", width: int, kernel: int, expansion: int) -> "Tensor":
        """Run the slice of ``module`` (from :meth:`build_elastic`) with ``width`` outputs and a ``kernel`` centre."""
        raise NotImplementedError

    def copy_slice(self, module: "nn.Module", dst: Sequence["nn.Module"], expansion: int) -> None:
        """Copy the slice of ``module`` into ``dst``, the candidate's modules from :meth:`build` (its shapes say
        which slice)."""
        raise NotImplementedError


_KINDS: dict[str, LayerKind] = {}
_NAME = re.compile(r"^[a-z]+$")


def register_layer_kind(kind: LayerKind) -> LayerKind:
    """Add a kind to the table (returned, so it can decorate an instance's assignment)."""
    if not _NAME.match(kind.name):
        raise ValueError(f"layer kind name {kind.name!r}: use lowercase letters only (the genome text reads "
                         "<kind><width>k<kernel>)")
    if kind.name in _KINDS:
        raise ValueError(f"layer kind {kind.name!r} is already registered; pick another name")
    if not kind.display_name:
        raise ValueError(f"layer kind {kind.name!r}: set display_name (tables and plots show it)")
    _KINDS[kind.name] = kind
    return kind


def unregister_layer_kind(name: str) -> None:
    """Remove a kind (tests that register a toy kind take it out again)."""
    _KINDS.pop(name, None)


def layer_kind(name: str) -> LayerKind:
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(f"exit layer type '{name}' is unknown; known: {list(_KINDS)}") from None


def layer_kind_names() -> tuple[str, ...]:
    """Registered kinds in registration order (the order supernet modules are created in)."""
    return tuple(_KINDS)


def _nn() -> Any:
    """The torch-side helpers, loaded when a kind first builds or slices modules."""
    from aebnas.nn import blocks, slicing

    return blocks, slicing


def _cost() -> Any:
    from aebnas.cost import macs

    return macs


class Conv(LayerKind):
    """A k x k convolution, BatchNorm, activation."""

    name, display_name = "conv", "conv"

    def macs(self, size, c_in, width, kernel, expansion):
        return _cost().conv_macs(size, c_in, width, kernel)

    def build(self, c_in, width, kernel, activation, expansion):
        blocks, _ = _nn()
        return [blocks.ConvBNAct(c_in, width, kernel, activation=activation)]

    def build_elastic(self, c_in, width, kernel, activation, expansion):
        return self.build(c_in, width, kernel, activation, expansion)[0]  # the largest layer is the layer itself

    def forward_slice(self, module, x, width, kernel, expansion):
        _, slicing = _nn()
        return slicing.sliced_conv_bn_act(x, module, width, kernel)

    def copy_slice(self, module, dst, expansion):
        _, slicing = _nn()
        (conv,) = dst
        slicing.copy_conv_bn(conv, module)


class DepthwiseSeparable(LayerKind):
    """A k x k depthwise convolution, then a 1x1 pointwise one, each with BatchNorm and activation."""

    name, display_name, n_modules = "dwsep", "depthwise-separable conv", 2

    def macs(self, size, c_in, width, kernel, expansion):
        m = _cost()
        return m.conv_macs(size, c_in, c_in, kernel, groups=c_in) + m.conv_macs(size, c_in, width, 1)

    def build(self, c_in, width, kernel, activation, expansion):
        blocks, _ = _nn()
        return [blocks.ConvBNAct(c_in, c_in, kernel, groups=c_in, activation=activation),
                blocks.ConvBNAct(c_in, width, 1, activation=activation)]

    def build_elastic(self, c_in, width, kernel, activation, expansion):
        from torch import nn

        return nn.Sequential(*self.build(c_in, width, kernel, activation, expansion))

    def forward_slice(self, module, x, width, kernel, expansion):
        _, slicing = _nn()
        y = slicing.sliced_conv_bn_act(x, module[0], x.shape[1], kernel, depthwise=True)
        return slicing.sliced_conv_bn_act(y, module[1], width, 1)

    def copy_slice(self, module, dst, expansion):
        _, slicing = _nn()
        dw, pw = dst
        slicing.copy_conv_bn(dw, module[0], depthwise=True)
        slicing.copy_conv_bn(pw, module[1])


class InvertedResidual(LayerKind):
    """An MBConv without squeeze-excite: 1x1 expand (by ``branch.ir_expansion``), k x k depthwise, 1x1 project,
    and the residual when the width does not change."""

    name, display_name, expands = "ir", "inverted residual", True

    def macs(self, size, c_in, width, kernel, expansion):
        return _cost().mbconv_macs(size, c_in, width, kernel, expansion, 1, False)[0]

    def build(self, c_in, width, kernel, activation, expansion):
        blocks, _ = _nn()
        return [blocks.MBConv(c_in, width, kernel, expansion, 1, squeeze_excite=False, activation=activation)]

    def build_elastic(self, c_in, width, kernel, activation, expansion):
        return self.build(c_in, width, kernel, activation, expansion)[0]

    def forward_slice(self, module, x, width, kernel, expansion):
        _, slicing = _nn()
        body = list(module.body)
        hidden = x.shape[1] * expansion
        y = slicing.sliced_conv_bn_act(x, body.pop(0), hidden, 1) if expansion != 1 else x
        y = slicing.sliced_conv_bn_act(y, body.pop(0), hidden, kernel, depthwise=True)
        project = body.pop(0)  # 1x1, no activation: the slice of its input columns is the hidden width
        y = slicing.sliced_conv_bn_act(y, project, width, 1)
        return x + y if x.shape[1] == width else y  # the residual of an MBConv with stride 1

    def copy_slice(self, module, dst, expansion):
        _, slicing = _nn()
        (block,) = dst
        dst_body, src_body = list(block.body), list(module.body)
        if expansion != 1:
            slicing.copy_conv_bn(dst_body.pop(0), src_body.pop(0))
        slicing.copy_conv_bn(dst_body.pop(0), src_body.pop(0), depthwise=True)
        slicing.copy_conv_bn(dst_body.pop(0), src_body.pop(0))


for _kind in (Conv(), DepthwiseSeparable(), InvertedResidual()):
    register_layer_kind(_kind)

__all__ = ["Conv", "DepthwiseSeparable", "InvertedResidual", "LayerKind", "layer_kind", "layer_kind_names",
           "register_layer_kind", "unregister_layer_kind"]
