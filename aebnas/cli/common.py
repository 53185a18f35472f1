"""What every entry point shares: where conf/ lives and how a bad input is reported."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, ContextManager, Mapping

from aebnas.cost.calibration import TableInUse, use_table
from aebnas.cost.fingerprint import cache_root
from aebnas.cli.config_schema import register_schemas
from aebnas.cli.errors import BASE_USER_ERRORS, one_line_errors
from aebnas.cost.latency import InputShape, LatencyTable, LatencyTableError
from aebnas.cost.profiler import HardwareSettings
from aebnas.data import DatasetError
from aebnas.runtime.export_run import ExportCheckError
from aebnas.search.executors import WorkerStartError
from aebnas.search.rundir_lock import RunDirBusy
from aebnas.space import SearchSpace, SpaceSettings
from aebnas.config_checks import ConfigError

register_schemas()  # every entry point composes through this module: the groups' ``base`` defaults must exist


def config_dir() -> str:
    """``$AEBNAS_CONFIG_DIR`` if set, else the ``conf/`` shipped inside the package (any install, wheel or editable)."""
    env = os.environ.get("AEBNAS_CONFIG_DIR")
    if env:
        return str(Path(env).resolve())
    return str(Path(__file__).resolve().parents[1] / "conf")


def require_config_dir(prog: str) -> None:
    """A config directory without config.yaml (a wrong ``AEBNAS_CONFIG_DIR``): say so in one line."""
    if not (Path(config_dir()) / "config.yaml").exists():
        print(f"{prog}: error: no config.yaml in '{config_dir()}'; set AEBNAS_CONFIG_DIR to a directory "
              "holding config.yaml, or unset it to use the configs shipped with aebnas", file=sys.stderr)
        sys.exit(2)


def group_options(group: str) -> list[str]:
    """The config names a Hydra group offers (``conf/<group>/*.yaml``), sorted, for error messages."""
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


def check_group_choices(prog: str, argv: list[str]) -> None:
    """Refuse ``group=name`` overrides naming no config file, in one line (Hydra's own report is a page)."""
    root = Path(config_dir())
    for arg in argv:
        if "=" not in arg or arg.startswith(("+", "~", "hydra")):
            continue
        key, value = arg.split("=", 1)
        key = key.removeprefix("++")
        group = root / key
        if "." in key or not group.is_dir() or "," in value or value in ("null", ""):
            continue
        if not (group / f"{value}.yaml").exists():
            options = group_options(key)
            print(f"{prog}: error: {key}: no config '{value}'; choose one of: {', '.join(options)}", file=sys.stderr)
            sys.exit(2)


# Settings that were removed, and what does their job now.
REMOVED_SETTINGS = {"profile.calibrate": "hardware.calibrate=true (it fits the per-path offset too, on probe "
                                         "networks apart from the validation's)"}


def check_overrides(prog: str, argv: list[str], config_name: str = "config") -> None:
    """Compose the config once up front so Hydra's multi-line override errors become one line."""
    if any(a.startswith("-") for a in argv):
        return  # Hydra's own flags (--multirun sweeps, --cfg, --help ...) are Hydra's to handle
    for arg in argv:
        key = arg.lstrip("+~").split("=", 1)[0]
        if key in REMOVED_SETTINGS:
            print(f"{prog}: error: {key} was removed; use {REMOVED_SETTINGS[key]}", file=sys.stderr)
            sys.exit(2)
    overrides = [a for a in argv if not a.startswith(("hydra.", "hydra/", "+hydra", "~hydra"))]
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, OverrideParseException

    try:
        with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
            compose(config_name, overrides=overrides)
    except OverrideParseException as exc:
        bad = str(exc).splitlines()[0].split(": ", 1)[-1]
        print(f"{prog}: error: override '{bad}' cannot be parsed; quote values with special characters, "
              "e.g. 'dataset.data_dir=\"~/data\"' (see Hydra's override grammar)", file=sys.stderr)
        sys.exit(2)
    except ConfigCompositionException as exc:
        print(f"{prog}: error: " + "; ".join(line.strip().rstrip(".") for line in str(exc).splitlines() if line.strip()),
              file=sys.stderr)
        sys.exit(2)


def shipped_table_path(hw: HardwareSettings, shape: InputShape) -> Path:
    """``conf/hardware/tables/<hardware>/r<res>_c<channels>_n<classes>.json``: read, never written."""
    return Path(config_dir()) / "hardware" / "tables" / hw.name / _table_file(shape)


def user_table_path(hw: HardwareSettings, shape: InputShape) -> Path:
    """Where this user's profile of the device lives and is written: ``hardware.table_dir`` if set, else
    ``$AEBNAS_CACHE_DIR/latency/<hardware>/`` (or ``~/.cache/aebnas/latency/<hardware>/``): never the package."""
    root = Path(hw.table_dir).expanduser() if hw.table_dir else cache_root() / "latency" / hw.name
    return root / _table_file(shape)


def calibrated_table_path(hw: HardwareSettings, shape: InputShape) -> Path:
    """The calibrated copy, beside the user's copy: ``r<res>_c<channels>_n<classes>.calibrated.json``."""
    return user_table_path(hw, shape).with_suffix(".calibrated.json")


def latency_table_path(hw: HardwareSettings, shape: InputShape) -> Path:
    """The table a run uses: the user's own profile if there is one, else the shipped table (if any), else where
    a profile would write it."""
    user = user_table_path(hw, shape)
    if user.exists() or hw.table_dir:
        return user
    shipped = shipped_table_path(hw, shape)
    return shipped if shipped.exists() else user


def _table_file(shape: InputShape) -> str:
    return f"r{shape.resolution}_c{shape.channels}_n{shape.num_classes}.json"


def profile_command(hw: HardwareSettings, space_name: str, shape: InputShape, remeasure: bool = False) -> str:
    """The command that measures exactly the table a search with this device, space and input needs."""
    return (f"aebnas-profile hardware={hw.name} space={space_name} profile.resolution={shape.resolution} "
            f"profile.channels={shape.channels} profile.num_classes={shape.num_classes}"
            + (" profile.remeasure=true" if remeasure else ""))


def load_latency_table(hardware: Mapping[str, Any] | None, space: SpaceSettings, shape: InputShape,
                       required: bool) -> LatencyTable | None:
    """The device's table for this space and input, checked to price every candidate and checked against this
    machine (one warning line if it moved; scaled to it with ``hardware.calibrate``); None without hardware."""
    if hardware is None:
        if required:
            raise ConfigError(f"hardware: search.objective=avg_latency and latency budgets need a device, add "
                              f"hardware=<name> (one of: {', '.join(group_options('hardware'))})")
        return None
    hw = HardwareSettings.from_dict(hardware)
    path = latency_table_path(hw, shape)
    fill = profile_command(hw, space.name, shape)
    if not path.exists():
        raise LatencyTableError(f"hardware={hw.name}: no latency table for {shape.describe()} at '{path}'; "
                                f"measure it on that device with: {fill}")
    table = LatencyTable.load(path)
    table.check_covers(space, shape, fill, where=str(path))
    used = use_table(table, hw, str(path), profile_command(hw, space.name, shape, remeasure=True),
                     str(calibrated_table_path(hw, shape)), space=SearchSpace(space))
    report_table(used)
    used.table.meta["loaded_from"] = str(path)
    return used.table


def report_table(used: TableInUse) -> None:
    """Which table a run prices with (stdout), and the machine check's one warning line (stderr), if any."""
    print(used.describe(), flush=True)
    if used.warning:
        print(f"warning: {used.warning}", file=sys.stderr, flush=True)


USER_ERRORS = BASE_USER_ERRORS + (DatasetError, WorkerStartError, ExportCheckError, RunDirBusy)


def user_errors(prog: str) -> ContextManager[None]:
    """Turn a user-facing error of any room into ``prog: error: <one line>`` and exit status 2, no traceback."""
    return one_line_errors(prog, USER_ERRORS)
