"""Genome -> EarlyExitNet: ordered backbone segments, an exit head after each but the last.

The backbone is cut right after every stage that carries an active exit, so the
network can be run segment by segment (an adaptive runtime can stop after any
segment) or in one pass that returns the logits of every exit (joint training,
evaluation).
"""

from __future__ import annotations

import torch
from torch import nn

from aebnas.nn.blocks import Classifier, ConvBNAct, MBConv
from aebnas.nn.layer_modules import layer_modules
from aebnas.space import BranchLayer, Genome, SpaceSettings


def build_stage(space: SpaceSettings, stage_index: int, blocks, c_in: int) -> nn.Sequential:
    spec = space.stages[stage_index]
    layers = []
    for b, block in enumerate(blocks):
        layers.append(MBConv(c_in if b == 0 else spec.width, spec.width, block.kernel, block.expansion,
                             stride=spec.stride if b == 0 else 1,
                             squeeze_excite=space.squeeze_excite, activation=space.activation))
    return nn.Sequential(*layers)


def build_branch_layer(layer: BranchLayer, c_in: int, activation: str, ir_expansion: int) -> list[nn.Module]:
    """Optional 2x2 pooling first (it shrinks what the layer pays for), then the layer."""
    mods: list[nn.Module] = []
    if layer.pool == "max":
        mods.append(nn.MaxPool2d(2, ceil_mode=True))
    elif layer.pool == "avg":
        mods.append(nn.AvgPool2d(2, ceil_mode=True))
    return mods + layer_modules(layer.type).build(c_in, layer.width, layer.kernel, activation, ir_expansion)


def build_exit_head(layers: tuple[BranchLayer, ...], c_in: int, num_classes: int, space: SpaceSettings) -> nn.Sequential:
    mods: list[nn.Module] = []
    c = c_in
    for layer in layers:
        mods += build_branch_layer(layer, c, space.activation, space.branch.ir_expansion)
        c = layer.width
    mods.append(Classifier(c, num_classes))
    return nn.Sequential(*mods)


def build_final_head(space: SpaceSettings, c_in: int, num_classes: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    c = c_in
    if space.final_head_channels:
        mods.append(ConvBNAct(c_in, space.final_head_channels, 1, activation=space.activation))
        c = space.final_head_channels
    mods.append(Classifier(c, num_classes))
    return nn.Sequential(*mods)


class EarlyExitNet(nn.Module):
    """``segments[i]`` feeds ``heads[i]``; the last head is the final classifier."""

    def __init__(self, genome: Genome, num_classes: int, in_channels: int):
        super().__init__()
        space = genome.space
        self.genome = genome
        self.num_classes = num_classes
        self.in_channels = in_channels
        exit_after = {e.stage: e for e in genome.active_exits}
        segments: list[nn.Module] = []
        heads: list[nn.Module] = []
        current: list[nn.Module] = [ConvBNAct(in_channels, space.stem_channels, 3, space.stem_stride,
                                              activation=space.activation)]
        c = space.stem_channels
        for s, blocks in enumerate(genome.stages):
            current.append(build_stage(space, s, blocks, c))
            c = space.stages[s].width
            if s + 1 in exit_after:
                segments.append(nn.Sequential(*current))
                heads.append(build_exit_head(exit_after[s + 1].layers, c, num_classes, space))
                current = []
        segments.append(nn.Sequential(*current))
        heads.append(build_final_head(space, c, num_classes))
        self.segments = nn.ModuleList(segments)
        self.heads = nn.ModuleList(heads)

    @property
    def n_exits(self) -> int:
        """Number of exits including the final classifier."""
        return len(self.heads)

    @property
    def thresholds(self) -> tuple[float, ...]:
        return self.genome.thresholds

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every exit, early ones first, final classifier last."""
        outputs = []
        for segment, head in zip(self.segments, self.heads):
            x = segment(x)
            outputs.append(head(x))
        return outputs

    def forward_static(self, x: torch.Tensor) -> torch.Tensor:
        """The full-depth network alone: backbone and final classifier, no exit heads."""
        for segment in self.segments:
            x = segment(x)
        return self.heads[-1](x)


def build_model(genome: Genome, num_classes: int, in_channels: int) -> EarlyExitNet:
    """Build the early-exit network a genome describes (fresh weights)."""
    if num_classes < 2:
        raise ValueError(f"num_classes: need at least 2 classes, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels: need at least 1 channel, got {in_channels}")
    return EarlyExitNet(genome, num_classes, in_channels)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
