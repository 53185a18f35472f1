"""Analytic multiply-accumulate counts, mirroring ``aebnas.nn`` layer by layer.

Counted: convolutions and linear layers (what torch's FlopCounterMode counts,
FLOPs = 2 * MACs). Not counted: BatchNorm, activations, pooling, residual adds,
biases. A test holds this module and FlopCounterMode together on random genomes,
so a change to the modules that is not mirrored here fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass

from aebnas.nn.blocks import se_channels
from aebnas.space import BranchLayer, Genome, SpaceConfig


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


def branch_layer_macs(layer: BranchLayer, size: int, c_in: int, space: SpaceConfig) -> tuple[int, int]:
    if layer.pool != "none":  # pooling comes first in an exit layer
        size = pool_out(size)
    if layer.type == "conv":
        macs = conv_macs(size, c_in, layer.width, layer.kernel)
    elif layer.type == "dwsep":
        macs = conv_macs(size, c_in, c_in, layer.kernel, groups=c_in) + conv_macs(size, c_in, layer.width, 1)
    elif layer.type == "ir":
        macs, size = mbconv_macs(size, c_in, layer.width, layer.kernel, space.branch.ir_expansion, 1, False)
    else:
        raise ValueError(f"exit layer type '{layer.type}' is unknown")
    return macs, size


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
        paths, acc = [], 0
        for seg, head in zip(self.segment_macs, self.head_macs):
            acc += seg + head
            paths.append(acc)
        return tuple(paths)

    @property
    def static_macs(self) -> int:
        """The same backbone run to full depth with the final classifier only (no exit heads)."""
        return sum(self.segment_macs) + self.head_macs[-1]

    @property
    def total_macs(self) -> int:
        """Everything in one pass: all segments and all heads (what joint training runs)."""
        return self.path_macs[-1]


def network_cost(genome: Genome, num_classes: int, in_channels: int, resolution: int) -> NetworkCost:
    space = genome.space
    exit_after = {e.stage: e for e in genome.active_exits}
    size = conv_out(resolution, 3, space.stem_stride)
    seg = conv_macs(size, in_channels, space.stem_channels, 3)
    c = space.stem_channels
    segments, heads = [], []
    for s, blocks in enumerate(genome.stages):
        spec = space.stages[s]
        for b, block in enumerate(blocks):
            macs, size = mbconv_macs(size, c if b == 0 else spec.width, spec.width, block.kernel, block.expansion,
                                     spec.stride if b == 0 else 1, space.squeeze_excite)
            seg += macs
        c = spec.width
        if s + 1 in exit_after:
            segments.append(seg)
            heads.append(_exit_head_macs(exit_after[s + 1].layers, size, c, num_classes, space))
            seg = 0
    segments.append(seg)
    final = 0
    if space.final_head_channels:
        final += conv_macs(size, c, space.final_head_channels, 1)
        c = space.final_head_channels
    heads.append(final + c * num_classes)
    return NetworkCost(tuple(segments), tuple(heads))


def _exit_head_macs(layers, size: int, c: int, num_classes: int, space: SpaceConfig) -> int:
    total = 0
    for layer in layers:
        macs, size = branch_layer_macs(layer, size, c, space)
        total += macs
        c = layer.width
    return total + c * num_classes
