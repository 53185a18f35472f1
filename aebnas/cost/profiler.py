"""Measure a device: every operator of a search space, timed alone, into a latency table.

What is timed is the module ``aebnas.nn`` builds for an operator, in eval mode
under ``torch.inference_mode``, on a random input of the operator's shape:
``warmup`` untimed calls, then ``repeats`` timed calls whose median goes into
the table. On CUDA each call is synchronised, so the time includes the kernel
launch that a batch-1 network also pays. A shared machine adds delays in
bursts, never takes time away, so operators are measured in ``passes`` rounds
over a chunk of operators and an entry keeps the median of its quietest pass:
a burst then has to hit the same operator in every pass to move it. Profiling
saves the table after every chunk and on interruption; run it again and it
measures only what is missing.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from aebnas.cost import fingerprint
from aebnas.cost.fingerprint import Fingerprint
from aebnas.cost.latency import InputShape, LatencyTable, LatencyTableError, OpLatency
from aebnas.cost.ops import Op, space_ops
from aebnas.nn.blocks import Classifier, ConvBNAct, MBConv
from aebnas.nn.network import build_branch_layer
from aebnas.space import BranchLayer, SpaceSettings
from aebnas.config_checks import ConfigError, Settings, check_int, setting

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Measurement conditions a resumed profile must share with the table it completes.
IDENTITY_KEYS = ("hardware", "device_name", "torch", "dtype", "batch_size", "threads", "resolution", "channels",
                 "num_classes")


def _check_hardware_name(value: Any, name: str, error: type[Exception]) -> str:
    if not isinstance(value, str) or not value or "/" in value:
        raise error(f"{name}: a plain name such as cpu_x86_2t, got {value!r}")
    return value


def _check_hardware_device(value: Any, name: str, error: type[Exception]) -> str:
    if not isinstance(value, str) or not (value == "cpu" or value.startswith("cuda")):
        raise error(f"{name}: 'cpu' or 'cuda' (or 'cuda:N'), got {value!r}")
    return value


def _check_dtype(value: Any, name: str, error: type[Exception]) -> str:
    if value not in DTYPES:
        raise error(f"{name}: one of {list(DTYPES)}, got {value!r}")
    return value


@dataclass(frozen=True)
class HardwareSettings(Settings):
    """One named device and how to measure it (the Hydra ``hardware`` group)."""

    section: ClassVar[str] = "hardware"

    name: str = setting(check=_check_hardware_name, allowed="a plain name (no /)",
                        help="The device's name; its latency tables live in conf/hardware/tables/<name>/.")
    device: str = setting("cpu", check=_check_hardware_device, allowed="cpu | cuda | cuda:N",
                          help="Where operators are timed.")
    threads: int | None = setting(None, lo=1, help="CPU threads for torch while timing (null = torch's default).")
    batch_size: int = setting(1, lo=1, help="Batch size of the timed operators.")
    dtype: str = setting("float32", check=_check_dtype, allowed=" | ".join(DTYPES),
                         help="Data type of the timed operators (the CPU is profiled in float32).")
    warmup: int = setting(10, lo=0, help="Untimed calls before each measurement.")
    repeats: int = setting(50, lo=1, help="Timed calls per measurement.")
    passes: int = setting(3, lo=1, help="Interleaved passes over each chunk of operators; an entry keeps its "
                                        "quietest pass.")
    description: str = setting("", help="A line describing the device and conditions.")
    table_dir: str | None = setting(None, help="Your own tables (profiles, validations, calibrated copies) are read "
                                               "and written here; null: $AEBNAS_CACHE_DIR/latency/<name>/, else "
                                               "~/.cache/aebnas/latency/<name>/. Without one of yours the shipped "
                                               "table in conf/hardware/tables/<name>/ is read, never written.")
    check: bool = setting(True, help="When a table is used, compare this machine with its fingerprint (reference "
                                     "operators' timings); one warning line if the machine differs or runs them "
                                     ">15% faster or slower.")
    calibrate: bool = setting(False, help="Scale the table to this machine by timing every exit path of 8 random "
                                          "networks of its space here (a fitted factor, and a per-path offset only "
                                          "when positive and it earns its place); the calibrated copy is written "
                                          "beside your own tables.")

    def check_together(self) -> None:
        if self.device == "cpu" and self.dtype != "float32":
            raise ConfigError(f"hardware.dtype: {self.dtype} is for CUDA; profile the CPU in float32")

    def torch_device(self) -> torch.device:
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"hardware.device: '{self.device}' asked for, but torch sees no CUDA device here; "
                              "profile a GPU on the machine that has it")
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def apply_threads(self) -> None:
        """Fix the CPU thread count: latency at 1 thread and at 16 are different devices."""
        if self.threads is not None:
            torch.set_num_threads(self.threads)

    @contextmanager
    def threads_while_timing(self) -> Iterator[None]:
        """The table's thread count while timing inside another run (a search's start), the run's own after."""
        saved = torch.get_num_threads()
        self.apply_threads()
        try:
            yield
        finally:
            torch.set_num_threads(saved)


def _check_shape_part(value: Any, name: str, error: type[Exception]) -> int:
    return check_int(value, name, lo=2 if name.endswith("num_classes") else 1, error=error)


@dataclass(frozen=True)
class ProfileSettings(Settings):
    """What ``aebnas-profile`` measures beyond the device (the ``profile`` section of conf/profile.yaml)."""

    section: ClassVar[str] = "profile"

    resolution: int | None = setting(None, check=_check_shape_part, allowed="an integer >= 1 or null",
                                     help="Input side of the table; null (with channels and num_classes) = the "
                                          "dataset's.")
    channels: int | None = setting(None, check=_check_shape_part, allowed="an integer >= 1 or null",
                                   help="Input channels of the table; null = the dataset's.")
    num_classes: int | None = setting(None, check=_check_shape_part, allowed="an integer >= 2 or null",
                                      help="Classes of the table; null = the dataset's.")
    validate: bool = setting(False, help="Then measure `networks` random networks end to end against the table "
                                         "(MAPE, Spearman rho; validation.json and .png in the run directory).")
    networks: int = setting(50, lo=2, help="Random networks of the validation.")
    remeasure: bool = setting(False, help="Measure a new table for this machine even if one (yours or a shipped "
                                          "one) already covers the space.")

    def check_together(self) -> None:
        given = (self.resolution, self.channels, self.num_classes)
        for key, value in zip(("resolution", "channels", "num_classes"), given):
            if value is None and any(v is not None for v in given):
                raise ConfigError(f"profile.{key}: set resolution, channels and num_classes together, or none of "
                                  "them to take the dataset's")


def device_name(device: torch.device) -> str:
    """GPU name, or the CPU model from /proc/cpuinfo where there is one."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def table_meta(hw: HardwareSettings, space: SpaceSettings, shape: InputShape, device: torch.device) -> dict[str, Any]:
    return {
        "hardware": hw.name, "description": hw.description, "device": str(device), "device_name": device_name(device),
        "torch": torch.__version__, "dtype": hw.dtype, "batch_size": hw.batch_size,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "warmup": hw.warmup, "repeats": hw.repeats, "passes": hw.passes, "space": space.name, "resolution": shape.resolution,
        "channels": shape.channels, "num_classes": shape.num_classes,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "overhead_ms": 0.0,
    }


def op_module(op: Op) -> nn.Module:
    """The module ``aebnas.nn`` builds for this operator (fresh weights: latency does not depend on them)."""
    if op.kind == "stem":
        return ConvBNAct(op.c_in, op.c_out, op.kernel, op.stride, activation=op.activation)
    if op.kind == "mbconv":
        return MBConv(op.c_in, op.c_out, op.kernel, op.expansion, op.stride, op.squeeze_excite, op.activation)
    if op.kind == "exit_layer":
        layer = BranchLayer(op.layer_type, op.c_out, op.kernel, op.pool)
        return nn.Sequential(*build_branch_layer(layer, op.c_in, op.activation, op.expansion))
    if op.kind == "final_conv":
        return ConvBNAct(op.c_in, op.c_out, 1, activation=op.activation)
    if op.kind == "classifier":
        return Classifier(op.c_in, op.c_out)
    raise ValueError(f"operator kind '{op.kind}' is unknown")


def time_ms(fn: Callable[[], Any], warmup: int, repeats: int, device: torch.device) -> np.ndarray:
    """Wall time of each of ``repeats`` calls after ``warmup`` untimed ones, in milliseconds."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        sync()
        times = np.empty(repeats)
        for i in range(repeats):
            start = time.perf_counter()
            fn()
            sync()
            times[i] = (time.perf_counter() - start) * 1e3
    return times


def random_input(channels: int, resolution: int, hw: HardwareSettings, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(hw.batch_size, channels, resolution, resolution, generator=gen)
    return x.to(device=device, dtype=DTYPES[hw.dtype])


def quietest_pass(passes: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """The lowest per-pass median, and every call's time (for mean, std and count)."""
    return min(float(np.median(t)) for t in passes), np.concatenate(passes)


def measure_ops(ops: list[Op], hw: HardwareSettings, device: torch.device) -> dict[str, OpLatency]:
    """Each operator timed in ``hw.passes`` interleaved passes; the entry keeps the quietest pass's median."""
    built = [(op, op_module(op).eval().to(device=device, dtype=DTYPES[hw.dtype]),
              random_input(op.c_in, op.resolution, hw, device)) for op in ops]
    times: dict[str, list[np.ndarray]] = {op.signature: [] for op in ops}
    for _ in range(hw.passes):
        for op, module, x in built:
            times[op.signature].append(time_ms(lambda: module(x), hw.warmup, hw.repeats, device))
    out = {}
    for op, module, _ in built:
        median, every = quietest_pass(times[op.signature])
        params = sum(p.numel() for p in module.parameters())
        out[op.signature] = OpLatency(op.macs, params, median, float(every.mean()), float(every.std()), len(every))
    return out


def open_table(path: Path, meta: dict[str, Any]) -> LatencyTable:
    """The table to fill: a new one, or the one at ``path`` if it was measured under the same conditions."""
    if not Path(path).exists():
        return LatencyTable(dict(meta))
    table = LatencyTable.load(path)
    for key in IDENTITY_KEYS:
        if table.meta.get(key) != meta.get(key):
            raise LatencyTableError(
                f"latency table '{path}' was measured with {key}={table.meta.get(key)!r}, this profile runs with "
                f"{key}={meta.get(key)!r}; move the old table away, or name another hardware config")
    spaces = set(str(table.meta.get("space", "")).split("+")) | {meta["space"]}
    table.meta["space"] = "+".join(sorted(s for s in spaces if s))  # one table may serve several spaces
    return table


def measure_fingerprint(hw: HardwareSettings, device: torch.device) -> Fingerprint:
    """This machine's fingerprint under the table's setting (threads, dtype, batch size): a fresh reference run."""
    return fingerprint.measure(device, DTYPES[hw.dtype], hw.batch_size)


def profile_space(space: SpaceSettings, shape: InputShape, hw: HardwareSettings, path: Path, progress: bool = True,
                  on_measured: Callable[[str], None] | None = None, chunk: int = 64,
                  base: Path | None = None, fresh: bool = False) -> LatencyTable:
    """Measure every operator of ``space`` at ``shape`` not yet in the table at ``path``; save as it goes.

    With no table at ``path`` yet, a ``base`` table measured under the same conditions (a shipped one) is the
    starting point; it is read, never written: what this machine adds goes to ``path``. A new table gets this
    machine's fingerprint, taken before and after its operators (each reference operator keeps the quieter run);
    a table begun without one keeps none (a fingerprint taken on another day would vouch for what it never saw).
    ``fresh`` measures a new table whatever is at ``path``. Nothing is written when there is nothing to measure.
    """
    device = hw.torch_device()
    hw.apply_threads()
    meta = table_meta(hw, space, shape, device)
    start_from = path if Path(path).exists() else base if base is not None and Path(base).exists() else path
    needed = space_ops(space, shape.num_classes, shape.channels, shape.resolution)
    if start_from != path and not fresh:
        shipped = LatencyTable.load(start_from)
        if all(sig in shipped.ops for sig in needed):
            return shipped  # a complete base is used as it is (the check on use says whether it fits this machine)
    try:
        table = LatencyTable(dict(meta)) if fresh else open_table(start_from, meta)
    except LatencyTableError:
        if start_from == path:
            raise
        table = LatencyTable(dict(meta))  # a base from another machine is no starting point
    if start_from != path and table.ops:
        table.meta.pop("validation", None)  # the copy's validation is its own to earn
    todo = [op for sig, op in needed.items() if sig not in table.ops]
    if not todo:
        return table  # complete: nothing to measure, nothing to write
    before = measure_fingerprint(hw, device) if not table.ops else None
    if before is not None:
        table.meta["fingerprint"] = before.to_json()
    try:
        with tqdm(total=len(todo), desc=f"profiling {hw.name}", unit="op", disable=not progress,
                  dynamic_ncols=True) as bar:
            for start in range(0, len(todo), chunk):
                for sig, entry in measure_ops(todo[start:start + chunk], hw, device).items():
                    table.ops[sig] = entry
                    if on_measured is not None:
                        on_measured(sig)
                table.save(path)
                bar.update(min(chunk, len(todo) - start))
        if before is not None and todo:
            table.meta["fingerprint"] = fingerprint.quietest(before, measure_fingerprint(hw, device)).to_json()
    finally:
        table.save(path)  # Ctrl-C keeps what was measured; the next run measures the rest
    return table
