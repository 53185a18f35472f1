"""Shared fixtures: the two shipped search spaces, loaded from conf/ like a user's run would."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from aebnas.cli.common import config_dir
from aebnas.space import SearchSpace, SpaceSettings

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config) -> None:
    """Supernets trained by tests (also in CLI subprocesses, whose environment is copied at import) are cached
    in a temporary folder, never in the user's ~/.cache."""
    os.environ["AEBNAS_CACHE_DIR"] = tempfile.mkdtemp(prefix="aebnas_test_cache_")


def pytest_unconfigure(config) -> None:
    shutil.rmtree(os.environ.pop("AEBNAS_CACHE_DIR", ""), ignore_errors=True)


def space_config(name: str) -> SpaceSettings:
    return SpaceSettings.from_dict(yaml.safe_load((ROOT / "aebnas" / "conf" / "space" / f"{name}.yaml").read_text()))


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    return SearchSpace(space_config("tiny"))


@pytest.fixture(scope="session")
def mbv3_space() -> SearchSpace:
    return SearchSpace(space_config("mbv3_32"))


HAND_SPACE = {
    "name": "hand", "stem_channels": 8, "stem_stride": 1,
    "stages": [{"width": 8, "stride": 1}, {"width": 16, "stride": 2}, {"width": 24, "stride": 1},
               {"width": 32, "stride": 2}, {"width": 48, "stride": 1}],
    "depths": [1, 2, 3], "kernels": [3, 5, 7], "expansions": [2, 3, 4], "squeeze_excite": False,
    "activation": "hswish", "final_head_channels": 96, "exit_stages": [1, 2, 3, 4],
    "thresholds": [0.5, 0.6, 0.7, 0.8, 0.9, 0.95],
    "branch": {"depths": [1, 2], "layer_types": ["conv", "dwsep", "ir"], "widths": [8, 16, 32],
               "kernels": [3, 5], "pools": ["none", "max", "avg"], "ir_expansion": 2},
}


@pytest.fixture(scope="session")
def hand_space() -> SearchSpace:
    """A space fixed in the tests (not read from conf/), for hand-computed numbers that must not drift."""
    return SearchSpace(SpaceSettings.from_dict(HAND_SPACE))


def compose_config(overrides=(), hydra: bool = False):
    """The config a run with these command-line overrides gets (Hydra's compose API, the shipped conf/)."""
    with initialize_config_dir(version_base="1.3", config_dir=config_dir()):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


@pytest.fixture(scope="session")
def small_synthetic():
    """150 learnable 8x8 one-channel images of 3 classes: enough for a real run of a few 1-epoch candidates."""
    from aebnas.data import load_dataset

    return load_dataset({"name": "synthetic", "num_classes": 3, "num_samples": 150, "resolution": 8, "channels": 1,
                         "val_size": 0.2, "test_size": 0.2, "seed": 0})
