"""Which machine a latency table describes, and whether this machine is still that one.

A table's milliseconds hold only on the machine and the day they were measured:
another CPU model, another GPU driver, a noisy neighbour or a throttled clock
moves every entry. So every table carries a fingerprint: what the machine says
it is (CPU model, cores, threads, GPU name and driver, torch version) and the
timings of a fixed reference set of about twenty plain torch operators, taken
when the table was made. Running the same reference set later (a second or two)
and comparing says, with one ratio, how far this machine has moved, without
re-measuring the table; the same comparison fits the factor that carries the
table over (``aebnas.cost.calibration``).

The reference operators are plain ``torch.nn`` modules at fixed shapes, not
``aebnas.nn`` blocks, so a fingerprint stays comparable across versions of the
search space. They span dispatch-bound (a few microseconds) and compute-bound
(a millisecond) calls, so a per-call overhead and a speed factor can be told
apart.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

REFERENCE_VERSION = 1
# Reference timings further apart than this (as a ratio, either way) mean the table no longer describes the machine.
TOLERANCE = 0.15
# A reference run younger than this is reused instead of run again (the check at a search's start stays cheap).
MAX_AGE_S = 3600.0
# Machine keys whose difference makes a table foreign, whatever its reference timings say.
MACHINE_KEYS = ("cpu_model", "cpu_cores", "cpu_threads", "gpu_name", "gpu_driver", "torch")
# A check's reference run stops after this long (a table's own fingerprint is always complete).
BUDGET_S = 10.0
# How each reference operator is timed: untimed calls, timed calls per pass, interleaved passes (quietest counts).
WARMUP, REPEATS, PASSES = 5, 15, 3


def _conv(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1) -> nn.Module:
    return nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False)


def _mbconv(c: int, e: int) -> nn.Module:
    h = c * e
    return nn.Sequential(_conv(c, h, 1), nn.BatchNorm2d(h), nn.Hardswish(), _conv(h, h, 3, groups=h), nn.BatchNorm2d(h),
                         nn.Hardswish(), _conv(h, c, 1), nn.BatchNorm2d(c))


class _Add(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x


# name -> (module builder, input (channels, resolution)); resolution 0 = a flat (batch, channels) input.
REFERENCE_OPS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int]]] = {
    "conv3x3_c1-8_r8": (lambda: _conv(1, 8, 3), (1, 8)),
    "conv3x3_c3-16_r32": (lambda: _conv(3, 16, 3), (3, 32)),
    "conv3x3_c16-16_r32": (lambda: _conv(16, 16, 3), (16, 32)),
    "conv3x3_c32-32_r16": (lambda: _conv(32, 32, 3), (32, 16)),
    "conv3x3_c64-64_r8": (lambda: _conv(64, 64, 3), (64, 8)),
    "conv3x3s2_c16-32_r32": (lambda: _conv(16, 32, 3, 2), (16, 32)),
    "dw3x3_c32_r32": (lambda: _conv(32, 32, 3, groups=32), (32, 32)),
    "dw5x5_c64_r16": (lambda: _conv(64, 64, 5, groups=64), (64, 16)),
    "dw3x3_c128_r8": (lambda: _conv(128, 128, 3, groups=128), (128, 8)),
    "pw_c16-64_r32": (lambda: _conv(16, 64, 1), (16, 32)),
    "pw_c64-16_r32": (lambda: _conv(64, 16, 1), (64, 32)),
    "pw_c96-24_r16": (lambda: _conv(96, 24, 1), (96, 16)),
    "pw_c256-64_r8": (lambda: _conv(256, 64, 1), (256, 8)),
    "bn_c32_r32": (lambda: nn.BatchNorm2d(32), (32, 32)),
    "hswish_c64_r16": (nn.Hardswish, (64, 16)),
    "relu_c8_r8": (nn.ReLU, (8, 8)),
    "add_c32_r32": (_Add, (32, 32)),
    "avgpool_c128_r8": (lambda: nn.AdaptiveAvgPool2d(1), (128, 8)),
    "linear_128-10": (lambda: nn.Linear(128, 10), (128, 0)),
    "linear_1024-1000": (lambda: nn.Linear(1024, 1000), (1024, 0)),
    "mbconv_c24_e4_r16": (lambda: _mbconv(24, 4), (24, 16)),
    "mbconv_c16_e2_r8": (lambda: _mbconv(16, 2), (16, 8)),
}


@dataclass
class Fingerprint:
    """What a machine is and how fast it ran the reference set, under one measurement setting."""

    machine: dict[str, Any]
    reference_ms: dict[str, float]
    setting: dict[str, Any] = field(default_factory=dict)   # device, dtype, batch size, threads, warmup, repeats
    date: str = ""
    seconds: float = 0.0                                      # how long the reference run took
    version: int = REFERENCE_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Fingerprint":
        return cls(dict(data["machine"]), {k: float(v) for k, v in data["reference_ms"].items()},
                   dict(data.get("setting", {})), str(data.get("date", "")), float(data.get("seconds", 0.0)),
                   int(data.get("version", REFERENCE_VERSION)))

    def age_s(self) -> float:
        try:
            then = _dt.datetime.fromisoformat(self.date)
        except ValueError:
            return float("inf")
        return (_dt.datetime.now(_dt.timezone.utc) - then).total_seconds()

    def describe(self) -> str:
        m = self.machine
        what = m.get("gpu_name") or m.get("cpu_model") or "?"
        extra = f", driver {m['gpu_driver']}" if m.get("gpu_driver") else f", {m.get('cpu_threads', '?')} threads"
        return f"{what}{extra}, torch {m.get('torch', '?')}, {self.date[:10] or 'undated'}"


# --- what the machine says it is ---------------------------------------------------------------------------
def cpu_info() -> dict[str, Any]:
    """CPU model, physical cores and logical CPUs, from /proc/cpuinfo where there is one."""
    model, cores = "", set()
    physical = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (s.strip() for s in line.partition(":"))
            if key == "model name" and not model:
                model = value
            elif key == "physical id":
                physical = value
            elif key == "core id":
                cores.add((physical, value))
    except OSError:
        pass
    threads = os.cpu_count() or 1
    return {"cpu_model": model or platform.processor() or platform.machine(), "cpu_cores": len(cores) or threads,
            "cpu_threads": threads}


def gpu_info(device: torch.device) -> dict[str, Any]:
    """GPU name and driver version of a CUDA device (the driver from nvidia-smi, when it is on the PATH)."""
    name = torch.cuda.get_device_name(device)
    driver = ""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            index = device.index if device.index is not None else torch.cuda.current_device()
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader", f"--id={index}"],
                                 capture_output=True, text=True, timeout=10)
            driver = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
        except (OSError, subprocess.SubprocessError):
            driver = ""
    return {"gpu_name": name, "gpu_driver": driver, "cuda": torch.version.cuda or ""}


def machine_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {**cpu_info(), "gpu_name": "", "gpu_driver": "", "cuda": "", "torch": torch.__version__,
                            "python": platform.python_version()}
    if device.type == "cuda":
        info.update(gpu_info(device))
    return info


# --- the reference run -------------------------------------------------------------------------------------
def run_reference(device: torch.device, dtype: torch.dtype = torch.float32, batch_size: int = 1, warmup: int = WARMUP,
                  repeats: int = REPEATS, passes: int = PASSES, budget_s: float | None = None) -> dict[str, float]:
    """Each reference operator's quietest-pass median call time (ms), in interleaved passes like the profiler.

    With ``budget_s``, timing stops once that much time has gone (on a machine so busy that the set takes
    that long, a few operators already tell it): only the operators timed so far are returned.
    """
    from aebnas.cost.profiler import time_ms  # the profiler's own clock: the same synchronisation, the same mode

    gen = torch.Generator().manual_seed(0)
    built = []
    for name, (make, (channels, res)) in REFERENCE_OPS.items():
        torch.manual_seed(0)
        shape = (batch_size, channels) if res == 0 else (batch_size, channels, res, res)
        x = torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)
        built.append((name, make().eval().to(device=device, dtype=dtype), x))
    times: dict[str, list[float]] = {name: [] for name, _, _ in built}
    start = time.perf_counter()
    for _ in range(passes):
        for name, module, x in built:
            times[name].append(float(np.median(time_ms(lambda: module(x), warmup, repeats, device))))
            if budget_s is not None and time.perf_counter() - start > budget_s:
                return {name: min(t) for name, t in times.items() if t}
    return {name: min(t) for name, t in times.items()}


def measure(device: torch.device, dtype: torch.dtype = torch.float32, batch_size: int = 1, warmup: int = WARMUP,
            repeats: int = REPEATS, passes: int = PASSES, budget_s: float | None = None) -> Fingerprint:
    """This machine's fingerprint under one setting (the thread count is whatever torch runs with now)."""
    start = time.perf_counter()
    reference = run_reference(device, dtype, batch_size, warmup, repeats, passes, budget_s)
    setting = {"device": device.type, "dtype": str(dtype).removeprefix("torch."), "batch_size": batch_size,
               "threads": torch.get_num_threads() if device.type == "cpu" else None, "warmup": warmup,
               "repeats": repeats, "passes": passes}
    return Fingerprint(machine_info(device), reference, setting,
                       _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), time.perf_counter() - start)


def quietest(a: Fingerprint, b: Fingerprint) -> Fingerprint:
    """Two reference runs of one setting merged per operator (load only ever adds time: keep the lower)."""
    ref = {k: min(a.reference_ms[k], b.reference_ms.get(k, a.reference_ms[k])) for k in a.reference_ms}
    return Fingerprint(a.machine, ref, a.setting, a.date, a.seconds + b.seconds, a.version)


# --- comparing -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """How this machine's reference run relates to a table's: one ratio (now / then) and what differs."""

    ratio: float                      # geometric mean over the reference operators of now / then
    spread: float                     # geometric std of the per-operator ratios (1 = a pure speed factor)
    machine_diff: dict[str, tuple[Any, Any]]
    operators: int

    @property
    def off(self) -> bool:
        return bool(self.machine_diff) or abs(self.ratio - 1.0) > TOLERANCE

    def describe(self) -> str:
        parts = []
        if self.machine_diff:
            parts.append("machine differs (" + ", ".join(f"{k}: table {a!r}, here {b!r}"
                                                         for k, (a, b) in self.machine_diff.items()) + ")")
        timed = "" if self.operators >= len(REFERENCE_OPS) else \
            f" ({self.operators} of {len(REFERENCE_OPS)} timed: the set ran out of its {BUDGET_S:.0f} s on a busy machine)"
        parts.append(f"reference operators run {self.ratio:.2f}x the table's time here{timed}")
        return "; ".join(parts)


def compare(table: Fingerprint, now: Fingerprint) -> Comparison:
    common = [k for k in table.reference_ms if k in now.reference_ms and table.reference_ms[k] > 0]
    logs = np.log([now.reference_ms[k] / table.reference_ms[k] for k in common]) if common else np.zeros(1)
    diff = {k: (table.machine.get(k), now.machine.get(k)) for k in MACHINE_KEYS
            if table.machine.get(k) != now.machine.get(k)}
    return Comparison(float(np.exp(logs.mean())), float(np.exp(logs.std())), diff, len(common))


# --- the cache of recent reference runs ----------------------------------------------------------------------
def cache_root() -> Path:
    """``$AEBNAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/aebnas``, else ``~/.cache/aebnas``: never the package."""
    env = os.environ.get("AEBNAS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "aebnas"


def _cache_path(setting: dict[str, Any], machine: dict[str, Any]) -> Path:
    key = json.dumps({"setting": setting, "machine": {k: machine.get(k) for k in MACHINE_KEYS},
                      "version": REFERENCE_VERSION}, sort_keys=True)
    return cache_root() / "reference" / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.json"


def current(device: torch.device, dtype: torch.dtype = torch.float32, batch_size: int = 1, max_age_s: float = MAX_AGE_S,
            fresh: bool = False) -> tuple[Fingerprint, bool]:
    """This machine's fingerprint: a cached run younger than ``max_age_s``, else a new run (then cached).

    Returns the fingerprint and whether it came from the cache.
    """
    setting = {"device": device.type, "dtype": str(dtype).removeprefix("torch."), "batch_size": batch_size,
               "threads": torch.get_num_threads() if device.type == "cpu" else None, "warmup": WARMUP,
               "repeats": REPEATS, "passes": PASSES}
    machine = machine_info(device)
    path = _cache_path(setting, machine)
    if not fresh and path.exists():
        try:
            cached = Fingerprint.from_json(json.loads(path.read_text()))
            if cached.age_s() <= max_age_s and cached.setting == setting:
                return cached, True
        except (ValueError, KeyError, TypeError):
            pass  # a broken cache entry is measured again
    fp = measure(device, dtype, batch_size, budget_s=BUDGET_S)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(fp.to_json(), indent=1))
        tmp.replace(path)
    except OSError:
        pass  # a read-only home still gets its check, just not a cached one
    return fp, False
