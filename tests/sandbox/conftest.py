"""Fixtures for the sandbox tests: one zygote per session, fresh engines per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from node.execution.sandbox.host import SandboxEngine
from node.execution.sandbox.inprocess import InProcessMeteredEngine
from node.execution.sandbox.launcher import Zygote
from tests.sandbox.sandbox_support import KV_SOURCE, module


@pytest.fixture(scope="session")
def zygote() -> Iterator[Zygote]:
    with Zygote.start(test_hooks=True) as started:
        yield started


@pytest.fixture
def sandbox(zygote: Zygote) -> Iterator[SandboxEngine]:
    with SandboxEngine(zygote, base_timeout=5.0) as engine:
        engine.load(module("kv", KV_SOURCE))
        yield engine


@pytest.fixture
def local() -> InProcessMeteredEngine:
    engine = InProcessMeteredEngine()
    engine.load(module("kv", KV_SOURCE))
    return engine
