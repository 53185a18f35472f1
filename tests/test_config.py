"""Every shipped config composes, and what it composes to is accepted by the code that reads it."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from aebnas.cli.common import config_dir
from aebnas.search import SearchSettings
from aebnas.space import SearchSpace, SpaceSettings
from aebnas.train import TrainerSettings
from tests.conftest import compose_config

CONF = Path(config_dir())
GROUPS = {g: sorted(p.stem for p in (CONF / g).glob("*.yaml"))
          for g in ("dataset", "space", "search", "trainer", "experiment", "method")}


def _validate(cfg):
    plain = OmegaConf.to_container(cfg, resolve=True)
    SearchSpace(SpaceSettings.from_dict(plain["space"]))
    SearchSettings.from_dict(plain["search"])
    TrainerSettings.from_dict(plain["trainer"])
    assert plain["dataset"]["name"] in GROUPS["dataset"]
    return plain


@pytest.mark.parametrize("group, option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_composes(group, option):
    _validate(compose_config([f"{group}={option}"]))


def test_paper_presets_have_paper_settings():
    for name in ("cifar10", "cifar100", "svhn", "fashion_mnist"):
        plain = _validate(compose_config([f"experiment={name}"]))
        assert plain["dataset"]["name"] == name
        assert plain["space"]["name"] == "mbv3_32"
        assert plain["search"]["pop_size"] == 40 and plain["search"]["objective"] == "macs_target"
        assert plain["trainer"]["epochs"] == 5
        if name != "fashion_mnist":
            assert plain["dataset"]["val_size"] == 5000


def test_quickstart_is_small_and_on_cpu():
    plain = _validate(compose_config(["experiment=quickstart"]))
    assert plain["dataset"]["name"] == "digits" and plain["trainer"]["device"] == "cpu"
    assert plain["search"]["pop_size"] * plain["search"]["generations"] <= 32
