"""A network as the list of operators it runs, each named by a signature.

MACs and latency are both sums over the same operators, so the network is
decomposed once, here: ``network_ops`` says which operator runs in which
segment and exit head of a genome, ``space_ops`` lists every operator any genome
of a space can run (what a latency profiler must measure). A signature names
everything that changes an operator's compute: kind, input resolution,
channels, kernel, expansion, stride, pooling, activation. Two genomes that run
the same signature run the same module shape, so one measurement serves both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from aebnas.cost.macs import NetworkCost, branch_layer_macs, conv_macs, conv_out, mbconv_macs, pool_out
from aebnas.space import BranchLayer, Genome, SpaceSettings
from aebnas.space.genome import parse_layers

OP_KINDS = ("stem", "mbconv", "exit_layer", "classifier", "final_conv")


@dataclass(frozen=True)
class Op:
    """One operator at one input shape. ``resolution`` is the input's height (= width)."""

    kind: str
    resolution: int
    c_in: int
    c_out: int
    kernel: int = 1
    stride: int = 1
    expansion: int = 1
    layer_type: str = ""     # exit layers: conv | dwsep | ir
    pool: str = "none"       # exit layers: 2x2 pooling applied before the layer
    activation: str = ""
    squeeze_excite: bool = False

    @property
    def signature(self) -> str:
        """Stable text key of the operator, used by latency tables."""
        parts = [self.kind if self.kind != "exit_layer" else f"exit_{self.layer_type}",
                 f"r{self.resolution}", f"c{self.c_in}-{self.c_out}"]
        if self.kind in ("stem", "mbconv", "exit_layer"):
            parts.append(f"k{self.kernel}")
        if self.kind == "mbconv" or (self.kind == "exit_layer" and self.layer_type == "ir"):
            parts.append(f"e{self.expansion}")
        if self.kind in ("stem", "mbconv"):
            parts.append(f"s{self.stride}")
        if self.kind == "exit_layer":
            parts.append(f"p{self.pool}")
        if self.squeeze_excite:
            parts.append("se")
        if self.activation:
            parts.append(self.activation)
        return "_".join(parts)

    @property
    def macs(self) -> int:
        if self.kind == "stem":
            return conv_macs(conv_out(self.resolution, self.kernel, self.stride), self.c_in, self.c_out, self.kernel)
        if self.kind == "mbconv":
            return mbconv_macs(self.resolution, self.c_in, self.c_out, self.kernel, self.expansion, self.stride,
                               self.squeeze_excite)[0]
        if self.kind == "exit_layer":
            layer = BranchLayer(self.layer_type, self.c_out, self.kernel, self.pool)
            return branch_layer_macs(layer, self.resolution, self.c_in, self.expansion)[0]
        if self.kind == "final_conv":
            return conv_macs(self.resolution, self.c_in, self.c_out, 1)
        return self.c_in * self.c_out  # classifier: global pooling, then a linear layer

    @property
    def out_resolution(self) -> int:
        if self.kind in ("stem", "mbconv"):
            return conv_out(self.resolution, self.kernel, self.stride)
        if self.kind == "exit_layer" and self.pool != "none":
            return pool_out(self.resolution)
        return 1 if self.kind == "classifier" else self.resolution


@dataclass(frozen=True)
class NetworkOps:
    """``segments[i]`` and ``heads[i]`` as operator lists, in ``EarlyExitNet`` order (final head last)."""

    segments: tuple[tuple[Op, ...], ...]
    heads: tuple[tuple[Op, ...], ...]

    def __iter__(self) -> Iterator[Op]:
        for part in (*self.segments, *self.heads):
            yield from part

    def part_costs(self, op_cost: Callable[[Op], float]) -> tuple[list[float], list[float]]:
        """Per-segment and per-head sums of ``op_cost`` (MACs, a measured latency, ...)."""
        return ([sum(op_cost(o) for o in seg) for seg in self.segments],
                [sum(op_cost(o) for o in head) for head in self.heads])


def network_ops(genome: Genome, num_classes: int, in_channels: int, resolution: int) -> NetworkOps:
    """The operators ``aebnas.nn.build_model(genome, ...)`` runs, segment by segment and head by head."""
    space = genome.space
    exit_after = {e.stage: e for e in genome.active_exits}
    stem = _stem(space, in_channels, resolution)
    size, c = stem.out_resolution, space.stem_channels
    segments, heads, current = [], [], [stem]
    for s, blocks in enumerate(genome.stages):
        for b, block in enumerate(blocks):
            op = _mbconv(space, s, b, size, c, block.kernel, block.expansion)
            current.append(op)
            size, c = op.out_resolution, space.stages[s].width
        if s + 1 in exit_after:
            segments.append(tuple(current))
            heads.append(_exit_head(space, exit_after[s + 1].layers, size, c, num_classes))
            current = []
    segments.append(tuple(current))
    heads.append(_final_head(space, size, c, num_classes))
    return NetworkOps(tuple(segments), tuple(heads))


def space_ops(space: SpaceSettings, num_classes: int, in_channels: int, resolution: int) -> dict[str, Op]:
    """Every operator some genome of ``space`` runs at this input shape, by signature (sorted)."""
    found: dict[str, Op] = {}

    def add(op: Op) -> None:
        found.setdefault(op.signature, op)

    stem = _stem(space, in_channels, resolution)
    add(stem)
    size, c = stem.out_resolution, space.stem_channels
    for s, spec in enumerate(space.stages):
        first = None
        for b in range(space.max_depth):
            for k in space.kernels:
                for e in space.expansions:
                    op = _mbconv(space, s, b, size if b == 0 else first.out_resolution, c, k, e)
                    add(op)
                    first = first or op
        size, c = first.out_resolution, spec.width
        if s + 1 in space.exit_stages:
            fixed = space.fixed_head(s + 1)
            if fixed is None:
                _add_exit_heads(space, size, c, num_classes, 0, add)
            else:  # a method with fixed exit heads (EDANAS, NACHOS, manual): only that head exists here
                for op in _exit_head(space, parse_layers(fixed, s + 1), size, c, num_classes):
                    add(op)
    for op in _final_head(space, size, c, num_classes):
        add(op)
    return dict(sorted(found.items()))


def _add_exit_heads(space: SpaceSettings, size: int, c: int, num_classes: int, depth: int,
                    add: Callable[[Op], None]) -> None:
    """Walk every branch-layer sequence from (size, c); one of an allowed depth ends in the classifier."""
    if depth in space.branch.depths:
        add(Op("classifier", size, c, num_classes))
    if depth == space.max_branch_depth:
        return
    reached: set[tuple[int, int]] = set()
    for t in space.branch.layer_types:
        for w in space.branch.widths:
            for k in space.branch.kernels:
                for p in space.branch.pools:
                    op = _exit_layer(space, BranchLayer(t, w, k, p), size, c)
                    add(op)
                    reached.add((op.out_resolution, w))
    for nxt_size, nxt_c in sorted(reached):
        _add_exit_heads(space, nxt_size, nxt_c, num_classes, depth + 1, add)


def _stem(space: SpaceSettings, in_channels: int, resolution: int) -> Op:
    return Op("stem", resolution, in_channels, space.stem_channels, 3, space.stem_stride, activation=space.activation)


def _mbconv(space: SpaceSettings, stage: int, block: int, size: int, c_prev: int, kernel: int, expansion: int) -> Op:
    spec = space.stages[stage]
    return Op("mbconv", size, c_prev if block == 0 else spec.width, spec.width, kernel,
              spec.stride if block == 0 else 1, expansion, activation=space.activation,
              squeeze_excite=space.squeeze_excite)


def _exit_layer(space: SpaceSettings, layer: BranchLayer, size: int, c_in: int) -> Op:
    expansion = space.branch.ir_expansion if layer.type == "ir" else 1
    return Op("exit_layer", size, c_in, layer.width, layer.kernel, 1, expansion, layer.type, layer.pool,
              space.activation)


def _exit_head(space: SpaceSettings, layers: tuple[BranchLayer, ...], size: int, c: int, num_classes: int) -> tuple[Op, ...]:
    ops = []
    for layer in layers:
        op = _exit_layer(space, layer, size, c)
        ops.append(op)
        size, c = op.out_resolution, layer.width
    return (*ops, Op("classifier", size, c, num_classes))


def _final_head(space: SpaceSettings, size: int, c: int, num_classes: int) -> tuple[Op, ...]:
    ops = []
    if space.final_head_channels:
        ops.append(Op("final_conv", size, c, space.final_head_channels, activation=space.activation))
        c = space.final_head_channels
    return (*ops, Op("classifier", size, c, num_classes))


def network_cost(genome: Genome, num_classes: int, in_channels: int, resolution: int) -> NetworkCost:
    """Analytic MACs of a genome's network, per segment and per head."""
    segments, heads = network_ops(genome, num_classes, in_channels, resolution).part_costs(lambda op: op.macs)
    return NetworkCost(tuple(segments), tuple(heads))
