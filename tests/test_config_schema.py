"""The settings schema: one declaration per setting drives the checks, the Hydra defaults and the reference page."""

from dataclasses import dataclass
from typing import ClassVar

import pytest
from omegaconf import OmegaConf

from aebnas.cli import config_reference
from aebnas.cli.config_schema import GROUP_SCHEMAS, PRIMARY_SCHEMAS, SECTION_SCHEMAS
from aebnas.config_checks import ConfigError, Settings, setting
from tests.conftest import ROOT, compose_config


@dataclass(frozen=True)
class ToySettings(Settings):
    """A toy schema for the tests."""

    section: ClassVar[str] = "toy"

    rate: float = setting(0.5, lo=0, hi=1, lo_open=True, help="A rate in (0, 1].")
    steps: int | None = setting(None, lo=1, help="Steps; null = as many as needed.")
    mode: str = setting("fast", choices=("fast", "exact"), help="How to run.")
    flag: bool = setting(True, help="A switch.")


@pytest.mark.parametrize("cfg, message", [
    ({"rate": 0}, "toy.rate: must be in (0, 1], got 0"),
    ({"rate": "high"}, "toy.rate: expected a number, got 'high'"),
    ({"steps": 0}, "toy.steps: must be in [1, inf], got 0"),
    ({"steps": 2.5}, "toy.steps: expected an integer, got 2.5"),
    ({"mode": "slow"}, "toy.mode: 'slow' is not one of ['fast', 'exact']"),
    ({"flag": "yes"}, "toy.flag: expected true or false, got 'yes'"),
    ({"rte": 0.3}, "toy.rte: unknown key; valid keys are ['flag', 'mode', 'rate', 'steps']"),
])
def test_a_declared_setting_is_checked_from_its_declaration(cfg, message):
    with pytest.raises(ConfigError) as info:
        ToySettings.from_dict(cfg)
    assert str(info.value) == message


def test_missing_keys_take_the_declared_defaults():
    assert ToySettings.from_dict({}) == ToySettings(rate=0.5, steps=None, mode="fast", flag=True)
    assert ToySettings.from_dict(OmegaConf.create({"steps": 3})).steps == 3
    assert ToySettings.defaults() == {"rate": 0.5, "steps": None, "mode": "fast", "flag": True}


def test_a_declared_setting_appears_in_the_reference():
    page = "\n".join(config_reference.render_section(config_reference.Section("toy", ToySettings, "a test")))
    assert "| `rate` | float | `0.5` | (0, 1] | A rate in (0, 1]. |" in page
    assert "| `steps` | int or null | `null` | [1, inf] | Steps; null = as many as needed. |" in page
    assert "| `mode` | str | `fast` | fast \\| exact | How to run. |" in page


def test_committed_reference_is_the_generated_one():
    committed = (ROOT / config_reference.REFERENCE).read_text()
    assert committed == config_reference.render(), "regenerate: python -m aebnas.cli.config_reference"


@pytest.mark.parametrize("group", sorted(GROUP_SCHEMAS))
def test_every_group_composes_every_schema_key(group):
    """A field added to a schema reaches every composed config (and the config.yaml a run saves) with no YAML edit."""
    overrides = ["hardware=cpu_x86_2t"] if group == "hardware" else []
    composed = compose_config(overrides)[group]
    assert set(GROUP_SCHEMAS[group].defaults()) <= set(composed)
    GROUP_SCHEMAS[group].from_dict(composed)


def test_primary_configs_compose_their_schemas():
    from hydra import compose, initialize_config_dir

    from aebnas.cli.common import config_dir

    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        for name, schema in PRIMARY_SCHEMAS.items():
            if name == "config":  # aebnas-search: its top-level keys beside the groups, run_name resolved
                cfg = OmegaConf.to_container(compose(name, overrides=["seed=3", "dataset=fashion_mnist"]),
                                             resolve=True)
                assert schema.from_config(cfg) == schema(seed=3, run_name="fashion_mnist")
                continue
            cfg = OmegaConf.to_container(compose(name, overrides=["run=/some/run"]))
            assert schema.from_dict(cfg).run == "/some/run"
        for (name, section), schema in SECTION_SCHEMAS.items():
            cfg = compose(name, overrides=["hardware=cpu_x86_2t"])
            assert schema.from_dict(cfg[section]) == schema()


def test_the_renamed_objective_reads_with_a_hint(caplog):
    from aebnas.search import SearchSettings

    with caplog.at_level("WARNING", logger="aebnas"):
        settings = SearchSettings.from_dict({"objective": "aebnas", "target_macs": 5e6})
    assert settings.objective == "macs_target"
    assert "search.objective: 'aebnas' is now called 'macs_target'" in caplog.text
