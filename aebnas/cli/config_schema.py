"""Which settings object each Hydra config group is read into, and their defaults registered with Hydra.

The schema (type, default, range, meaning of every setting) lives on the settings classes
(``aebnas.config_checks.setting``). Here each group's defaults are stored in Hydra's
ConfigStore as ``<group>/base``, so a YAML preset (``conf/trainer/gpu.yaml``) lists only what it
changes, while a composed config, and the ``config.yaml`` saved with every run, still shows
every setting. The defaults are stored as plain values, not as a typed structured config:
validation stays with the schema, which reports one line naming the field and the fix.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from aebnas.config_checks import Settings
from aebnas.cost.profiler import HardwareSettings, ProfileSettings
from aebnas.data.config import DataSettings
from aebnas.runtime.export_run import ExportSettings
from aebnas.runtime.stream import StreamSettings
from aebnas.search.executors import ExecutorSettings
from aebnas.search.settings import RunSettings, SearchSettings
from aebnas.train.supernet import SupernetSettings
from aebnas.train.trainer import TrainerSettings

#: Config group -> the settings object it is read into; each group's presets start from ``base``.
GROUP_SCHEMAS: dict[str, type[Settings]] = {
    "dataset": DataSettings,
    "search": SearchSettings,
    "trainer": TrainerSettings,
    "supernet": SupernetSettings,
    "hardware": HardwareSettings,
    "executor": ExecutorSettings,
}

#: A primary config (conf/<name>.yaml, an entry point's own) -> the settings its top level is read into
#: (config.yaml's: aebnas-search's seed, run_name, progress, workers and resume, beside its groups).
PRIMARY_SCHEMAS: dict[str, type[Settings]] = {
    "config": RunSettings,
    "stream": StreamSettings,
    "export": ExportSettings,
}
#: The command that reads each primary config.
ENTRY_POINTS: dict[str, str] = {"config": "aebnas-search", "stream": "aebnas-stream", "export": "aebnas-export"}
#: Sections of a primary config with their own schema: (config, section) -> settings (conf/profile.yaml's profile).
SECTION_SCHEMAS: dict[tuple[str, str], type[Settings]] = {
    ("profile", "profile"): ProfileSettings,
}


def register_schemas() -> None:
    """Store the schemas' defaults where the YAML presets start from (idempotent; Hydra reads them at composition).

    ``<group>/base`` for a group, ``<config>_base`` for a primary config (listed first in its defaults).
    """
    store = ConfigStore.instance()
    for group, schema in GROUP_SCHEMAS.items():
        store.store(group=group, name="base", node=schema.defaults())
    for config, schema in PRIMARY_SCHEMAS.items():
        store.store(name=f"{config}_base", node=schema.defaults())
    for (config, section), schema in SECTION_SCHEMAS.items():
        store.store(name=f"{config}_base", node={section: schema.defaults()})
