"""Analytic multiply-accumulate counts of the layers ``aebnas.nn`` builds (``ops`` sums them per network).

Counted: convolutions and linear layers (what torch's FlopCounterMode counts,
FLOPs = 2 * MACs). Not counted: BatchNorm, activations, pooling, residual adds,
biases. A test holds this module and FlopCounterMode together on random genomes,
so a change to the modules that is not mirrored here fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass

from aebnas.cost.expected import path_costs
from aebnas.nn.blocks import se_channels
from aebnas.space import BranchLayer
from aebnas.space.layer_kinds import layer_kind


def conv_out(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def pool_out(size: int) -> int:
    """2x2 pooling, stride 2, ceil mode (as the exit branches use)."""
    return -(-(size - 2) // 2) + 1 if size > 1 else 1


def conv_macs(size_out: int, c_in: int, c_out: int, kernel: int, groups: int = 1) -> int:
    return size_out * size_out * c_out * (c_in // groups) * kernel * kernel


def mbconv_macs(size: int, c_in: int, c_out: int, kernel: int, expansion: int, stride: int,
                squeeze_excite: bool) -> tuple[int, int]:
    """MACs of one inverted residual and its output resolution."""
    hidden = c_in * expansion
    macs = conv_macs(size, c_in, hidden, 1) if expansion != 1 else 0
    out = conv_out(size, kernel, stride)
    macs += conv_macs(out, hidden, hidden, kernel, groups=hidden)
    if squeeze_excite:
        mid = se_channels(hidden)
        macs += 2 * hidden * mid
    macs += conv_macs(out, hidden, c_out, 1)
    return macs, out


def branch_layer_macs(layer: BranchLayer, size: int, c_in: int, ir_expansion: int) -> tuple[int, int]:
    """MACs of one exit-branch layer (after its optional pooling) and its output resolution (every layer kind
    keeps the resolution it gets)."""
    if layer.pool != "none":  # pooling comes first in an exit layer
        size = pool_out(size)
    convs = layer_kind(layer.type).convolutions(c_in, layer.width, layer.kernel, ir_expansion)
    return sum(conv_macs(size, c.c_in, c.c_out, c.kernel, groups=c.groups) for c in convs), size


@dataclass(frozen=True)
class NetworkCost:
    """MACs of one early-exit network, split the way adaptive inference spends them.

    ``segment_macs[i]`` is the backbone between exit i-1 and exit i (the stem is
    in segment 0); ``head_macs[i]`` is the head of exit i, the final classifier last.
    """

    segment_macs: tuple[int, ...]
    head_macs: tuple[int, ...]

    @property
    def path_macs(self) -> tuple[int, ...]:
        """Cost of a sample that leaves at exit k: backbone to k plus every head evaluated on the way."""
        return path_costs(self.segment_macs, self.head_macs)

    @property
    def static_macs(self) -> int:
        """The same backbone run to full depth with the final classifier only (no exit heads)."""
        return sum(self.segment_macs) + self.head_macs[-1]

    @property
    def total_macs(self) -> int:
        """Everything in one pass: all segments and all heads (what joint training runs)."""
        return self.path_macs[-1]
