"""Per-device latency lookup tables: measured milliseconds per operator signature.

A table answers "how long does this network take on that device" without
running it: the latency of a path is the sum of its operators' measured
medians (``aebnas.cost.ops``), the same decomposition MACs use, and the
expected latency goes through ``expected_cost`` like expected MACs do. A table
is tied to an input shape (operators at 32x32 are not operators at 8x8), so it
records the space and shape it was profiled for and refuses, in one line that
says how to fill it, a search whose operators it lacks.

File format (JSON): ``{"format": ..., "meta": {...}, "ops": {signature: {...}}}``
with per-op ``macs, params, median_ms, mean_ms, std_ms, count``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aebnas.cost.expected import path_costs
from aebnas.cost.ops import NetworkOps, network_ops, space_ops
from aebnas.space import Genome, SpaceSettings
from aebnas.config_checks import ConfigError

TABLE_FORMAT = "aebnas-latency-table/1"


class LatencyTableError(ConfigError):
    """A latency table is missing, foreign or incomplete; the message says which command fills it."""


@dataclass(frozen=True)
class OpLatency:
    macs: int
    params: int
    median_ms: float
    mean_ms: float
    std_ms: float
    count: int


@dataclass(frozen=True)
class InputShape:
    """What a table's operators were measured for: input resolution, channels and classes."""

    resolution: int
    channels: int
    num_classes: int

    def describe(self) -> str:
        return f"{self.resolution}x{self.resolution}x{self.channels} input, {self.num_classes} classes"


@dataclass
class LatencyTable:
    """Measured operators of one device, one space and one input shape.

    ``meta`` holds who measured what: hardware name, device name, torch
    version, dtype, batch size, threads, date, space name and input shape, and
    ``overhead_ms`` (a per-path constant added to every prediction, 0 unless a
    validation run measured one).
    """

    meta: dict[str, Any]
    ops: dict[str, OpLatency] = field(default_factory=dict)

    @property
    def shape(self) -> InputShape:
        return InputShape(int(self.meta["resolution"]), int(self.meta["channels"]), int(self.meta["num_classes"]))

    @property
    def overhead_ms(self) -> float:
        return float(self.meta.get("overhead_ms", 0.0))

    def describe(self) -> str:
        m = self.meta
        return (f"{m.get('hardware', '?')} ({m.get('device_name', '?')}, batch {m.get('batch_size', '?')}, "
                f"{m.get('dtype', '?')}) for space '{m.get('space', '?')}' at {self.shape.describe()}")

    # --- files -----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"format": TABLE_FORMAT, "meta": self.meta, "ops": {k: asdict(v) for k, v in sorted(self.ops.items())}}

    def save(self, path: Path) -> None:
        """Atomic write: an interrupted save never leaves a truncated table."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "LatencyTable":
        path = Path(path)
        if not path.exists():
            raise LatencyTableError(f"latency table: no file '{path}'")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise LatencyTableError(f"latency table: '{path}' is not valid JSON ({exc}); delete it and profile again")
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise LatencyTableError(f"latency table: '{path}' is not an aebnas latency table (format {TABLE_FORMAT})")
        try:
            ops = {k: OpLatency(**v) for k, v in data["ops"].items()}
            table = cls(dict(data["meta"]), ops)
            table.shape  # noqa: B018 -- the shape keys must be there
        except (KeyError, TypeError, ValueError) as exc:
            raise LatencyTableError(f"latency table: '{path}' is malformed ({type(exc).__name__}: {exc})") from None
        return table

    # --- coverage ----------------------------------------------------------------
    def missing(self, space: SpaceSettings, shape: InputShape) -> list[str]:
        """Signatures some genome of ``space`` runs at ``shape`` that this table has not measured."""
        needed = space_ops(space, shape.num_classes, shape.channels, shape.resolution)
        return [sig for sig in needed if sig not in self.ops]

    def check_covers(self, space: SpaceSettings, shape: InputShape, fill_command: str, where: str = "") -> None:
        """Refuse a table that cannot price every candidate of this search, naming the fix."""
        missing = self.missing(space, shape)
        if not missing:
            return
        where = f" '{where}'" if where else ""
        n_needed = len(space_ops(space, shape.num_classes, shape.channels, shape.resolution))
        same = space.name in str(self.meta.get("space", "")).split("+") and self.shape == shape
        profiled = "" if same else (f" was profiled for space '{self.meta.get('space')}' at {self.shape.describe()},"
                                    f" this search uses space '{space.name}' at {shape.describe()}:")
        raise LatencyTableError(
            f"latency table{where}{profiled} lacks {len(missing)} of the {n_needed} operators it needs "
            f"(e.g. {missing[0]}); {'complete' if same else 'fill'} it with: {fill_command}")

    # --- prediction ----------------------------------------------------------------
    def op_ms(self, signature: str) -> float:
        try:
            return self.ops[signature].median_ms
        except KeyError:
            raise LatencyTableError(f"latency table {self.describe()}: operator {signature} was not measured; "
                                    "profile this space and input shape with aebnas-profile") from None

    def part_ms(self, ops: NetworkOps) -> tuple[list[float], list[float]]:
        """Predicted milliseconds per segment and per exit head."""
        return ops.part_costs(lambda op: self.op_ms(op.signature))

    def genome_part_ms(self, genome: Genome) -> tuple[list[float], list[float]]:
        """Predicted milliseconds per segment and per exit head of a genome's network at the table's shape."""
        shape = self.shape
        return self.part_ms(network_ops(genome, shape.num_classes, shape.channels, shape.resolution))

    def path_ms(self, genome: Genome) -> tuple[float, ...]:
        """Predicted latency of leaving at each exit (segments and heads on the way, plus the overhead term)."""
        return tuple(p + self.overhead_ms for p in path_costs(*self.genome_part_ms(genome)))

    def static_ms(self, genome: Genome) -> float:
        """Predicted latency of the same backbone run to full depth with the final classifier only."""
        segments, heads = self.genome_part_ms(genome)
        return sum(segments) + heads[-1] + self.overhead_ms


def mape(predicted: list[float], measured: list[float]) -> float:
    """Mean absolute percentage error of predictions against measurements, in percent."""
    pairs = [(p, m) for p, m in zip(predicted, measured) if m > 0]
    return 100.0 * sum(abs(p - m) / m for p, m in pairs) / len(pairs) if pairs else math.nan
