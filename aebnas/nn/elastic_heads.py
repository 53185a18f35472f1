"""Exit heads shared across candidates (``supernet.exits=joint``): one elastic head per exit position.

With fresh heads a candidate's exits start from random weights, so its early
exits are only as good as its few fine-tuning epochs make them. With joint heads
the supernet trains, at every exit position, one head that holds the largest
choice of every branch gene, and a candidate's head is a slice of it, as its
backbone is:

* layer type: each layer slot keeps one module per layer kind (conv, dwsep,
  ir, any registered kind); kinds are not sizes, so they share nothing;
* width: the first ``width`` output channels (and, in the next slot, inputs);
* kernel: the centre of the largest kernel;
* pooling: parameter-free, applied in front of the slice;
* depth: the first ``d`` slots, and a classifier of its own per depth (the
  features a one-layer head classifies are not those of a two-layer one).

A fixed head (EDANAS, NACHOS, manual: ``space.exit_heads``) is a head with one
choice per gene, so it is shared the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from aebnas.space import BranchLayer, SpaceSettings
from aebnas.space.genome import parse_layers
from aebnas.nn.layer_modules import layer_modules
from aebnas.space.layer_kinds import layer_kind_names

HeadLayers = tuple[BranchLayer, ...]
Heads = Mapping[int, HeadLayers]   # exit stage (1-based) -> its branch layers


@dataclass(frozen=True)
class SlotChoices:
    """What one layer slot of a head at one exit position can be."""

    types: tuple[str, ...]
    widths: tuple[int, ...]
    kernels: tuple[int, ...]
    pools: tuple[str, ...]


@dataclass(frozen=True)
class HeadChoices:
    depths: tuple[int, ...]
    slots: tuple[SlotChoices, ...]


def head_choices(space: SpaceSettings, stage: int) -> HeadChoices:
    """The head choices at exit ``stage``: the space's branch genes, or the one fixed head it prescribes."""
    fixed = space.fixed_head(stage)
    if fixed is not None:
        layers = parse_layers(fixed, stage)
        return HeadChoices((len(layers),), tuple(SlotChoices((l.type,), (l.width,), (l.kernel,), (l.pool,))
                                                 for l in layers))
    b = space.branch
    slot = SlotChoices(tuple(b.layer_types), tuple(b.widths), tuple(b.kernels), tuple(b.pools))
    return HeadChoices(tuple(b.depths), (slot,) * max(b.depths))


def _pool(x: torch.Tensor, pool: str) -> torch.Tensor:
    if pool == "max":
        return F.max_pool2d(x, 2, ceil_mode=True)
    if pool == "avg":
        return F.avg_pool2d(x, 2, ceil_mode=True)
    return x


class ElasticBranchLayer(nn.Module):
    """One layer slot of an exit head at its largest: a module per layer kind (named after it), largest width and
    kernel; each kind slices its own module (``aebnas.nn.layer_modules``)."""

    def __init__(self, c_in: int, choices: SlotChoices, activation: str, ir_expansion: int):
        super().__init__()
        self.c_in, self.choices, self.ir_expansion = c_in, choices, ir_expansion
        w, k = max(choices.widths), max(choices.kernels)
        for name in layer_kind_names():  # table order, so module creation (and seeded init) ignores choice order
            if name in choices.types:
                self.add_module(name, layer_modules(name).build_elastic(c_in, w, k, activation, ir_expansion))

    def forward(self, x: torch.Tensor, layer: BranchLayer) -> torch.Tensor:
        x = _pool(x, layer.pool)
        return layer_modules(layer.type).forward_slice(getattr(self, layer.type), x, layer.width, layer.kernel,
                                                    self.ir_expansion)

    @torch.no_grad()
    def copy_into(self, modules: Sequence[nn.Module], layer: BranchLayer) -> None:
        """Copy the slice for ``layer`` into the candidate's modules of that layer (pooling excluded)."""
        layer_modules(layer.type).copy_slice(getattr(self, layer.type), modules, self.ir_expansion)


class ElasticExitHead(nn.Module):
    """Every head a candidate may hang after one stage, as slices of one set of weights."""

    def __init__(self, c_in: int, choices: HeadChoices, num_classes: int, activation: str, ir_expansion: int):
        super().__init__()
        self.choices = choices
        slots, c = [], c_in
        for slot in choices.slots:
            slots.append(ElasticBranchLayer(c, slot, activation, ir_expansion))
            c = max(slot.widths)
        self.slots = nn.ModuleList(slots)
        widths = [c_in] + [max(s.widths) for s in choices.slots]
        # one classifier per depth choice; depths the space cannot produce get none
        self.classifiers = nn.ModuleDict({str(d): nn.Linear(widths[d], num_classes) for d in choices.depths})

    def forward(self, x: torch.Tensor, layers: HeadLayers) -> torch.Tensor:
        for slot, layer in zip(self.slots, layers):
            x = slot(x, layer)
        fc = self.classifiers[str(len(layers))]
        return F.linear(x.mean((2, 3)), fc.weight[:, :x.shape[1]], fc.bias)

    @torch.no_grad()
    def copy_into(self, head: nn.Sequential, layers: HeadLayers) -> None:
        """Copy the slice for ``layers`` into ``head``, a module built by ``nn.network.build_exit_head``."""
        modules = [m for m in head if not isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
        for slot, layer in zip(self.slots, layers):
            n = layer_modules(layer.type).n_modules
            slot.copy_into(modules[:n], layer)
            modules = modules[n:]
        (classifier,) = modules
        fc = self.classifiers[str(len(layers))]
        classifier.fc.weight.copy_(fc.weight[:, :classifier.fc.in_features])
        classifier.fc.bias.copy_(fc.bias)


def build_elastic_heads(space: SpaceSettings, num_classes: int) -> nn.ModuleDict:
    """One elastic head per exit stage of ``space``, keyed by the stage number as text."""
    return nn.ModuleDict({str(s): ElasticExitHead(space.stages[s - 1].width, head_choices(space, s), num_classes,
                                                  space.activation, space.branch.ir_expansion)
                          for s in space.exit_stages})


def check_head(choices: HeadChoices, layers: HeadLayers, stage: int) -> None:
    """Refuse a head the elastic head cannot produce (it was built for another space)."""
    ok = len(layers) in choices.depths and all(
        l.type in s.types and l.width <= max(s.widths) and l.kernel <= max(s.kernels) and l.kernel % 2 == 1
        for l, s in zip(layers, choices.slots))
    if not ok:
        raise ValueError(f"exit after stage {stage}: head {'+'.join(l.to_text() for l in layers)!r} is not one the "
                         "supernet's joint heads were trained for")


__all__ = ["ElasticExitHead", "HeadChoices", "Heads", "HeadLayers", "build_elastic_heads", "check_head",
           "head_choices"]
