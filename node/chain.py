"""Assembling the execution pipeline of a chain from its genesis block: the same code
serves the daemon, start-up replay and `ledger verify`, so they can never disagree."""

from __future__ import annotations

from node.crypto.certs import IdentityVerifier
from node.crypto.hashing import sha256
from node.execution import lifecycle
from node.execution.consenter_gov import ConsenterGovernance
from node.execution.executor import BlockExecutor
from node.execution.lifecycle import Lifecycle
from node.execution.sandbox import SandboxEngine, Zygote
from node.execution.types import ContractEngine, ContractModule
from node.genesis import Genesis
from node.ledger.ledger import Ledger
from node.tx import ChainRules, TxChecker

REVOKED_PREFIX = b"consortium/revoked/"


def load_contracts(
    engine: ContractEngine, genesis: Genesis, ledger: Ledger | None = None
) -> ContractEngine:
    """Load every contract the chain carries: the genesis block's built-ins, then those
    deployed or upgraded by governance since (from committed state)."""
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
    if ledger is not None:
        for _key, raw in ledger.state_scan(lifecycle.RECORD_PREFIX):
            engine.load(lifecycle.module_from_record(raw))
    return engine


def sandbox_engine(zygote: Zygote, genesis: Genesis, ledger: Ledger) -> SandboxEngine:
    engine = SandboxEngine(zygote)
    load_contracts(engine, genesis, ledger)
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
        RevocationLookup(ledger),
    )


class RevocationLookup:
    """Whether an identity is revoked in the ledger's committed state. Every transaction
    of a block asks about its creator, and a block has few creators, so the answers are
    kept until the ledger's height changes: each is the one a read of the state at that
    height gives. (Reads in LevelDB release the GIL, and getting it back behind the other
    threads cost more than the read: docs/performance.md, "Eighth push".)

    Thread-safe: a caller that saw an older height fills a table that no caller at a
    newer height reads."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._height = -1
        self._answers: dict[str, bool] = {}

    def __call__(self, identity: str) -> bool:
        height = self._ledger.tip.height
        answers = self._answers
        if height != self._height:
            answers = {}
            self._answers, self._height = answers, height
        revoked = answers.get(identity)
        if revoked is None:
            revoked = self._ledger.state_get(REVOKED_PREFIX + identity.encode()) is not None
            answers[identity] = revoked
        return revoked


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
        lifecycle=Lifecycle(
            frozenset(i.id for i in genesis.config.institutions if i.tier != "authority"),
            genesis.config.params.contract_approval_majority,
        ),
        consenters=ConsenterGovernance(genesis.config),
    )
