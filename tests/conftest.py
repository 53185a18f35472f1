"""Shared fixtures: the two shipped search spaces, loaded from conf/ like a user's run would."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aebnas.space import SearchSpace, SpaceConfig

ROOT = Path(__file__).resolve().parents[1]


def space_config(name: str) -> SpaceConfig:
    return SpaceConfig.from_dict(yaml.safe_load((ROOT / "conf" / "space" / f"{name}.yaml").read_text()))


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    return SearchSpace(space_config("tiny"))


@pytest.fixture(scope="session")
def mbv3_space() -> SearchSpace:
    return SearchSpace(space_config("mbv3_32"))
