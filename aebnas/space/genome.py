"""What a candidate network IS, independent of torch: backbone blocks, exits, thresholds.

A genome has exactly one canonical text form. It is the archive key, the CSV
cell and part of saved-model names, so two genomes that build the same network
must print the same text: genes that do nothing (blocks beyond a stage's depth,
branch layers of a disabled exit) simply have no place in the dataclasses.

Text grammar (stages separated by ``/``, exits by ``|`` after the backbone)::

    k3e3-k5e6/k3e4-k5e4-k7e6/...|t0.8:max-conv32k3+dwsep64k5|off|...

* a block is ``k<kernel>e<expansion>``; a stage is its blocks joined by ``-``;
* an exit is ``off`` or ``t<threshold>:`` followed by its branch layers joined
  by ``+``; a layer is ``<type><width>k<kernel>``, prefixed ``max-``/``avg-`` when
  a 2x2 pooling comes first (pooling first makes the layer 4x cheaper, which is
  what lets exits early in the network, at full resolution, pay for themselves).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from aebnas.space.config import SpaceSettings


class GenomeError(ValueError):
    """A genome (text, JSON or vector) does not fit its search space."""


@dataclass(frozen=True)
class Block:
    kernel: int
    expansion: int

    def to_text(self) -> str:
        return f"k{self.kernel}e{self.expansion}"


@dataclass(frozen=True)
class BranchLayer:
    type: str
    width: int
    kernel: int
    pool: str = "none"

    def to_text(self) -> str:
        pool = "" if self.pool == "none" else f"{self.pool}-"
        return f"{pool}{self.type}{self.width}k{self.kernel}"


@dataclass(frozen=True)
class Exit:
    """A candidate exit after backbone stage ``stage`` (1-based); off when threshold is None."""

    stage: int
    threshold: float | None
    layers: tuple[BranchLayer, ...] = ()

    @property
    def active(self) -> bool:
        return self.threshold is not None

    def to_text(self) -> str:
        if not self.active:
            return "off"
        return f"t{self.threshold!r}:" + "+".join(layer.to_text() for layer in self.layers)


@dataclass(frozen=True)
class Genome:
    space: SpaceSettings
    stages: tuple[tuple[Block, ...], ...]
    exits: tuple[Exit, ...]

    @property
    def active_exits(self) -> tuple[Exit, ...]:
        return tuple(e for e in self.exits if e.active)

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.stages)

    @property
    def thresholds(self) -> tuple[float, ...]:
        """Thresholds of the active early exits, in network order."""
        return tuple(e.threshold for e in self.active_exits)  # type: ignore[misc]

    def with_thresholds(self, thresholds: Iterable[float]) -> "Genome":
        """Same network, other confidence thresholds for the active exits (same order)."""
        values = list(thresholds)
        if len(values) != len(self.active_exits):
            raise GenomeError(f"thresholds: expected {len(self.active_exits)} values, got {len(values)}")
        it = iter(values)
        exits = tuple(replace(e, threshold=float(next(it))) if e.active else e for e in self.exits)
        for e in exits:
            if e.active and not 0.0 < e.threshold <= 1.0:  # type: ignore[operator]
                raise GenomeError(f"thresholds: {e.threshold} is outside (0, 1]")
        return replace(self, exits=exits)

    def to_text(self) -> str:
        backbone = "/".join("-".join(b.to_text() for b in stage) for stage in self.stages)
        return "|".join([backbone] + [e.to_text() for e in self.exits])

    @property
    def key(self) -> str:
        return self.to_text()

    @property
    def network_key(self) -> str:
        """Key of the trained network alone: thresholds do not change weights, so they are masked."""
        backbone, *exits = self.to_text().split("|")
        return "|".join([backbone] + [re.sub(r"^t[^:]+:", "t*:", e) for e in exits])

    @property
    def backbone_key(self) -> str:
        """Key of the backbone alone (its stages' blocks), the part that sets most of a network's accuracy."""
        return self.to_text().split("|", 1)[0]

    def __str__(self) -> str:
        return self.to_text()

    def to_json(self) -> dict[str, Any]:
        """Self-contained form: the space travels with the genome so a saved model can be rebuilt."""
        return {"genome": self.to_text(), "space": self.space.to_dict()}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> "Genome":
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise GenomeError(f"genome JSON: not valid JSON ({exc.msg} at char {exc.pos})") from None
        if not isinstance(data, Mapping) or "genome" not in data or "space" not in data:
            raise GenomeError("genome JSON: expected an object with keys 'genome' and 'space'")
        return cls.from_text(str(data["genome"]), SpaceSettings.from_dict(data["space"]))

    @classmethod
    def from_text(cls, text: str, space: SpaceSettings) -> "Genome":
        """Parse and validate against ``space``; every value must be one of its choices."""
        parts = text.strip().split("|")
        if len(parts) != 1 + len(space.exit_stages):
            raise GenomeError(f"genome text: expected the backbone and {len(space.exit_stages)} exits "
                              f"separated by '|', got {len(parts)} parts in {text!r}")
        stage_texts = parts[0].split("/")
        if len(stage_texts) != space.n_stages:
            raise GenomeError(f"genome text: expected {space.n_stages} stages separated by '/', "
                              f"got {len(stage_texts)} in {parts[0]!r}")
        stages = tuple(_parse_stage(t, i + 1, space) for i, t in enumerate(stage_texts))
        exits = tuple(_parse_exit(t, s, space) for t, s in zip(parts[1:], space.exit_stages))
        return cls(space=space, stages=stages, exits=exits)


_BLOCK = re.compile(r"^k(\d+)e(\d+)$")
_LAYER = re.compile(r"^(?:(max|avg)-)?([a-z]+?)(\d+)k(\d+)$")
_EXIT = re.compile(r"^t([0-9.eE+-]+):(.+)$")


def _parse_stage(text: str, stage: int, space: SpaceSettings) -> tuple[Block, ...]:
    blocks = []
    for bt in text.split("-"):
        m = _BLOCK.match(bt)
        if not m:
            raise GenomeError(f"genome text: stage {stage} block {bt!r} is not of the form k<kernel>e<expansion>")
        k, e = int(m.group(1)), int(m.group(2))
        _check(k, space.kernels, f"stage {stage} kernel")
        _check(e, space.expansions, f"stage {stage} expansion")
        blocks.append(Block(k, e))
    _check(len(blocks), space.depths, f"stage {stage} depth")
    return tuple(blocks)


def _parse_exit(text: str, stage: int, space: SpaceSettings) -> Exit:
    if text == "off":
        return Exit(stage=stage, threshold=None)
    m = _EXIT.match(text)
    if not m:
        raise GenomeError(f"genome text: exit after stage {stage} {text!r} is neither 'off' nor t<threshold>:<layers>")
    try:
        threshold = float(m.group(1))
    except ValueError:
        raise GenomeError(f"genome text: exit after stage {stage} threshold {m.group(1)!r} is not a number") from None
    if not 0.0 < threshold <= 1.0:
        raise GenomeError(f"genome text: exit after stage {stage} threshold {threshold:g} is outside (0, 1]")
    fixed = space.fixed_head(stage)
    if fixed is not None:
        if m.group(2) != fixed:
            raise GenomeError(f"genome text: exit after stage {stage} head {m.group(2)!r} is not the space's "
                              f"fixed head {fixed!r}")
        return Exit(stage=stage, threshold=threshold, layers=parse_layers(fixed, stage))
    layers = parse_layers(m.group(2), stage)
    b = space.branch
    for layer in layers:
        _check(layer.type, b.layer_types, f"exit {stage} layer type")
        _check(layer.width, b.widths, f"exit {stage} layer width")
        _check(layer.kernel, b.kernels, f"exit {stage} layer kernel")
        _check(layer.pool, b.pools, f"exit {stage} layer pool")
    _check(len(layers), b.depths, f"exit {stage} branch depth")
    return Exit(stage=stage, threshold=threshold, layers=tuple(layers))


def parse_layers(text: str, stage: int) -> tuple[BranchLayer, ...]:
    """Exit-branch layers from their text (grammar only; the space's choices are checked by the caller)."""
    layers = []
    for lt in text.split("+"):
        lm = _LAYER.match(lt)
        if not lm:
            raise GenomeError(f"genome text: exit after stage {stage} layer {lt!r} is not [pool-]<type><width>k<kernel>")
        layers.append(BranchLayer(lm.group(2), int(lm.group(3)), int(lm.group(4)), lm.group(1) or "none"))
    return tuple(layers)


def _check(value: Any, choices: tuple, what: str) -> None:
    if value not in choices:
        raise GenomeError(f"genome text: {what} {value!r} is not one of the space's choices {list(choices)}")
