"""Fixtures: one engine and one registered consortium per session; each test gets a copy
of the consortium's state, so tests never see each other's writes."""

from __future__ import annotations

import pytest

from node.execution.sandbox import InProcessMeteredEngine
from tests.business_contracts.world import Chain, build_world, load_engine


@pytest.fixture(scope="session")
def engine() -> InProcessMeteredEngine:
    return load_engine()


@pytest.fixture(scope="session")
def base_world(engine: InProcessMeteredEngine) -> Chain:
    return build_world(engine)


@pytest.fixture
def chain(base_world: Chain) -> Chain:
    return base_world.copy()
