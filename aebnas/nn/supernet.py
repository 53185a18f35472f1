"""The elastic backbone (once-for-all style supernet) and weight inheritance by candidates.

One network holds the largest block at every position of the space: the deepest
stages, the largest kernel and the largest expansion. A candidate backbone is a
slice of it, so every candidate starts from weights that already work:

* depth: a stage runs its first ``d`` blocks;
* kernel: a smaller depthwise kernel is the centre of the largest one;
* expansion: the first ``c_in * e`` hidden channels (expand conv rows, depthwise
  filters, SE and project-conv columns, and the matching BatchNorm entries).

Stage widths, stem and final head are fixed in our spaces, so they are shared
whole. Exit heads are part of the supernet only when it is built with
``exits=True`` (``supernet.exits=joint``, see ``nn.elastic_heads``); otherwise a
candidate's heads start fresh and are trained in its fine-tuning.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aebnas.nn.blocks import ConvBNAct, MBConv, SqueezeExcite, make_activation, se_channels
from aebnas.nn.elastic_heads import Heads, build_elastic_heads, check_head, head_choices
from aebnas.nn.network import EarlyExitNet, build_final_head
from aebnas.nn.slicing import centre, copy_batch_norm, sliced_batch_norm
from aebnas.space import Block, Genome, SpaceSettings

Backbone = Sequence[Sequence[Block]]


class ElasticMBConv(nn.Module):
    """The largest MBConv of one block position; ``forward(x, kernel, expansion)`` runs a slice of it."""

    def __init__(self, c_in: int, c_out: int, kernels: Sequence[int], expansions: Sequence[int], stride: int,
                 squeeze_excite: bool, activation: str):
        super().__init__()
        self.c_in, self.c_out, self.stride = c_in, c_out, stride
        self.max_kernel = max(kernels)
        hidden = c_in * max(expansions)
        self.expand = ConvBNAct(c_in, hidden, 1, activation=activation)
        self.depthwise = ConvBNAct(hidden, hidden, self.max_kernel, stride, groups=hidden, activation=activation)
        self.se = SqueezeExcite(hidden) if squeeze_excite else None
        self.project = ConvBNAct(hidden, c_out, 1, activation=None)
        self.act = make_activation(activation)
        self.residual = stride == 1 and c_in == c_out

    def centre(self, kernel: int) -> slice:
        """Rows/columns of the largest depthwise kernel that make up a ``kernel`` x ``kernel`` one."""
        return centre(self.max_kernel, kernel)

    def forward(self, x: torch.Tensor, kernel: int, expansion: int) -> torch.Tensor:
        hidden = self.c_in * expansion
        y = x
        if expansion != 1:  # an expansion-1 MBConv has no expand conv (as in nn.blocks.MBConv)
            y = self.act(sliced_batch_norm(F.conv2d(y, self.expand[0].weight[:hidden]), self.expand[1], hidden))
        c = self.centre(kernel)
        w = self.depthwise[0].weight[:hidden, :, c, c]
        y = self.act(sliced_batch_norm(F.conv2d(y, w, None, self.stride, kernel // 2, groups=hidden),
                                 self.depthwise[1], hidden))
        if self.se is not None:
            mid = se_channels(hidden)
            s = F.conv2d(y.mean((2, 3), keepdim=True), self.se.reduce.weight[:mid, :hidden], self.se.reduce.bias[:mid])
            s = F.conv2d(self.se.act(s), self.se.expand.weight[:hidden, :mid], self.se.expand.bias[:hidden])
            y = y * self.se.gate(s)
        y = sliced_batch_norm(F.conv2d(y, self.project[0].weight[:, :hidden]), self.project[1], self.c_out)
        return x + y if self.residual else y


class Supernet(nn.Module):
    """Stem, the largest blocks of every stage, the final head and, with ``exits``, an elastic head per exit stage."""

    def __init__(self, space: SpaceSettings, num_classes: int, in_channels: int, exits: bool = False):
        super().__init__()
        self.space = space
        self.num_classes, self.in_channels = num_classes, in_channels
        self.stem = ConvBNAct(in_channels, space.stem_channels, 3, space.stem_stride, activation=space.activation)
        stages = []
        c = space.stem_channels
        for spec in space.stages:
            blocks = [ElasticMBConv(c if b == 0 else spec.width, spec.width, space.kernels, space.expansions,
                                    spec.stride if b == 0 else 1, space.squeeze_excite, space.activation)
                      for b in range(space.max_depth)]
            stages.append(nn.ModuleList(blocks))
            c = spec.width
        self.stages = nn.ModuleList(stages)
        self.final_head = build_final_head(space, c, num_classes)
        self.exit_heads = build_elastic_heads(space, num_classes) if exits else None

    @property
    def has_exits(self) -> bool:
        return self.exit_heads is not None

    def features(self, x: torch.Tensor, backbone: Backbone) -> torch.Tensor:
        x = self.stem(x)
        for stage, blocks in zip(self.stages, backbone):
            for module, block in zip(stage, blocks):
                x = module(x, block.kernel, block.expansion)
        return x

    def forward(self, x: torch.Tensor, backbone: Backbone) -> torch.Tensor:
        """Final-classifier logits of the subnet ``backbone`` (a genome's ``stages``)."""
        return self.final_head(self.features(x, backbone))

    def forward_exits(self, x: torch.Tensor, backbone: Backbone, heads: Heads) -> list[torch.Tensor]:
        """Logits of the exit heads ``heads`` (stage -> layers), early ones first, then the final classifier's."""
        early, final = self.forward_head_sets(x, backbone, [heads])
        return early[0] + [final]

    def forward_head_sets(self, x: torch.Tensor, backbone: Backbone,
                          head_sets: Sequence[Heads]) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
        """Early-exit logits of several head sets on one pass of the backbone, and the final classifier's.

        One backbone pass serves every head set, so a sandwich step trains several head
        designs per exit position without repeating the backbone (``supernet.head_samples``;
        on the tiny space three designs still cost 1.2-1.9x the supernet time of one,
        docs/results/method-comparison.md).
        """
        if self.exit_heads is None:
            raise ValueError("Supernet.forward_head_sets: this supernet has no exit heads (built with exits=False)")
        early: list[list[torch.Tensor]] = [[] for _ in head_sets]
        x = self.stem(x)
        for s, (stage, blocks) in enumerate(zip(self.stages, backbone), start=1):
            for module, block in zip(stage, blocks):
                x = module(x, block.kernel, block.expansion)
            for outputs, heads in zip(early, head_sets):
                if s in heads:
                    outputs.append(self.exit_heads[str(s)](x, heads[s]))
        return early, self.final_head(x)


def genome_heads(genome: Genome) -> dict[int, tuple]:
    """A genome's active exits as the ``heads`` mapping of ``Supernet.forward_exits``."""
    return {e.stage: e.layers for e in genome.active_exits}


def backbone_modules(model: EarlyExitNet) -> tuple[nn.Module, list[nn.Sequential]]:
    """The stem and the stage Sequentials of an EarlyExitNet, whatever segments the exits cut it into."""
    children = [m for segment in model.segments for m in segment]
    stem, stages = children[0], children[1:]
    if not isinstance(stem, ConvBNAct) or len(stages) != len(model.genome.stages):
        raise ValueError("backbone_modules: the network is not laid out as stem + one Sequential per stage")
    return stem, stages


@torch.no_grad()
def _copy_block(dst: MBConv, src: ElasticMBConv, block: Block) -> None:
    hidden = src.c_in * block.expansion
    layers = list(dst.body)
    if block.expansion != 1:
        expand = layers.pop(0)
        expand[0].weight.copy_(src.expand[0].weight[:hidden])
        copy_batch_norm(expand[1], src.expand[1], hidden)
    depthwise = layers.pop(0)
    c = src.centre(block.kernel)
    depthwise[0].weight.copy_(src.depthwise[0].weight[:hidden, :, c, c])
    copy_batch_norm(depthwise[1], src.depthwise[1], hidden)
    if src.se is not None:
        se = layers.pop(0)
        mid = se_channels(hidden)
        se.reduce.weight.copy_(src.se.reduce.weight[:mid, :hidden])
        se.reduce.bias.copy_(src.se.reduce.bias[:mid])
        se.expand.weight.copy_(src.se.expand.weight[:hidden, :mid])
        se.expand.bias.copy_(src.se.expand.bias[:hidden])
    project = layers.pop(0)
    project[0].weight.copy_(src.project[0].weight[:, :hidden])
    copy_batch_norm(project[1], src.project[1], src.c_out)


@torch.no_grad()
def inherit_weights(model: EarlyExitNet, supernet: Supernet) -> EarlyExitNet:
    """Copy the candidate's slice of the supernet into ``model``; exit heads too when the supernet has them."""
    if backbone_identity(model.genome.space) != backbone_identity(supernet.space):
        raise ValueError("inherit_weights: the candidate's backbone space differs from the supernet's")
    if (model.num_classes, model.in_channels) != (supernet.num_classes, supernet.in_channels):
        raise ValueError(f"inherit_weights: the candidate has {model.num_classes} classes / {model.in_channels} "
                         f"channels, the supernet {supernet.num_classes} / {supernet.in_channels}")
    stem, stages = backbone_modules(model)
    stem.load_state_dict(supernet.stem.state_dict())
    for dst_stage, src_stage, blocks in zip(stages, supernet.stages, model.genome.stages):
        for dst, src, block in zip(dst_stage, src_stage, blocks):
            _copy_block(dst, src, block)
    model.heads[-1].load_state_dict(supernet.final_head.state_dict())
    if supernet.exit_heads is not None:
        if exit_identity(model.genome.space) != exit_identity(supernet.space):
            raise ValueError("inherit_weights: the candidate's exit choices differ from those of the supernet's "
                             "joint heads")
        for head, e in zip(model.heads, model.genome.active_exits):
            check_head(head_choices(supernet.space, e.stage), e.layers, e.stage)
            supernet.exit_heads[str(e.stage)].copy_into(head, e.layers)
    return model


BACKBONE_FIELDS = ("stem_channels", "stem_stride", "stages", "depths", "kernels", "expansions", "squeeze_excite",
                   "activation", "final_head_channels")


def backbone_identity(space: SpaceSettings) -> dict:
    """What the supernet's shapes depend on (part of its cache key); exit choices and thresholds are not."""
    d = space.to_dict()
    return {k: d[k] for k in BACKBONE_FIELDS}


EXIT_FIELDS = ("exit_stages", "exit_heads", "branch")


def exit_identity(space: SpaceSettings) -> dict:
    """What joint exit heads' shapes depend on (part of the cache key of a supernet with exits)."""
    d = space.to_dict()
    return {k: d[k] for k in EXIT_FIELDS} | {"stage_widths": [s["width"] for s in d["stages"]]}
