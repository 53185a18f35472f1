"""Latency tables that know their machine: fingerprint, the check on use, calibration, no writes into the package."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from aebnas.cli.common import calibrated_table_path, load_latency_table, user_table_path
from aebnas.cost import fingerprint
from aebnas.cost.calibration import calibrate, check_message, fit, use_table
from aebnas.cost.fingerprint import Fingerprint, compare
from aebnas.cost.latency import InputShape, LatencyTable, LatencyTableError, OpLatency
from aebnas.cost.ops import space_ops
from aebnas.cost.profiler import HardwareSettings, profile_space

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aebnas"
FAST = {"name": "test_cpu", "threads": 1, "warmup": 0, "repeats": 1, "passes": 1}


def synthetic(scale: float = 1.0, offset: float = 0.0, machine: dict | None = None) -> Fingerprint:
    """A fingerprint whose reference timings are a known map of fixed ones (5 us to 1 ms)."""
    base = np.geomspace(0.005, 1.0, len(fingerprint.REFERENCE_OPS))
    ms = {name: float(scale * t + offset) for name, t in zip(fingerprint.REFERENCE_OPS, base)}
    info = machine or {"cpu_model": "AMD EPYC", "cpu_cores": 2, "cpu_threads": 2, "gpu_name": "", "gpu_driver": "",
                       "cuda": "", "torch": torch.__version__}
    return Fingerprint(dict(info), ms, {"device": "cpu", "dtype": "float32", "batch_size": 1, "threads": 2},
                       "2026-12-01T00:00:00+00:00", 1.0)


def table_with(fp: Fingerprint | None, space, shape=InputShape(8, 1, 10)) -> LatencyTable:
    ops = space_ops(space.config, shape.num_classes, shape.channels, shape.resolution)
    meta = {"hardware": "cpu_x86_2t", "space": space.config.name, "resolution": shape.resolution,
            "channels": shape.channels, "num_classes": shape.num_classes, "overhead_ms": 0.0, "device_name": "x"}
    if fp is not None:
        meta["fingerprint"] = fp.to_json()
    return LatencyTable(meta, {s: OpLatency(o.macs, 0, 0.01 + o.macs * 1e-7, 0.01, 0.001, 3) for s, o in ops.items()})


def test_a_profiled_table_carries_this_machines_fingerprint_through_its_file(tiny_space, tmp_path):
    path = tmp_path / "t.json"
    table = profile_space(tiny_space.config, InputShape(4, 1, 5), HardwareSettings.from_dict(FAST), path,
                          progress=False)
    fp = Fingerprint.from_json(LatencyTable.load(path).meta["fingerprint"])
    assert fp == Fingerprint.from_json(table.meta["fingerprint"])
    assert Fingerprint.from_json(json.loads(json.dumps(fp.to_json()))) == fp
    assert set(fp.reference_ms) == set(fingerprint.REFERENCE_OPS) and len(fp.reference_ms) >= 20
    assert all(ms > 0 for ms in fp.reference_ms.values())
    here = fingerprint.machine_info(torch.device("cpu"))
    assert {k: fp.machine[k] for k in fingerprint.MACHINE_KEYS} == {k: here[k] for k in fingerprint.MACHINE_KEYS}
    assert fp.machine["cpu_threads"] == os.cpu_count() and fp.machine["torch"] == torch.__version__
    assert fp.setting["threads"] == 1 and fp.setting["batch_size"] == 1


def test_a_check_on_a_busy_machine_stops_at_its_time_budget_and_still_compares(tiny_space):
    torch.set_num_threads(1)
    first = fingerprint.run_reference(torch.device("cpu"), budget_s=0.0)
    assert list(first) == [next(iter(fingerprint.REFERENCE_OPS))] and first[next(iter(first))] > 0
    now = synthetic(3.0)
    now.reference_ms = dict(list(now.reference_ms.items())[:4])
    msg = check_message(table_with(synthetic(), tiny_space), now, "t.json", "R")
    assert "3.00x" in msg and "4 of 22 timed" in msg


def test_the_check_warns_at_twice_the_reference_times_and_not_at_five_percent(tiny_space):
    now = synthetic()
    msg = check_message(table_with(synthetic(2.0), tiny_space), now, "t.json", "REPROFILE")
    assert msg is not None and "0.50x the table's time" in msg and "re-profile with: REPROFILE" in msg
    assert "\n" not in msg and "hardware.calibrate=true" in msg
    assert check_message(table_with(synthetic(1.05), tiny_space), now, "t.json", "REPROFILE") is None
    assert check_message(table_with(synthetic(1 / 1.05), tiny_space), now, "t.json", "REPROFILE") is None
    slower = check_message(table_with(synthetic(1.0), tiny_space), synthetic(1.2), "t.json", "REPROFILE")
    assert slower is not None and "1.20x" in slower
    assert "has no fingerprint" in check_message(table_with(None, tiny_space), now, "t.json", "REPROFILE")


def test_a_search_start_prints_the_table_it_uses_and_one_warning_line(tiny_space, tmp_path, monkeypatch, capsys):
    hw = {"name": "cpu_x86_2t", "threads": 2, "table_dir": str(tmp_path)}
    shape = InputShape(8, 1, 10)
    table_with(synthetic(2.0), tiny_space).save(tmp_path / "r8_c1_n10.json")
    monkeypatch.setattr(fingerprint, "current", lambda *a, **k: (synthetic(), True))
    table = load_latency_table(hw, tiny_space.config, shape, required=True)
    out, err = capsys.readouterr()
    assert f"latency table: {tmp_path / 'r8_c1_n10.json'}" in out
    assert len(err.strip().splitlines()) == 1 and "0.50x" in err and "profile.remeasure=true" in err
    assert table.ops == LatencyTable.load(tmp_path / "r8_c1_n10.json").ops  # uncalibrated: as measured
    table_with(synthetic(1.05), tiny_space).save(tmp_path / "r8_c1_n10.json")
    load_latency_table(hw, tiny_space.config, shape, required=True)
    assert capsys.readouterr().err == ""


def test_a_gpu_table_is_checked_against_the_gpu_and_driver(monkeypatch, tiny_space):
    """No GPU here: the device query is stood in; the comparison and the message are what is tested."""
    monkeypatch.setattr(fingerprint, "gpu_info", lambda device: {"gpu_name": "NVIDIA H200", "gpu_driver": "570.86",
                                                                 "cuda": "13.0"})
    here = fingerprint.machine_info(torch.device("cuda"))
    assert here["gpu_name"] == "NVIDIA H200" and here["gpu_driver"] == "570.86"
    then = synthetic(machine={**here, "gpu_name": "NVIDIA H100 80GB HBM3", "gpu_driver": "550.54"})
    now = synthetic(machine=here)
    cmp = compare(then, now)
    assert cmp.off and set(cmp.machine_diff) == {"gpu_name", "gpu_driver"} and cmp.ratio == pytest.approx(1.0)
    from tests.conftest import compose_config

    hw = HardwareSettings.from_dict(compose_config(["hardware=h200"]).hardware)
    used = use_table(table_with(then, tiny_space), hw, "h200.json", "REPROFILE", now=now)
    assert "machine differs (gpu_name: table 'NVIDIA H100 80GB HBM3', here 'NVIDIA H200'" in used.warning
    same = use_table(table_with(synthetic(machine=here), tiny_space), hw, "h200.json", "REPROFILE", now=now)
    assert same.warning is None


def _probes(table, space, scale: float, offset: float = 0.0, networks: int = 6, noise: float = 0.0):
    """Probe timings of a machine that runs each path at ``scale`` x the table's sum + ``offset`` ms."""
    rng = np.random.default_rng(1)
    sums = [p for _ in range(networks) for p in table.path_ms(space.sample(rng))]
    return sums, [(scale * p + offset) * rng.uniform(1 - noise, 1 + noise) for p in sums], networks


def test_calibration_recovers_a_known_factor(tiny_space, tmp_path):
    table = table_with(synthetic(), tiny_space)
    p, m, _ = _probes(table, tiny_space, 1.7)
    cal = fit(p, m)
    assert cal.factor == pytest.approx(1.7, rel=1e-6) and cal.offset_ms == 0.0 and cal.fit_mape_pct < 1e-4
    # a fixed cost per path that the operators' sum misses: factor and offset both recovered
    cal = fit(*_probes(table, tiny_space, 1.3, 0.02)[:2])
    assert cal.factor == pytest.approx(1.3, rel=1e-4) and cal.offset_ms == pytest.approx(0.02, rel=1e-3)
    # a negative time per path cannot exist: never fitted, the factor alone carries the table
    assert fit(*_probes(table, tiny_space, 0.5, -0.002)[:2]).offset_ms == 0.0
    # 3% noise on each path: the factor within 3%
    assert fit(*_probes(table, tiny_space, 0.4, noise=0.03)[:2]).factor == pytest.approx(0.4, rel=0.03)
    with pytest.raises(LatencyTableError, match="at least 3"):
        fit([1.0, 2.0], [1.0, 2.0])

    scaled, cal = calibrate(table, tiny_space, HardwareSettings.from_dict(FAST), synthetic(2.5),
                            source="shipped.json", probes=_probes(table, tiny_space, 2.5, 0.1))
    genome = tiny_space.sample(np.random.default_rng(3))
    assert scaled.path_ms(genome) == pytest.approx([2.5 * p + 0.1 for p in table.path_ms(genome)], rel=1e-3)
    assert scaled.meta["calibration"]["factor"] == pytest.approx(2.5) and scaled.meta["calibration"]["source"] == \
        "shipped.json"
    assert scaled.meta["calibration"]["networks"] == 6 and "validation" not in scaled.meta
    assert check_message(scaled, synthetic(2.5), "c.json", "R") is None  # the copy describes this machine now
    # a table without a fingerprint is calibrated all the same: the probes, not the reference set, carry it
    bare, cal = calibrate(table_with(None, tiny_space), tiny_space, HardwareSettings.from_dict(FAST),
                          probes=_probes(table, tiny_space, 0.8))
    assert cal.factor == pytest.approx(0.8) and "fingerprint" not in bare.meta


def test_probe_networks_are_timed_here_and_recover_a_distorted_table(tiny_space, tmp_path):
    """A real table of this machine, every entry x3 (a slower machine's table): timing the probe networks here
    brings the factor back near 1/3 (within what a summation misses, and timing noise with few repeats)."""
    hw = HardwareSettings.from_dict({**FAST, "repeats": 5, "passes": 2})
    table = profile_space(tiny_space.config, InputShape(4, 1, 5), hw, tmp_path / "t.json", progress=False)
    stale = LatencyTable(dict(table.meta), {s: replace(o, median_ms=3 * o.median_ms) for s, o in table.ops.items()})
    threads = torch.get_num_threads()
    scaled, cal = calibrate(stale, tiny_space, hw)
    assert torch.get_num_threads() == threads  # the table's thread count held while timing, not after
    assert cal.networks == 8 and cal.paths >= 8 and 0.15 < cal.factor < 0.6 and cal.seconds > 0
    assert all(o.median_ms == pytest.approx(cal.factor * 3 * table.ops[s].median_ms) for s, o in scaled.ops.items())


def test_hardware_calibrate_writes_the_copy_beside_the_users_tables(tiny_space, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AEBNAS_CACHE_DIR", str(tmp_path / "cache"))
    hw = HardwareSettings.from_dict({"name": "cpu_x86_2t", "calibrate": True})
    shape = InputShape(8, 1, 10)
    src = tmp_path / "t.json"
    table_with(synthetic(), tiny_space).save(src)
    table = LatencyTable.load(src)
    used = use_table(table, hw, str(src), "R", str(calibrated_table_path(hw, shape)), now=synthetic(0.5),
                     probes=_probes(table, tiny_space, 0.5))
    assert used.warning is None and used.calibration.factor == pytest.approx(0.5)
    written = tmp_path / "cache" / "latency" / "cpu_x86_2t" / "r8_c1_n10.calibrated.json"
    assert used.calibrated_path == str(written) and written.parent == user_table_path(hw, shape).parent
    assert LatencyTable.load(written).meta["calibration"]["factor"] == pytest.approx(0.5)
    assert "factor 0.500" in used.describe() and str(written) in used.describe()
    with pytest.raises(ValueError, match="needs the space"):
        use_table(table, hw, str(src), "R", now=synthetic(0.5))


@pytest.mark.slow
def test_profile_validate_and_calibrate_write_nothing_under_the_package(tiny_space, tmp_path):
    """A config directory with its own 'shipped' fingerprinted table stands in for the package's, so the
    calibrated path runs whatever the package ships; neither it nor the package may change."""
    conf = tmp_path / "conf"
    shutil.copytree(PACKAGE / "conf", conf)
    shipped = conf / "hardware" / "tables" / "cpu_x86_2t" / "r8_c1_n10.json"
    table_with(synthetic(), tiny_space).save(shipped)
    before, before_conf = _package_state(), _state(conf)
    env = {**os.environ, "AEBNAS_CACHE_DIR": str(tmp_path / "cache"), "AEBNAS_CONFIG_DIR": str(conf),
           "PYTHONUNBUFFERED": "1"}
    common = [sys.executable, "-m", "aebnas.cli.profile", "hardware=cpu_x86_2t", "experiment=quickstart",
              "profile.validate=true", "profile.networks=2", "hardware.threads=1", "hardware.warmup=0", "hardware.repeats=1",
              "hardware.passes=1", "progress=false"]
    for i, extra in enumerate((["hardware.calibrate=true"], [])):
        proc = subprocess.run([*common, f"hydra.run.dir={tmp_path / f'run{i}'}", *extra], capture_output=True,
                              text=True, cwd=tmp_path, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"read {shipped} (shipped, read-only)" in proc.stdout
    assert _package_state() == before and _state(conf) == before_conf
    calibrated = tmp_path / "cache" / "latency" / "cpu_x86_2t" / "r8_c1_n10.calibrated.json"
    report = json.loads((tmp_path / "run0" / "validation.json").read_text())
    assert report["calibration"]["factor"] > 0 and report["table"] == str(shipped)
    assert report["calibrated_table"] == str(calibrated)
    assert LatencyTable.load(calibrated).meta["validation"]["networks"] == 2


def _state(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts}


def _package_state() -> dict[str, str]:
    return _state(PACKAGE)
