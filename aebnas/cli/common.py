"""What every entry point shares: where conf/ lives and how a bad input is reported."""

from __future__ import annotations

import os
import sys
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from aebnas.cli.config_schema import register_schemas
from aebnas.cost.latency import InputShape, LatencyTable, LatencyTableError
from aebnas.cost.profiler import HardwareSettings
from aebnas.data import DatasetError
from aebnas.runtime.export_run import ExportCheckError
from aebnas.search.workers import WorkerStartError
from aebnas.space import GenomeError, SpaceSettings
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


def check_overrides(prog: str, argv: list[str], config_name: str = "config") -> None:
    """Compose the config once up front so Hydra's multi-line override errors become one line."""
    if any(a.startswith("-") for a in argv):
        return  # Hydra's own flags (--multirun sweeps, --cfg, --help ...) are Hydra's to handle
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


def latency_table_path(hw: HardwareSettings, shape: InputShape) -> Path:
    """``conf/hardware/tables/<hardware>/r<res>_c<channels>_n<classes>.json`` unless ``hardware.table_dir`` says."""
    root = Path(hw.table_dir).expanduser() if hw.table_dir else Path(config_dir()) / "hardware" / "tables" / hw.name
    return root / f"r{shape.resolution}_c{shape.channels}_n{shape.num_classes}.json"


def profile_command(hw: HardwareSettings, space_name: str, shape: InputShape) -> str:
    """The command that measures exactly the table a search with this device, space and input needs."""
    return (f"aebnas-profile hardware={hw.name} space={space_name} profile.resolution={shape.resolution} "
            f"profile.channels={shape.channels} profile.num_classes={shape.num_classes}")


def load_latency_table(hardware: Mapping[str, Any] | None, space: SpaceSettings, shape: InputShape,
                       required: bool) -> LatencyTable | None:
    """The device's table for this space and input, checked to price every candidate; None without hardware."""
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
    return table


USER_ERRORS = (ConfigError, DatasetError, GenomeError, FileNotFoundError, FileExistsError, WorkerStartError,
               ExportCheckError)


@contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Turn a user-facing error into ``prog: error: <one line>`` and exit status 2, no traceback."""
    try:
        yield
    except USER_ERRORS as exc:
        if os.environ.get("AEBNAS_TRACEBACK"):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(2)
    except (OSError, BrokenProcessPool) as exc:  # disk full, data gone, a worker killed: the archive is intact
        if os.environ.get("AEBNAS_TRACEBACK"):
            raise
        print(f"{prog}: error: the machine failed, not a candidate ({type(exc).__name__}: {exc}); finished "
              "evaluations are safe in the run's archive.sqlite: fix the cause and continue with resume=<run dir>",
              file=sys.stderr)
        sys.exit(3)
