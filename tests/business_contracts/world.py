"""A small consortium for the contract tests: the five built-in contracts loaded into the
checked, metered in-process engine, a dict-backed state seeded by `genesis_state`, and
one call per block with explicit block time (no clocks, no processes)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medledger.v1 import ledger_pb2

from node.codes import TxCode
from node.execution.sandbox import ENGINE_VERSION, InProcessMeteredEngine
from node.execution.sandbox.checker import check_source
from node.execution.types import Caller, ContractModule, Invocation, Outcome
from node.genesis import genesis_state

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
BUSINESS_CONTRACTS = ("consortium", "records", "consent", "referral", "audit")
GAS_LIMIT = 5_000_000
T0 = 1_780_000_000_000  # block time of the first call (Unix ms)

# (id, tier, region): a provincial tertiary hospital, a city secondary one, two county
# (primary) hospitals, and the health commission (authority tier, not a care provider).
INSTITUTIONS = (
    ("hosp1", "tertiary", "province-capital"),
    ("hosp2", "secondary", "city-b"),
    ("hosp3", "primary", "county-c"),
    ("hosp4", "primary", "county-d"),
    ("hc", "authority", "province"),
)


def identity_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()  # genesis: sha256(certificate)


def caller(name: str, role: str, institution: str) -> Caller:
    return Caller(identity=identity_of(name), name=name, role=role, institution=institution)


LEADER = caller("leader", "leader", "hc")
REGULATOR = caller("regulator", "regulator", "hc")


def admin(inst: str) -> Caller:
    return caller(f"{inst}-admin", "institution", inst)


def doctor(inst: str, n: int = 1) -> Caller:
    return caller(f"{inst}-doctor{n}", "doctor", inst)


def patient(inst: str, n: int = 1) -> Caller:
    return caller(f"{inst}-patient{n}", "patient", inst)


def pseudonym(inst: str, n: int = 1) -> str:
    return f"PSN-{inst}-{n:04d}"


def source(name: str) -> str:
    return (CONTRACTS_DIR / f"{name}.py").read_text("utf-8")


def load_engine() -> InProcessMeteredEngine:
    engine = InProcessMeteredEngine()
    for name in BUSINESS_CONTRACTS:
        text = source(name)
        deps = check_source(text).dependencies
        engine.load(
            ContractModule(name, text, hashlib.sha256(text.encode()).digest(), ENGINE_VERSION, deps)
        )
    return engine


def genesis_config() -> ledger_pb2.GenesisConfig:
    return ledger_pb2.GenesisConfig(
        consortium="test",
        created_at_ms=T0 - 60_000,
        institutions=[
            ledger_pb2.Institution(id=i, name=f"{i} hospital", tier=t, region=r)
            for i, t, r in INSTITUTIONS
        ],
        leader_certificate=b"leader",
        regulator_certificate=b"regulator",
        nodes=[
            ledger_pb2.NodeInfo(name=i, institution=i, consenter=n < 3)
            for n, (i, _t, _r) in enumerate(INSTITUTIONS)
        ],
    )


class MemoryState:
    """StateReader over a dict (byte keys and values)."""

    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = dict(data)

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def range(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return iter(sorted((k, v) for k, v in self.data.items() if k.startswith(prefix)))

    def apply(self, outcome: Outcome) -> None:
        for key, value in outcome.writes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value


class CallFailed(AssertionError):
    pass


class Chain:
    """One transaction per block; block time advances 1 s per call unless moved."""

    def __init__(self, engine: InProcessMeteredEngine, state: MemoryState, now: int = T0) -> None:
        self.engine = engine
        self.state = state
        self.now = now
        self.height = 1
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self._tx = 0

    def copy(self) -> Chain:
        other = Chain(self.engine, MemoryState(self.state.data), self.now)
        other.height, other._tx, other.events = self.height, self._tx, list(self.events)
        return other

    def call(
        self, who: Caller, contract: str, function: str, read_only: bool = False, **args: Any
    ) -> Outcome:
        self._tx += 1
        tx_id = hashlib.sha256(f"tx-{self._tx}".encode()).digest()
        inv = Invocation(
            tx_id=tx_id,
            contract=contract,
            function=function,
            args=args,
            caller=who,
            block_time_ms=self.now,
            height=self.height,
            gas_limit=GAS_LIMIT,
            read_only=read_only,
        )
        outcome = self.engine.execute(inv, self.state)
        if outcome.code == TxCode.VALID and not read_only:
            self.state.apply(outcome)
            for event in outcome.events:
                self.events.append((contract, event.name, json.loads(event.data)))
            self.height += 1
            self.now += 1000
        return outcome

    def ok(self, who: Caller, contract: str, function: str, **args: Any) -> Any:
        outcome = self.call(who, contract, function, **args)
        if outcome.code != TxCode.VALID:
            raise CallFailed(f"{contract}.{function}: {outcome.code.name}: {outcome.message}")
        return json.loads(outcome.result)

    def query(self, who: Caller, contract: str, function: str, **args: Any) -> Any:
        outcome = self.call(who, contract, function, read_only=True, **args)
        if outcome.code != TxCode.VALID:
            raise CallFailed(f"{contract}.{function}: {outcome.code.name}: {outcome.message}")
        return json.loads(outcome.result)

    def refused(self, code: TxCode, who: Caller, contract: str, function: str, **args: Any) -> str:
        before = dict(self.state.data)
        outcome = self.call(who, contract, function, **args)
        assert outcome.code == code, (
            f"{contract}.{function} gave {outcome.code.name} ({outcome.message}), "
            f"wanted {code.name}"
        )
        assert self.state.data == before
        return outcome.message

    def denied(self, who: Caller, contract: str, function: str, **args: Any) -> str:
        return self.refused(TxCode.PERMISSION_DENIED, who, contract, function, **args)

    def error(self, who: Caller, contract: str, function: str, **args: Any) -> str:
        return self.refused(TxCode.CONTRACT_ERROR, who, contract, function, **args)

    def value(self, contract: str, key: str) -> Any:
        raw = self.state.data.get(f"{contract}/{key}".encode())
        return None if raw is None else json.loads(raw)

    def events_named(self, name: str) -> list[dict[str, Any]]:
        return [data for _c, n, data in self.events if n == name]


def build_world(engine: InProcessMeteredEngine) -> Chain:
    """Genesis plus, registered by transactions: departments d01 (accepts referrals) in
    every care institution and d02 (does not) in hosp1; doctor1 and doctor2 in d01,
    doctor3 in hosp1/d02; patients 1 and 2 of every care institution; encryption keys
    for hosp1-doctor1 and hosp3-patient1."""
    chain = Chain(engine, MemoryState(genesis_state(genesis_config())))
    for inst, tier, _region in INSTITUTIONS:
        if tier == "authority":
            continue
        chain.ok(admin(inst), "consortium", "register_department", department="d01", name="d01")
        for n in (1, 2):
            chain.ok(
                admin(inst),
                "consortium",
                "register_doctor",
                identity=doctor(inst, n).identity,
                name=f"Dr {inst} {n}",
                department="d01",
            )
            chain.ok(
                admin(inst),
                "consortium",
                "register_patient",
                identity=patient(inst, n).identity,
                pseudonym=pseudonym(inst, n),
            )
    chain.ok(
        admin("hosp1"),
        "consortium",
        "register_department",
        department="d02",
        name="d02",
        accepts_referrals=False,
    )
    chain.ok(
        admin("hosp1"),
        "consortium",
        "register_doctor",
        identity=doctor("hosp1", 3).identity,
        name="Dr hosp1 3",
        department="d02",
    )
    chain.events.clear()
    return chain


def put_record(chain: Chain, owner: Caller, record_id: str, who: str) -> dict[str, Any]:
    return chain.ok(
        owner,
        "records",
        "put",
        record_id=record_id,
        patient=who,
        content_hash=hashlib.sha256(record_id.encode()).hexdigest(),
        size=1234,
        media_type="application/fhir+json",
        vault_node=owner.institution,
    )
