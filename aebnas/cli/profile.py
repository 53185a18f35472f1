"""``aebnas-profile``: measure this device into a latency lookup table, optionally check it on real networks."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from aebnas.cli.common import (calibrated_table_path, check_group_choices, check_overrides, config_dir, group_options,
                               profile_command, report_table, require_config_dir, shipped_table_path, user_errors,
                               user_table_path)
from aebnas.cost.calibration import use_table
from aebnas.cost.latency import InputShape
from aebnas.cost.latency_check import validate_table
from aebnas.cost.profiler import HardwareSettings, ProfileSettings, profile_space
from aebnas.atomic_write import write_text_atomic
from aebnas.space import SearchSpace, SpaceSettings
from aebnas.config_checks import ConfigError

log = logging.getLogger("aebnas")


def input_shape(options: ProfileSettings, dataset: dict[str, Any]) -> InputShape:
    """The shape named in ``profile.*``, or the dataset's (loading it once) when none is named."""
    if options.resolution is None:  # ProfileSettings has checked: all three given, or none
        from aebnas.data import load_dataset

        data = load_dataset(dataset)
        return InputShape(data.resolution, data.in_channels, data.num_classes)
    return InputShape(options.resolution, options.channels, options.num_classes)  # type: ignore[arg-type]


def profile(cfg: DictConfig, run_dir: Path) -> Path:
    """Fill (or complete) the user's table, then validate it if asked; returns the path of the table profiled.

    Shipped tables are read, never written: what this machine measures, validates or calibrates goes to the
    user's table directory (``hardware.table_dir``, else the user cache) and the run directory.
    """
    plain = OmegaConf.to_container(cfg, resolve=True)
    if plain.get("hardware") is None:
        raise ConfigError(f"hardware: name the device to measure, e.g. hardware=cpu_x86_2t (configs: "
                          f"{', '.join(group_options('hardware'))}; copy one for a new device)")
    options = ProfileSettings.from_dict(plain["profile"])
    hw = HardwareSettings.from_dict(plain["hardware"])
    space = SpaceSettings.from_dict(plain["space"])
    shape = input_shape(options, plain["dataset"])
    user, shipped = user_table_path(hw, shape), shipped_table_path(hw, shape)
    base = shipped if not hw.table_dir and not options.remeasure else None
    progress = bool(plain.get("progress", True))
    start = time.perf_counter()
    measured: list[str] = []
    table = profile_space(space, shape, hw, user, progress=progress, on_measured=measured.append, base=base,
                          fresh=bool(options.remeasure))
    source = user if user.exists() else shipped
    where = f"wrote {user}" if measured else f"read {source}" + (" (shipped, read-only)" if source == shipped else "")
    print(f"{len(measured)} operators measured in {time.perf_counter() - start:.0f}s "
          f"({len(table.ops)} in the table) on {table.meta['device_name']}; {where}")
    if options.validate:
        run_dir.mkdir(parents=True, exist_ok=True)
        search_space = SearchSpace(space)
        used = use_table(table, hw, str(source), profile_command(hw, space.name, shape, remeasure=True),
                         str(calibrated_table_path(hw, shape)), space=search_space)
        report_table(used)
        table = used.table
        result = validate_table(table, search_space, hw, options.networks, seed=int(plain.get("seed", 0)),
                                progress=progress)
        summary = result["summary"]
        calibration = asdict(used.calibration) if used.calibration is not None else None
        report = {"table": str(source), "calibrated_table": used.calibrated_path, "calibration": calibration,
                  "reference_ratio": used.comparison.ratio if used.comparison is not None else None,
                  "hardware": hw.name, "space": space.name, "shape": shape.__dict__, "meta": table.meta, **result}
        write_text_atomic(run_dir / "validation.json", json.dumps(report, indent=1))
        from aebnas.analysis.plots import plot_latency_check

        plot_latency_check(pd.DataFrame(result["rows"]), summary, run_dir / "validation.png",
                           title=f"{hw.name}: {space.name} at {shape.describe()}"
                                 + (f", calibrated x{used.calibration.factor:.2f}" if used.calibration else ""))
        overhead = summary["fitted_overhead_ms"]
        table.meta["validation"] = {"space": space.name, "date": time.strftime("%Y-%m-%d"), **summary}
        # the validation belongs to the copy validated: the calibrated one, or the user's own table
        target = Path(used.calibrated_path) if used.calibrated_path else user
        written = [run_dir / "validation.json", run_dir / "validation.png"]
        if used.calibrated_path or source == user:
            table.save(target)
            written.insert(0, target)
        a, f = summary["all_paths"], summary["final_paths"]
        print(f"validation on {summary['networks']} random networks ({summary['paths']} exit paths): "
              f"MAPE {a['mape_pct']:.1f}%, Spearman rho {a['spearman_rho']:.3f} (MACs alone: rho "
              f"{a['macs_spearman_rho']:.3f}); full networks: MAPE {f['mape_pct']:.1f}%, rho {f['spearman_rho']:.3f}; "
              f"with a further {overhead:+.3f} ms per path: MAPE {a['mape_pct_with_overhead']:.1f}%")
        print("wrote " + ", ".join(str(p) for p in written))
    return user if user.exists() else source


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="profile")
def _hydra_main(cfg: DictConfig) -> None:
    with user_errors("aebnas-profile"):
        profile(cfg, Path(HydraConfig.get().runtime.output_dir))


def main() -> None:
    require_config_dir("aebnas-profile")
    check_group_choices("aebnas-profile", sys.argv[1:])
    check_overrides("aebnas-profile", sys.argv[1:], config_name="profile")
    _hydra_main()


if __name__ == "__main__":
    main()
