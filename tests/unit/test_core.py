"""NodeCore: admission in front of the mempool, ordering, and answering waiters.

Every refusal is an outcome with status INVALID and its own code, and writes nothing."""

from __future__ import annotations

import itertools

import pytest
from medledger.v1 import ledger_pb2

from node.codes import TxCode, TxStatus
from node.core import NodeCore
from node.crypto import keys
from node.execution.executor import BlockExecutor
from node.genesis import Genesis
from node.ledger.ledger import Ledger
from node.mempool.mempool import Mempool, MempoolLimits, PendingTx
from node.sdk.client import Identity
from node.tx import tx_id_of

from .builders import TxFactory

INDEX = itertools.count(1)


def as_batch(batch: list[PendingTx], leader_time_ms: int) -> ledger_pb2.Batch:
    return ledger_pb2.Batch(
        txs=[tx.raw for tx in batch], leader_time_ms=leader_time_ms, proposer="hosp1"
    )


@pytest.fixture
def wakes() -> list[int]:
    return []


@pytest.fixture
def core(genesis: Genesis, ledger: Ledger, executor: BlockExecutor, wakes: list[int]) -> NodeCore:
    return NodeCore(
        "hosp1",
        genesis,
        ledger,
        executor,
        executor.checker,
        Mempool(MempoolLimits(max_txs=4, max_bytes=1 << 20, institution_share=0.5)),
        wake_orderer=lambda: wakes.append(1),
    )


def snapshot(ledger: Ledger) -> dict[bytes, bytes]:
    return dict(ledger.store.scan(b""))


def test_admitted_then_committed(
    core: NodeCore, ledger: Ledger, make_tx: TxFactory, t0: int, wakes: list[int]
) -> None:
    raw = make_tx()
    outcome, future = core.submit(raw, t0, wait=True)
    assert (outcome.status, outcome.code, outcome.tx_id) == (
        TxStatus.PENDING,
        TxCode.VALID,
        tx_id_of(raw),
    )
    assert wakes == [1]
    assert core.status_of(tx_id_of(raw)).status == TxStatus.PENDING
    batch = core.take_batch(t0 + 1, 10, 1 << 20)
    assert [p.raw for p in batch] == [raw]
    assert core.status_of(tx_id_of(raw)).status == TxStatus.PENDING  # in flight
    write = core.apply_entry(as_batch(batch, t0 + 2), 1, next(INDEX), t0 + 2)
    assert write.height == 1 and ledger.tip.height == 1
    assert future is not None and future.done()
    result = future.result()
    assert (result.status, result.code, result.height) == (TxStatus.COMMITTED, TxCode.VALID, 1)
    status = core.status_of(tx_id_of(raw))
    assert (status.status, status.height) == (TxStatus.COMMITTED, 1)
    assert core.status_of(bytes(32)).status == TxStatus.UNKNOWN


def test_a_failed_tx_is_invalid_in_its_block(core: NodeCore, make_tx: TxFactory, t0: int) -> None:
    raw = make_tx(function="delete", args={"key": "missing"})
    _, future = core.submit(raw, t0, wait=True)
    core.apply_entry(as_batch(core.take_batch(t0, 10, 1 << 20), t0), 1, next(INDEX), t0)
    assert future is not None
    result = future.result()
    assert (result.status, result.code) == (TxStatus.INVALID, TxCode.CONTRACT_ERROR)
    assert result.message == "ValueError: no such key: missing"
    assert core.status_of(tx_id_of(raw)).code == TxCode.CONTRACT_ERROR


def test_replays_are_duplicates_at_every_stage(
    core: NodeCore, make_tx: TxFactory, doctor: Identity, t0: int
) -> None:
    raw = make_tx()
    body = ledger_pb2.SignedTx.FromString(raw).body
    resigned = ledger_pb2.SignedTx(body=body, signature=keys.sign(doctor.key, body))
    core.submit(raw, t0)
    for again in (raw, resigned.SerializeToString()):
        outcome, _ = core.submit(again, t0)
        assert (outcome.status, outcome.code) == (TxStatus.INVALID, TxCode.DUPLICATE_TXID)
        assert outcome.message == "transaction is already pending"
    batch = core.take_batch(t0, 10, 1 << 20)
    outcome, _ = core.submit(raw, t0)
    assert (outcome.code, outcome.message) == (
        TxCode.DUPLICATE_TXID,
        "transaction is already being ordered",
    )
    core.apply_entry(as_batch(batch, t0), 1, next(INDEX), t0)
    for again in (raw, resigned.SerializeToString()):
        outcome, _ = core.submit(again, t0)
        assert (outcome.code, outcome.message) == (
            TxCode.DUPLICATE_TXID,
            "transaction already in block 1 (code VALID)",
        )


def test_bad_input_gets_its_own_code_and_writes_nothing(
    core: NodeCore, ledger: Ledger, make_tx: TxFactory, genesis: Genesis, t0: int
) -> None:
    good = ledger_pb2.SignedTx.FromString(make_tx())
    sig = bytearray(good.signature)
    sig[-1] ^= 1
    tampered = ledger_pb2.SignedTx(body=good.body, signature=bytes(sig)).SerializeToString()
    foreign_key = keys.generate_key()
    unknown = make_tx(Identity("x", foreign_key, b"garbage"))
    no_signature = ledger_pb2.SignedTx(body=good.body).SerializeToString()
    oversized = make_tx(args={"key": "big", "value": "x" * genesis.config.params.max_tx_bytes})
    cases = [
        (tampered, TxCode.BAD_SIGNATURE),
        (unknown, TxCode.UNKNOWN_CREATOR),
        (make_tx(chain_id=bytes(32)), TxCode.WRONG_CHAIN),
        (make_tx(now_ms=t0 - 100_000, ttl_ms=1_000), TxCode.EXPIRED),
        (oversized, TxCode.TOO_LARGE),
        (b"\xff\xfe\xfd", TxCode.MALFORMED),
        (no_signature, TxCode.MISSING_FIELD),
    ]
    before = snapshot(ledger)
    for raw, code in cases:
        outcome, future = core.submit(raw, t0, wait=True)
        assert (outcome.status, outcome.code) == (TxStatus.INVALID, code), raw[:20]
        assert outcome.message
        assert future is None
    assert len(core.mempool) == 0
    assert snapshot(ledger) == before
    # ... and the node keeps serving.
    outcome, _ = core.submit(make_tx(), t0)
    assert outcome.status == TxStatus.PENDING


def test_mempool_full_and_quota(
    core: NodeCore, make_tx: TxFactory, other_doctor: Identity, t0: int
) -> None:
    for _ in range(2):
        assert core.submit(make_tx(), t0)[0].status == TxStatus.PENDING
    outcome, _ = core.submit(make_tx(), t0)
    assert (outcome.status, outcome.code) == (TxStatus.INVALID, TxCode.QUOTA_EXCEEDED)
    for _ in range(2):
        assert core.submit(make_tx(other_doctor), t0)[0].status == TxStatus.PENDING
    outcome, _ = core.submit(make_tx(other_doctor), t0)
    assert (outcome.status, outcome.code) == (TxStatus.INVALID, TxCode.MEMPOOL_FULL)


def test_expired_while_pending(core: NodeCore, make_tx: TxFactory, t0: int) -> None:
    raw = make_tx(ttl_ms=1_000)
    _, future = core.submit(raw, t0, wait=True)
    assert core.take_batch(t0 + 1_000, 10, 1 << 20) == []
    assert future is not None
    result = future.result()
    assert (result.status, result.code) == (TxStatus.INVALID, TxCode.EXPIRED)
    assert core.status_of(tx_id_of(raw)).status == TxStatus.UNKNOWN


def test_shutting_down(core: NodeCore, make_tx: TxFactory, t0: int) -> None:
    _, future = core.submit(make_tx(), t0, wait=True)
    core.close()
    outcome, _ = core.submit(make_tx(), t0)
    assert (outcome.status, outcome.code) == (TxStatus.INVALID, TxCode.SHUTTING_DOWN)
    core.release_waiters()
    assert future is not None
    result = future.result()
    assert (result.status, result.code) == (TxStatus.PENDING, TxCode.SHUTTING_DOWN)


def test_precheck_of_an_appended_entry_verifies_what_execution_then_skips(
    core: NodeCore, ledger: Ledger, make_tx: TxFactory, t0: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower pre-checks an entry it appended: its good signatures are verified once,
    there, and the block's execution verifies none again; garbage in the entry (or an
    entry that is not a Batch) is left for execution to refuse, and nothing is written."""
    calls: list[bytes] = []
    verify = keys.verify

    def counting(public_key: object, signature: bytes, data: bytes) -> bool:
        calls.append(signature)
        return verify(public_key, signature, data)  # type: ignore[arg-type]

    monkeypatch.setattr("node.tx.keys.verify", counting)
    before = snapshot(ledger)
    core.precheck(b"\xff not a batch")
    good = [make_tx(args={"key": f"pre{i}", "value": i}) for i in range(3)]
    batch = ledger_pb2.Batch(txs=[*good, b"garbage"], leader_time_ms=t0, proposer="hosp2")
    core.precheck(batch.SerializeToString())
    assert len(calls) == 3
    assert snapshot(ledger) == before and len(core.mempool) == 0
    write = core.apply_entry(batch, 1, next(INDEX), t0)
    assert len(calls) == 3
    assert [TxCode(c) for c in write.codes] == [TxCode.VALID] * 3 + [TxCode.MALFORMED]
