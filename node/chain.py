"""Assembling the execution pipeline of a chain from its genesis block: the same code
serves the daemon, start-up replay and `ledger verify`, so they can never disagree."""

from __future__ import annotations

from node.crypto.certs import IdentityVerifier
from node.crypto.hashing import sha256
from node.execution.executor import BlockExecutor
from node.execution.sandbox import SandboxEngine, Zygote
from node.execution.types import ContractEngine, ContractModule
from node.genesis import Genesis
from node.ledger.ledger import Ledger
from node.tx import ChainRules, TxChecker

REVOKED_PREFIX = b"consortium/revoked/"


def load_contracts(engine: ContractEngine, genesis: Genesis) -> ContractEngine:
    """Load every contract the chain carries (today: the genesis block's built-ins)."""
    for code in genesis.config.contracts:
        engine.load(
            ContractModule(
                code.name,
                code.source,
                code.code_hash,
                code.engine_version,
                tuple(code.dependencies),
            )
        )
    return engine


def sandbox_engine(zygote: Zygote, genesis: Genesis) -> SandboxEngine:
    engine = SandboxEngine(zygote)
    load_contracts(engine, genesis)
    return engine


def reserved_roles(genesis: Genesis) -> dict[str, frozenset[str]]:
    config = genesis.config
    return {
        "leader": frozenset({sha256(config.leader_certificate).hex()}),
        "regulator": frozenset({sha256(config.regulator_certificate).hex()}),
        "node": frozenset(sha256(n.certificate).hex() for n in config.nodes),
    }


def build_checker(genesis: Genesis, ledger: Ledger) -> TxChecker:
    params = genesis.config.params
    rules = ChainRules(
        chain_id=genesis.chain_id,
        max_tx_bytes=params.max_tx_bytes,
        max_tx_ttl_ms=params.max_tx_ttl_ms,
        max_clock_skew_ms=params.max_clock_skew_ms,
    )
    return TxChecker(
        rules,
        IdentityVerifier(genesis.ca_certificates(), reserved_roles(genesis)),
        lambda identity: ledger.state_get(REVOKED_PREFIX + identity.encode()) is not None,
    )


def build_executor(
    genesis: Genesis,
    ledger: Ledger,
    engine: ContractEngine,
    query_engine: ContractEngine | None = None,
) -> BlockExecutor:
    """`engine` and `query_engine` must already hold the chain's contracts."""
    return BlockExecutor(
        ledger,
        build_checker(genesis, ledger),
        engine,
        gas_limit=int(genesis.config.params.max_gas_per_tx) or 5_000_000,
        query_engine=query_engine,
    )
