"""Shared fixtures for the unit tests: one consortium per session (read-only), a fresh
in-memory ledger and executor per test, and deterministic transaction builders.

Time is always passed in explicitly: `t0` is ten seconds after the genesis block's
timestamp, so every test sees the same relative clock whatever the wall clock says.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from node import genesis as genesis_mod
from node import tx as txlib
from node.chain import build_checker, build_executor
from node.execution.executor import BlockExecutor
from node.genesis import Genesis
from node.ledger.kvstore import MemoryKV
from node.ledger.ledger import Ledger
from node.provisioning import Plan, init_consortium
from node.sdk.client import Identity
from node.tx import TxChecker

from .builders import TxFactory, metered_engine


@pytest.fixture(scope="session")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-hospital, 1-consenter consortium. Tests must treat it as read-only."""
    return init_consortium(Plan(tmp_path_factory.mktemp("consortium") / "c", hospitals=2))


@pytest.fixture(scope="session")
def genesis(consortium: Path) -> Genesis:
    return genesis_mod.load(consortium / "genesis.block")


@pytest.fixture(scope="session")
def identities(consortium: Path) -> Callable[[str], Identity]:
    cache: dict[str, Identity] = {}

    def load(name: str) -> Identity:
        if name not in cache:
            cache[name] = Identity.load(consortium / "identities" / name)
        return cache[name]

    return load


@pytest.fixture(scope="session")
def doctor(identities: Callable[[str], Identity]) -> Identity:
    return identities("hosp1-doctor1")


@pytest.fixture(scope="session")
def other_doctor(identities: Callable[[str], Identity]) -> Identity:
    return identities("hosp2-doctor1")


@pytest.fixture(scope="session")
def t0(genesis: Genesis) -> int:
    return int(genesis.header.timestamp_ms) + 10_000


@pytest.fixture
def ledger(genesis: Genesis) -> Ledger:
    return Ledger(MemoryKV(), genesis)


@pytest.fixture
def executor(genesis: Genesis, ledger: Ledger) -> BlockExecutor:
    return build_executor(genesis, ledger, metered_engine(genesis))


@pytest.fixture
def checker(genesis: Genesis, ledger: Ledger) -> TxChecker:
    return build_checker(genesis, ledger)


@pytest.fixture
def nonces() -> Iterator[bytes]:
    return (i.to_bytes(16, "big") for i in itertools.count(1))


@pytest.fixture
def make_tx(genesis: Genesis, doctor: Identity, t0: int, nonces: Iterator[bytes]) -> TxFactory:
    """Signed transaction bytes; deterministic nonce sequence per test."""

    def make(
        identity: Identity | None = None,
        function: str = "put",
        args: Mapping[str, Any] | None = None,
        *,
        contract: str = "kv",
        now_ms: int | None = None,
        ttl_ms: int = 60_000,
        nonce: bytes | None = None,
        chain_id: bytes | None = None,
    ) -> bytes:
        who = identity or doctor
        return txlib.build(
            chain_id=genesis.chain_id if chain_id is None else chain_id,
            contract=contract,
            function=function,
            args={"key": "k", "value": 1} if args is None else args,
            key=who.key,
            certificate_der=who.certificate_der,
            now_ms=t0 if now_ms is None else now_ms,
            ttl_ms=ttl_ms,
            nonce=next(nonces) if nonce is None else nonce,
        )

    return make
