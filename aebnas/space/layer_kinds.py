"""The table of exit-branch layer kinds: each kind says once what it is called, how it is shown and which
convolutions it runs (so what it costs).

A kind is one object, registered by name. The search space reads its name (the
genome grammar ``<kind><width>k<kernel>``, the ``space.branch.layer_types``
choices), ``aebnas.analysis`` its display name, ``aebnas.cost`` its convolutions
(MACs and latency-table operators). Torch never loads here: the modules that run a
kind, build it fresh or slice it out of the supernet, are its torch half in
``aebnas.nn.layer_modules``, registered under the same name. Adding a kind is a
:class:`LayerKind` here and a ``LayerModules`` there, each registered once; no
other file changes.

Every kind keeps the input resolution (stride 1, "same" padding); the optional
2x2 pooling in front of a layer belongs to the layer, not to its kind.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Convolution(NamedTuple):
    """One convolution of a layer at the layer's resolution: what its MACs and its latency depend on."""

    c_in: int
    c_out: int
    kernel: int
    groups: int = 1


class LayerKind:
    """One kind of exit-branch layer. Subclasses set the names and list the convolutions.

    ``expands``: the kind uses the space's ``branch.ir_expansion`` (it changes
    its operators, so latency tables key it).
    """

    name: str = ""
    display_name: str = ""
    expands: bool = False

    def convolutions(self, c_in: int, width: int, kernel: int, expansion: int) -> list[Convolution]:
        """The layer's convolutions in order; BatchNorm, activations and a residual add cost no MACs."""
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


class Conv(LayerKind):
    """A k x k convolution, BatchNorm, activation."""

    name, display_name = "conv", "conv"

    def convolutions(self, c_in, width, kernel, expansion):
        return [Convolution(c_in, width, kernel)]


class DepthwiseSeparable(LayerKind):
    """A k x k depthwise convolution, then a 1x1 pointwise one, each with BatchNorm and activation."""

    name, display_name = "dwsep", "depthwise-separable conv"

    def convolutions(self, c_in, width, kernel, expansion):
        return [Convolution(c_in, c_in, kernel, groups=c_in), Convolution(c_in, width, 1)]


class InvertedResidual(LayerKind):
    """An MBConv without squeeze-excite: 1x1 expand (by ``branch.ir_expansion``), k x k depthwise, 1x1 project,
    and the residual when the width does not change."""

    name, display_name, expands = "ir", "inverted residual", True

    def convolutions(self, c_in, width, kernel, expansion):
        hidden = c_in * expansion
        expand = [Convolution(c_in, hidden, 1)] if expansion != 1 else []
        return expand + [Convolution(hidden, hidden, kernel, groups=hidden), Convolution(hidden, width, 1)]


for _kind in (Conv(), DepthwiseSeparable(), InvertedResidual()):
    register_layer_kind(_kind)

__all__ = ["Conv", "Convolution", "DepthwiseSeparable", "InvertedResidual", "LayerKind", "layer_kind",
           "layer_kind_names", "register_layer_kind", "unregister_layer_kind"]
