"""Latency lookup tables: operator coverage, prediction by summation, profiling that resumes, clear refusals."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from aebnas.cost import expected_cost, network_cost, network_ops, space_ops
from aebnas.cost.latency import InputShape, LatencyTable, LatencyTableError, OpLatency
from aebnas.cost.latency_check import validate_table
from aebnas.cost.profiler import HardwareSettings, op_module, profile_space
from aebnas.config_checks import ConfigError

ROOT = Path(__file__).resolve().parents[1]
HAND_GENOME = "k3e2/k3e2/k3e2/k3e2/k3e2|t0.9:conv8k3|off|off|off"
# The hand genome's operators at an 8x8x1 input, 10 classes, with made-up milliseconds.
HAND_TABLE_MS = {
    "stem_r8_c1-8_k3_s1_hswish": 0.1,
    "mbconv_r8_c8-8_k3_e2_s1_hswish": 0.2,
    "exit_conv_r8_c8-8_k3_pnone_hswish": 0.03,
    "classifier_r8_c8-10": 0.01,
    "mbconv_r8_c8-16_k3_e2_s2_hswish": 0.4,
    "mbconv_r4_c16-24_k3_e2_s1_hswish": 0.5,
    "mbconv_r4_c24-32_k3_e2_s2_hswish": 0.6,
    "mbconv_r2_c32-48_k3_e2_s1_hswish": 0.7,
    "final_conv_r2_c48-96_hswish": 0.05,
    "classifier_r2_c96-10": 0.02,
}
FAST = {"name": "test_cpu", "threads": 1, "warmup": 0, "repeats": 1, "passes": 1}


def hand_table(overhead_ms: float = 0.0) -> LatencyTable:
    meta = {"hardware": "hand", "space": "hand", "resolution": 8, "channels": 1, "num_classes": 10,
            "overhead_ms": overhead_ms}
    return LatencyTable(meta, {sig: OpLatency(0, 0, ms, ms, 0.0, 1) for sig, ms in HAND_TABLE_MS.items()})


def test_network_operators_are_named_by_hand(hand_space):
    ops = network_ops(hand_space.parse(HAND_GENOME), 10, 1, 8)
    assert [op.signature for op in ops] == list(HAND_TABLE_MS)[:2] + list(HAND_TABLE_MS)[4:8] + \
        list(HAND_TABLE_MS)[2:4] + list(HAND_TABLE_MS)[8:]
    assert [len(s) for s in ops.segments] == [2, 4] and [len(h) for h in ops.heads] == [2, 2]


def test_prediction_is_the_sum_of_table_entries(hand_space):
    g = hand_space.parse(HAND_GENOME)
    paths = hand_table().path_ms(g)
    assert paths == pytest.approx((0.1 + 0.2 + 0.03 + 0.01, 0.34 + 0.4 + 0.5 + 0.6 + 0.7 + 0.05 + 0.02))
    assert hand_table().static_ms(g) == pytest.approx(0.1 + 0.2 + 0.4 + 0.5 + 0.6 + 0.7 + 0.05 + 0.02)
    assert expected_cost([0.75, 0.25], paths) == pytest.approx(0.75 * 0.34 + 0.25 * 2.61)
    assert hand_table(overhead_ms=0.1).path_ms(g) == pytest.approx((0.44, 2.71))


@pytest.mark.parametrize("space_name, res, channels", [("tiny_space", 8, 1), ("mbv3_space", 32, 3)])
def test_space_operators_cover_every_sampled_genome(request, space_name, res, channels):
    space = request.getfixturevalue(space_name)
    needed = space_ops(space.config, 10, channels, res)
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert {op.signature for op in network_ops(space.sample(rng), 10, channels, res)} <= set(needed)
    for g in (space.largest(), space.largest(with_exits=True), space.smallest()):
        assert {op.signature for op in network_ops(g, 10, channels, res)} <= set(needed)


@pytest.mark.parametrize("exit_heads", ["conv16k1+avg-conv16k1", "growing"])
def test_fixed_exit_heads_need_only_their_own_operators(exit_heads):
    from aebnas.space import SearchSpace, SpaceSettings
    from tests.conftest import space_config

    cfg = SpaceSettings.from_dict({**space_config("tiny").to_dict(), "exit_heads": exit_heads})
    needed = space_ops(cfg, 10, 1, 8)
    searched = space_ops(space_config("tiny"), 10, 1, 8)
    assert sum(o.kind == "exit_layer" for o in needed.values()) < sum(o.kind == "exit_layer" for o in searched.values())
    space, rng = SearchSpace(cfg), np.random.default_rng(2)
    for _ in range(50):
        assert {op.signature for op in network_ops(space.sample(rng), 10, 1, 8)} <= set(needed)
    if exit_heads.startswith("conv16k1"):  # the EDANAS head after stage 1 (8 channels at 8x8), by hand
        assert {"exit_conv_r8_c8-16_k1_pnone_hswish", "exit_conv_r8_c16-16_k1_pavg_hswish",
                "classifier_r4_c16-10"} <= set(needed)


def test_profiled_module_of_every_operator_costs_its_macs(tiny_space):
    """What the profiler times is the module the network runs: FlopCounter agrees with each op's MACs."""
    for op in space_ops(tiny_space.config, 10, 1, 8).values():
        module = op_module(op).eval()
        x = torch.randn(1, op.c_in, op.resolution, op.resolution)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            y = module(x)
        assert counter.get_total_flops() // 2 == op.macs, op.signature
        assert y.shape[1] == op.c_out and (y.dim() == 2 or y.shape[-1] == op.out_resolution), op.signature


def test_network_cost_is_the_sum_over_operators(mbv3_space):
    g = mbv3_space.sample(np.random.default_rng(5))
    cost = network_cost(g, 100, 3, 32)
    assert cost.total_macs == sum(op.macs for op in network_ops(g, 100, 3, 32))


def test_profiling_resumes_where_it_was_interrupted(tiny_space, tmp_path):
    path = tmp_path / "table.json"
    shape = InputShape(8, 1, 10)
    n_ops = len(space_ops(tiny_space.config, 10, 1, 8))
    hw = HardwareSettings.from_dict(FAST)
    first: list[str] = []

    def interrupt_after_50(sig):
        first.append(sig)
        if len(first) == 50:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        profile_space(tiny_space.config, shape, hw, path, progress=False, on_measured=interrupt_after_50)
    saved = LatencyTable.load(path)
    assert set(saved.ops) == set(first) and len(first) == 50
    kept = {sig: saved.ops[sig] for sig in first}

    second: list[str] = []
    table = profile_space(tiny_space.config, shape, hw, path, progress=False, on_measured=second.append)
    assert len(second) == n_ops - 50 and not set(second) & set(first)
    assert LatencyTable.load(path).missing(tiny_space.config, shape) == []
    assert all(table.ops[sig] == kept[sig] for sig in first)  # measured once, never again
    assert table.meta["batch_size"] == 1 and table.meta["threads"] == 1 and table.meta["torch"] == torch.__version__
    assert all(entry.count == 1 for entry in table.ops.values())

    with pytest.raises(LatencyTableError, match="measured with batch_size=1, this profile runs with batch_size=4"):
        profile_space(tiny_space.config, shape, HardwareSettings.from_dict({**FAST, "batch_size": 4}), path,
                      progress=False)


def test_a_foreign_or_incomplete_table_is_refused_with_the_command_that_fills_it(tiny_space, mbv3_space):
    ops = space_ops(tiny_space.config, 10, 1, 8)
    meta = {"hardware": "cpu_x86_2t", "space": "tiny", "resolution": 8, "channels": 1, "num_classes": 10}
    table = LatencyTable(meta, {s: OpLatency(o.macs, 0, 1.0, 1.0, 0.0, 1) for s, o in ops.items()})
    table.check_covers(tiny_space.config, InputShape(8, 1, 10), "FILL")  # complete: no error
    with pytest.raises(LatencyTableError) as info:
        table.check_covers(mbv3_space.config, InputShape(32, 3, 10), "aebnas-profile hardware=cpu_x86_2t ...")
    msg = str(info.value)
    assert "was profiled for space 'tiny' at 8x8x1 input, 10 classes" in msg and "uses space 'mbv3_32'" in msg
    needed = space_ops(mbv3_space.config, 10, 3, 32)
    assert f"lacks {len(set(needed) - set(ops))} of the {len(needed)} operators" in msg
    assert "fill it with: aebnas-profile" in msg
    dropped = sorted(ops)[7]
    del table.ops[dropped]
    with pytest.raises(LatencyTableError, match=f"lacks 1 of the {len(ops)} operators it needs \\(e.g. {dropped}\\); "
                                                "complete it with: FILL"):
        table.check_covers(tiny_space.config, InputShape(8, 1, 10), "FILL")


def test_table_files_round_trip_and_bad_files_are_named(tmp_path):
    table = hand_table(0.25)
    table.save(tmp_path / "t.json")
    again = LatencyTable.load(tmp_path / "t.json")
    assert again.ops == table.ops and again.meta == table.meta
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LatencyTableError, match="bad.json' is not valid JSON"):
        LatencyTable.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(LatencyTableError, match="is not an aebnas latency table"):
        LatencyTable.load(tmp_path / "other.json")


@pytest.mark.parametrize("cfg, fragment", [
    ({"name": "x", "device": "tpu"}, "hardware.device"),
    ({"name": "x", "batch_size": 0}, "hardware.batch_size"),
    ({"name": "x", "dtype": "bfloat16"}, "hardware.dtype: bfloat16 is for CUDA"),
    ({"name": "x", "repeat": 3}, "hardware.repeat: unknown key"),
])
def test_bad_hardware_config_names_the_field(cfg, fragment):
    with pytest.raises(ConfigError, match=fragment):
        HardwareSettings.from_dict(cfg)


def test_validation_measures_every_exit_path_and_compares(tiny_space, tmp_path):
    shape = InputShape(8, 1, 10)
    hw = HardwareSettings.from_dict({**FAST, "repeats": 2, "passes": 2})
    table = profile_space(tiny_space.config, shape, hw, tmp_path / "t.json", progress=False)
    assert all(entry.count == 4 for entry in table.ops.values())  # 2 calls in each of 2 passes
    result = validate_table(table, tiny_space, hw, n_networks=4, seed=1, progress=False)
    rows, summary = result["rows"], result["summary"]
    rng = np.random.default_rng(1)
    genomes = [tiny_space.sample(rng) for _ in range(4)]
    assert len(rows) == sum(len(g.active_exits) + 1 for g in genomes) == summary["paths"]
    for g in genomes:
        mine = [r for r in rows if r["genome"] == g.to_text()]
        assert [r["predicted_ms"] for r in mine] == pytest.approx(list(table.path_ms(g)))
        assert [r["macs"] for r in mine] == list(network_cost(g, 10, 1, 8).path_macs)
        assert all(r["measured_ms"] > 0 for r in mine)
    assert summary["networks"] == 4 and np.isfinite(summary["all_paths"]["mape_pct"])


SHIPPED = ROOT / "aebnas" / "conf" / "hardware" / "tables" / "cpu_x86_2t" / "r8_c1_n10.json"


def test_shipped_quickstart_table_covers_the_quickstart_space(tiny_space):
    table = LatencyTable.load(SHIPPED)
    assert table.missing(tiny_space.config, InputShape(8, 1, 10)) == []
    assert table.meta["batch_size"] == 1 and table.meta["threads"] == 2 and table.meta["hardware"] == "cpu_x86_2t"
    assert "validation" in table.meta


def _run(tmp_path, module, *args):
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_quickstart_searches_against_latency(tmp_path):
    from tests.test_fingerprint import _package_state

    before = _package_state()
    proc = _run(tmp_path, "aebnas.cli.search", f"hydra.run.dir={tmp_path / 'run'}", "experiment=quickstart",
                "hardware=cpu_x86_2t", "search.objective=avg_latency", "search.pop_size=3", "search.generations=1",
                "trainer.epochs=1", "progress=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    from aebnas.analysis import load_run

    run = load_run(tmp_path / "run")
    ev = run.evaluations
    assert (ev["objective_1"] == ev["expected_latency_ms"]).all()
    table = LatencyTable.load(SHIPPED)
    from aebnas.space import SearchSpace
    from tests.conftest import space_config

    space = SearchSpace(space_config("tiny"))
    for _, r in ev.iterrows():
        g = space.parse(r["key"])
        assert r["path_latency_ms"] == pytest.approx(list(table.path_ms(g)))
        assert r["expected_latency_ms"] == pytest.approx(expected_cost(r["exit_rates"], r["path_latency_ms"]))
    # the quickstart trains its Pareto networks further: they are priced again from their own exit rates
    assert (run.pareto["final_epochs"] == 4).all()
    for _, r in run.pareto.iterrows():
        assert r["path_latency_ms"] == pytest.approx(list(table.path_ms(space.parse(r["genome"]))))
        assert r["expected_latency_ms"] == pytest.approx(expected_cost(r["exit_rates"], r["path_latency_ms"]))
        assert r["test_expected_latency_ms"] == pytest.approx(expected_cost(r["test_exit_rates"], r["path_latency_ms"]))
        assert r["search_expected_latency_ms"] == pytest.approx(ev.set_index("key").loc[r["search_key"], "expected_latency_ms"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "E[lat]" in proc.stdout and summary["hardware"] == "cpu_x86_2t"
    assert f"latency table: {SHIPPED}" in proc.stdout and summary["latency_table"] == str(SHIPPED)
    assert _package_state() == before  # a search writes nothing under the package
    assert LatencyTable.load(tmp_path / "run" / "latency_table.json").ops == table.ops  # kept for a resume


@pytest.mark.parametrize("module, args, fragment", [
    ("aebnas.cli.search", ["experiment=quickstart", "search.objective=avg_latency"],
     "hardware: search.objective=avg_latency and latency budgets need a device, add hardware=<name>"),
    ("aebnas.cli.search", ["experiment=quickstart", "hardware=cpu_x86_2t", "search.objective=avg_latency",
                           "hardware.table_dir=nowhere"],
     "measure it on that device with: aebnas-profile hardware=cpu_x86_2t space=tiny profile.resolution=8 "
     "profile.channels=1 profile.num_classes=10"),
    ("aebnas.cli.search", ["experiment=quickstart", "hardware=cpu_x86_2t", "search.objective=avg_latency",
                           "space=mbv3_32"], "lacks"),
    ("aebnas.cli.search", ["hardware=gpu9000"], "hardware: no config 'gpu9000'"),
    ("aebnas.cli.profile", [], "hardware: name the device to measure, e.g. hardware=cpu_x86_2t"),
    ("aebnas.cli.profile", ["hardware=cpu_x86_2t", "profile.resolution=8"],
     "profile.channels: set resolution, channels and num_classes together"),
    ("aebnas.cli.profile", ["hardware=cpu_x86_2t", "hardware.threads=0"], "hardware.threads"),
    ("aebnas.cli.profile", ["hardware=cpu_x86_2t", "profile.calibrate=true"], "use hardware.calibrate=true"),
])
def test_latency_inputs_get_one_line(tmp_path, module, args, fragment):
    proc = _run(tmp_path, module, f"hydra.run.dir={tmp_path / 'run'}", *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert not (tmp_path / "run" / "evaluations.csv").exists()


def test_profile_cli_fills_a_table_then_validates_it(tmp_path):
    proc = _run(tmp_path, "aebnas.cli.profile", f"hydra.run.dir={tmp_path / 'run'}", "hardware=cpu_x86_2t",
                f"hardware.table_dir={tmp_path / 'tables'}", "hardware.warmup=0", "hardware.repeats=1",
                "hardware.threads=1", "space=tiny", "profile.resolution=4", "profile.channels=3",
                "profile.num_classes=5", "profile.validate=true", "profile.networks=3",
                "progress=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = LatencyTable.load(tmp_path / "tables" / "r4_c3_n5.json")
    report = json.loads((tmp_path / "run" / "validation.json").read_text())
    assert report["summary"]["networks"] == 3 and (tmp_path / "run" / "validation.png").stat().st_size > 0
    assert table.meta["validation"]["paths"] == report["summary"]["paths"]
    assert table.overhead_ms == 0.0  # a validation measures the table, it does not change its predictions
    assert "fingerprint" in table.meta and report["table"] == str(tmp_path / "tables" / "r4_c3_n5.json")
    assert "operators measured" in proc.stdout and "Spearman rho" in proc.stdout
    assert f"wrote {tmp_path / 'tables' / 'r4_c3_n5.json'}" in proc.stdout


@pytest.mark.parametrize("path", sorted((ROOT / "aebnas" / "conf" / "hardware").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_hardware_config_is_valid_and_named_after_its_file(path):
    from tests.conftest import compose_config

    cfg = compose_config([f"hardware={path.stem}"]).hardware  # the preset over the schema's defaults
    hw = HardwareSettings.from_dict(cfg)
    assert hw.name == path.stem  # the table directory and the config name are the same word
