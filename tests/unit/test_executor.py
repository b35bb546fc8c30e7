"""Deriving, committing and replaying blocks: the ledger and the block executor."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from medledger.v1 import ledger_pb2

from node import genesis as genesis_mod
from node import tx as txlib
from node.chain import REVOKED_PREFIX, RevocationLookup, build_executor
from node.codes import TxCode
from node.crypto import keys
from node.crypto.hashing import merkle_root, sha256
from node.execution.executor import (
    BlockExecutor,
    Divergence,
    result_leaf,
    write_set_hash,
)
from node.genesis import Genesis
from node.ledger import layout
from node.ledger.kvstore import MemoryKV
from node.ledger.layout import TxLocation
from node.ledger.ledger import BlockWrite, Ledger, LedgerError, decode_block
from node.sdk.client import Identity

from .builders import TxFactory, institution_ca, metered_engine

EMPTY_WRITES = write_set_hash({})


def commit(
    executor: BlockExecutor, txs: Sequence[bytes], leader_time_ms: int, proposer: str = "hosp1"
) -> BlockWrite:
    write = executor.derive(list(txs), leader_time_ms, proposer)
    executor.ledger.commit(write)
    return write


def tx_id(raw: bytes) -> bytes:
    return txlib.tx_id_of(raw)


def store_snapshot(ledger: Ledger) -> dict[bytes, bytes]:
    return dict(ledger.store.scan(b""))


def kv(ledger: Ledger, key: str) -> object:
    raw = ledger.state_get(f"kv/{key}".encode())
    return None if raw is None else json.loads(raw)


# -- deriving and committing -----------------------------------------------------------


def test_a_block_of_puts(
    executor: BlockExecutor, ledger: Ledger, genesis: Genesis, make_tx: TxFactory, t0: int
) -> None:
    txs = [make_tx(args={"key": f"k{i}", "value": i}) for i in range(3)]
    write = commit(executor, txs, t0 + 100, proposer="hosp1")
    assert write.height == 1
    assert write.codes == (0, 0, 0)
    assert write.tx_ids == tuple(tx_id(t) for t in txs)

    block, header = decode_block(ledger.block_bytes(1) or b"")
    assert list(block.txs) == txs and list(block.codes) == [0, 0, 0]
    assert header.height == 1
    assert header.prev_hash == genesis.hash
    assert header.timestamp_ms == t0 + 100
    assert header.tx_root == merkle_root([tx_id(t) for t in txs])
    assert header.proposer == "hosp1"
    assert header.version == genesis_mod.HEADER_VERSION
    assert write.block_hash == sha256(block.header)

    results = ledger.results(1)
    assert results is not None
    assert [json.loads(r.result) for r in results.results] == [
        {"key": f"k{i}", "created": True} for i in range(3)
    ]
    assert header.results_root == merkle_root(
        [result_leaf(tid, r) for tid, r in zip(write.tx_ids, results.results, strict=True)]
    )
    assert header.state_hash == sha256(
        genesis.header.state_hash + sha256(b"".join(r.write_set_hash for r in results.results))
    )
    event = results.results[2].events[0]
    assert (event.height, event.tx_index, event.tx_id, event.contract, event.name) == (
        1,
        2,
        tx_id(txs[2]),
        "kv",
        "put",
    )
    assert json.loads(event.data) == {"key": "k2"}

    assert ledger.tip.height == 1 and ledger.tip.hash == write.block_hash
    assert ledger.tip.state_hash == header.state_hash
    assert ledger.height_of(write.block_hash) == 1
    assert [kv(ledger, f"k{i}") for i in range(3)] == [0, 1, 2]
    assert ledger.state_get(b"kv/k1") == b"1"  # canonical JSON bytes


def test_block_timestamp_never_goes_backwards(
    executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, t0: int
) -> None:
    commit(executor, [make_tx()], t0 + 500)
    write = commit(executor, [make_tx()], t0 + 100)
    assert write.header.timestamp_ms == t0 + 500
    assert ledger.tip.timestamp_ms == t0 + 500


def test_empty_block(executor: BlockExecutor, ledger: Ledger, genesis: Genesis, t0: int) -> None:
    write = commit(executor, [], t0)
    assert write.codes == ()
    assert write.header.tx_root == merkle_root([]) == write.header.results_root
    assert write.header.state_hash == sha256(genesis.header.state_hash + sha256(b""))


def test_state_versions_and_history(
    executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, t0: int
) -> None:
    commit(
        executor,
        [make_tx(args={"key": "a", "value": 1}), make_tx(args={"key": "b", "value": 0})],
        t0,
    )
    commit(
        executor,
        [make_tx(args={"key": "b", "value": 5}), make_tx(args={"key": "a", "value": {"x": [1]}})],
        t0 + 1,
    )
    a = ledger.state_versioned(b"kv/a")
    assert a is not None and (a.height, a.index, a.value) == (2, 1, b'{"x":[1]}')
    b = ledger.state_versioned(b"kv/b")
    assert b is not None and (b.height, b.index) == (2, 0)
    assert ledger.history(b"kv/a") == [(1, 0, b"1"), (2, 1, b'{"x":[1]}')]
    assert ledger.history(b"kv/b") == [(1, 1, b"0"), (2, 0, b"5")]
    assert ledger.history(b"kv/nothing") == []
    assert list(ledger.state_scan(b"kv/")) == [(b"kv/a", b'{"x":[1]}'), (b"kv/b", b"5")]


def test_later_transactions_see_earlier_writes_of_the_same_block(
    executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, t0: int
) -> None:
    write = commit(
        executor,
        [
            make_tx(args={"key": "a", "value": 1}),
            make_tx(args={"key": "a", "value": 2}),
            make_tx(function="delete", args={"key": "a"}),
            make_tx(function="delete", args={"key": "a"}),
        ],
        t0,
    )
    assert write.codes == (0, 0, 0, TxCode.CONTRACT_ERROR)
    results = ledger.results(1)
    assert results is not None
    assert json.loads(results.results[1].result) == {"key": "a", "created": False}
    assert ledger.state_get(b"kv/a") is None
    assert [h[:2] for h in ledger.history(b"kv/a")] == [(1, 0), (1, 1), (1, 2)]


def test_history_records_a_delete_as_none(
    executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, t0: int
) -> None:
    commit(executor, [make_tx(args={"key": "a", "value": 1})], t0)
    commit(executor, [make_tx(function="delete", args={"key": "a"})], t0 + 1)
    assert ledger.state_get(b"kv/a") is None
    assert ledger.history(b"kv/a")[0] == (1, 0, b"1")
    assert ledger.store.get(layout.history_key(b"kv/a", 2, 0)) == b"\x00"


def test_history_returns_none_for_a_delete(
    executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, t0: int
) -> None:
    commit(executor, [make_tx(args={"key": "a", "value": 1})], t0)
    commit(executor, [make_tx(function="delete", args={"key": "a"})], t0 + 1)
    assert ledger.history(b"kv/a") == [(1, 0, b"1"), (2, 0, None)]


def test_list_keys_sees_committed_and_pending_writes(
    executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, t0: int
) -> None:
    commit(executor, [make_tx(args={"key": k, "value": 1}) for k in ("p/1", "p/2", "q")], t0)
    write = commit(
        executor,
        [
            make_tx(args={"key": "p/0", "value": 1}),
            make_tx(function="delete", args={"key": "p/2"}),
            make_tx(function="list_keys", args={"prefix": "p/"}),
            make_tx(function="list_keys", args={"prefix": "", "limit": 2}),
        ],
        t0 + 1,
    )
    results = ledger.results(write.height)
    assert results is not None
    assert json.loads(results.results[2].result) == ["p/0", "p/1"]
    assert json.loads(results.results[3].result) == ["p/0", "p/1"]


def test_tx_index(executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, t0: int) -> None:
    txs = [make_tx(), make_tx(function="delete", args={"key": "missing"})]
    commit(executor, [make_tx()], t0)
    commit(executor, txs, t0 + 1)
    assert ledger.tx_location(tx_id(txs[0])) == TxLocation(2, 0, TxCode.VALID)
    assert ledger.tx_location(tx_id(txs[1])) == TxLocation(2, 1, TxCode.CONTRACT_ERROR)
    assert ledger.tx_location(bytes(32)) is None


# -- duplicates --------------------------------------------------------------------------


def test_duplicate_in_the_same_block(
    executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, t0: int
) -> None:
    raw = make_tx(args={"key": "a", "value": 1})
    write = commit(executor, [raw, raw], t0)
    assert write.codes == (TxCode.VALID, TxCode.DUPLICATE_TXID)
    assert write.messages[1] == "transaction already committed"
    assert ledger.tx_location(tx_id(raw)) == TxLocation(1, 0, TxCode.VALID)
    assert ledger.history(b"kv/a") == [(1, 0, b"1")]
    results = ledger.results(1)
    assert results is not None
    assert results.results[1].write_set_hash == EMPTY_WRITES
    assert not results.results[1].events and results.results[1].result == b""


def test_duplicate_across_blocks_changes_nothing(
    executor: BlockExecutor,
    ledger: Ledger,
    make_tx: TxFactory,
    doctor: Identity,
    t0: int,
) -> None:
    raw = make_tx(args={"key": "a", "value": 1})
    commit(executor, [raw], t0)
    # The same body with a fresh signature is the same transaction.
    body = ledger_pb2.SignedTx.FromString(raw).body
    resigned = ledger_pb2.SignedTx(body=body, signature=keys.sign(doctor.key, body))
    before = {k: v for k, v in store_snapshot(ledger).items() if not k.startswith(b"m/")}
    write = commit(executor, [raw, resigned.SerializeToString()], t0 + 1)
    assert write.codes == (TxCode.DUPLICATE_TXID, TxCode.DUPLICATE_TXID)
    assert write.state == ()
    assert write.tx_locations == {}
    after = store_snapshot(ledger)
    assert {k: after[k] for k in before} == before
    assert ledger.tx_location(tx_id(raw)) == TxLocation(1, 0, TxCode.VALID)
    assert ledger.history(b"kv/a") == [(1, 0, b"1")]


def test_a_bad_signature_does_not_burn_the_tx_id(
    executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, t0: int
) -> None:
    raw = make_tx(args={"key": "a", "value": 1})
    signed = ledger_pb2.SignedTx.FromString(raw)
    forged = ledger_pb2.SignedTx(body=signed.body, signature=b"\x30\x00").SerializeToString()
    write = commit(executor, [forged, raw], t0)
    assert write.codes == (TxCode.BAD_SIGNATURE, TxCode.VALID)
    assert ledger.tx_location(tx_id(raw)) == TxLocation(1, 1, TxCode.VALID)


# -- failures keep their code and write nothing ----------------------------------------


@pytest.mark.parametrize(
    ("contract", "function", "args", "code", "message"),
    [
        (
            "kv",
            "delete",
            {"key": "missing"},
            TxCode.CONTRACT_ERROR,
            "ValueError: no such key: missing",
        ),
        (
            "kv",
            "put",
            {"key": ""},
            TxCode.BAD_ARGUMENTS,
            "put: missing arguments ['value']",
        ),
        ("kv", "put", {"key": "a", "value": 1, "extra": 2}, TxCode.BAD_ARGUMENTS, None),
        ("kv", "put", {"key": "", "value": 1}, TxCode.CONTRACT_ERROR, None),
        ("kv", "nope", {}, TxCode.UNKNOWN_FUNCTION, None),
        ("kv", "_check_key", {"key": "a"}, TxCode.UNKNOWN_FUNCTION, None),
        ("nope", "put", {}, TxCode.UNKNOWN_CONTRACT, "no contract 'nope' loaded"),
    ],
)
def test_failing_call_keeps_its_code_and_writes_nothing(
    executor: BlockExecutor,
    ledger: Ledger,
    make_tx: TxFactory,
    t0: int,
    contract: str,
    function: str,
    args: dict[str, object],
    code: TxCode,
    message: str | None,
) -> None:
    raw = make_tx(contract=contract, function=function, args=args)
    ok = make_tx(args={"key": "after", "value": 1})
    write = commit(executor, [raw, ok], t0)
    assert write.codes == (code, TxCode.VALID)
    if message is not None:
        assert write.messages[0] == message
    if function == "nope":
        assert write.messages[0] == "kv has no function 'nope'"
    assert [w.tx_index for w in write.state] == [1]
    assert [k for k, _ in ledger.state_scan(b"kv/")] == [b"kv/after"]
    results = ledger.results(1)
    assert results is not None
    assert results.results[0].write_set_hash == EMPTY_WRITES
    assert not results.results[0].events and results.results[0].result == b""
    assert ledger.tx_location(tx_id(raw)) == TxLocation(1, 0, code)  # never retried


def test_expired_at_block_time(
    executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, t0: int
) -> None:
    raw = make_tx(now_ms=t0, ttl_ms=1_000)
    write = commit(executor, [raw], t0 + 1_000)
    assert write.codes == (TxCode.EXPIRED,)
    assert write.messages[0] == f"expired at {t0 + 1_000} ms; it is now {t0 + 1_000} ms"
    assert list(ledger.state_scan(b"kv/")) == []
    assert ledger.tx_location(tx_id(raw)) == TxLocation(1, 0, TxCode.EXPIRED)


def test_ed25519_creator_commits(
    executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, consortium: Path, t0: int
) -> None:
    key = keys.generate_key(keys.ED25519)
    now = dt.datetime.fromtimestamp(t0 / 1000, dt.UTC)
    cert = institution_ca(consortium, "hosp2").issue("ed", "patient", key.public_key(), now)
    ed = Identity("ed", key, cert.public_bytes(Encoding.DER))
    write = commit(executor, [make_tx(ed, args={"key": "ed", "value": True})], t0)
    assert write.codes == (TxCode.VALID,)
    assert ledger.state_get(b"kv/ed") == b"true"


def test_malformed_bytes_in_a_block(
    executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, t0: int
) -> None:
    write = commit(executor, [b"\xff\xff", make_tx()], t0)
    assert write.codes == (TxCode.MALFORMED, TxCode.VALID)
    assert write.tx_ids[0] == sha256(b"\xff\xff")
    assert ledger.tx_location(sha256(b"\xff\xff")) is None


def test_revoked_creator_at_execution(
    executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, doctor: Identity, t0: int
) -> None:
    identity = sha256(doctor.certificate_der).hex()
    # What the consortium contract's revocation writes (no such contract yet: by hand).
    key = layout.STATE + REVOKED_PREFIX + identity.encode()
    ledger.store.write({key: layout.VersionedValue(0, 0, b"true").encode()}, set(), sync=True)
    raw = make_tx()
    write = commit(executor, [raw], t0)
    assert write.codes == (TxCode.CREATOR_REVOKED,)
    assert ledger.tx_location(tx_id(raw)) is None


class _CountingLedger:
    def __init__(self) -> None:
        self.tip = layout.Tip(5, b"h" * 32, b"s" * 32, 0)
        self.state: dict[bytes, bytes] = {}
        self.reads = 0

    def state_get(self, key: bytes) -> bytes | None:
        self.reads += 1
        return self.state.get(key)


def test_revocation_is_read_once_per_identity_and_height() -> None:
    ledger = _CountingLedger()
    revoked = RevocationLookup(ledger)  # type: ignore[arg-type]
    assert [revoked("a"), revoked("a"), revoked("b"), revoked("a")] == [False] * 4
    assert ledger.reads == 2
    ledger.state[REVOKED_PREFIX + b"a"] = b"true"  # the next block revokes "a"
    ledger.tip = layout.Tip(6, b"i" * 32, b"t" * 32, 0)
    assert [revoked("a"), revoked("b"), revoked("a")] == [True, False, True]
    assert ledger.reads == 4


def nested_args_tx(make_tx: TxFactory, doctor: Identity, depth: int) -> bytes:
    body = ledger_pb2.TxBody.FromString(ledger_pb2.SignedTx.FromString(make_tx()).body)
    body.args = b'{"key":"a","value":' + b"[" * depth + b"]" * depth + b"}"
    body_bytes = body.SerializeToString()
    return ledger_pb2.SignedTx(
        body=body_bytes, signature=keys.sign(doctor.key, body_bytes)
    ).SerializeToString()


def test_deeply_nested_args_are_bad_arguments_not_a_crash(
    executor: BlockExecutor, make_tx: TxFactory, doctor: Identity, t0: int
) -> None:
    raw = nested_args_tx(make_tx, doctor, 100_000)
    assert len(raw) < 256 * 1024
    write = executor.derive([raw, make_tx()], t0, "hosp1")
    assert write.codes == (TxCode.BAD_ARGUMENTS, TxCode.VALID)


def test_execution_does_not_depend_on_the_callers_stack_depth(
    genesis: Genesis, make_tx: TxFactory, doctor: Identity, t0: int
) -> None:
    raw = nested_args_tx(make_tx, doctor, 900)

    def at_depth(frames: int) -> tuple[int, ...]:
        if frames:
            return at_depth(frames - 1)
        fresh = build_executor(genesis, Ledger(MemoryKV(), genesis), metered_engine(genesis))
        return fresh.derive([raw], t0, "hosp1").codes

    assert at_depth(0) == at_depth(200)


# -- replay ------------------------------------------------------------------------------


@pytest.fixture
def chain(executor: BlockExecutor, make_tx: TxFactory, t0: int) -> list[BlockWrite]:
    """Three blocks with a mix of valid and failing transactions."""
    return [
        commit(
            executor,
            [make_tx(args={"key": "a", "value": 1}), make_tx(args={"key": "b", "value": 2})],
            t0,
        ),
        commit(
            executor,
            [make_tx(function="delete", args={"key": "a"}), make_tx(function="nope")],
            t0 + 10,
        ),
        commit(
            executor,
            [make_tx(args={"key": "b", "value": 3}), make_tx(now_ms=t0, ttl_ms=5)],
            t0 + 20,
        ),
    ]


@pytest.fixture
def fresh(genesis: Genesis) -> BlockExecutor:
    return build_executor(genesis, Ledger(MemoryKV(), genesis), metered_engine(genesis))


def test_replay_on_a_fresh_ledger_reproduces_every_hash(
    chain: list[BlockWrite], ledger: Ledger, fresh: BlockExecutor
) -> None:
    for original in chain:
        again = fresh.replay(original.block_bytes)
        assert again.block_hash == original.block_hash
        assert again.results_bytes == original.results_bytes
        assert again.codes == original.codes
        assert again.tx_locations == original.tx_locations
        assert again.state == original.state
        fresh.ledger.commit(again)
    assert fresh.ledger.tip == ledger.tip
    assert store_snapshot(fresh.ledger) == store_snapshot(ledger)


def tamper_block(
    write: BlockWrite, change: Callable[[ledger_pb2.Block, ledger_pb2.BlockHeader], None]
) -> bytes:
    block, header = decode_block(write.block_bytes)
    change(block, header)
    block.header = header.SerializeToString()
    return block.SerializeToString()


def replay_up_to(fresh: BlockExecutor, chain: list[BlockWrite], height: int) -> None:
    for write in chain[: height - 1]:
        fresh.ledger.commit(fresh.replay(write.block_bytes))


def divergence(fresh: BlockExecutor, data: bytes) -> Divergence:
    with pytest.raises(Divergence) as info:
        fresh.replay(data)
    return info.value


def test_replay_detects_a_changed_code(chain: list[BlockWrite], fresh: BlockExecutor) -> None:
    replay_up_to(fresh, chain, 2)

    def change(block: ledger_pb2.Block, header: ledger_pb2.BlockHeader) -> None:
        block.codes[1] = ledger_pb2.VALID

    exc = divergence(fresh, tamper_block(chain[1], change))
    assert exc.height == 2
    assert str(exc) == "block 2: validation code of transaction 1 differs"


def test_replay_detects_a_dropped_code(chain: list[BlockWrite], fresh: BlockExecutor) -> None:
    replay_up_to(fresh, chain, 2)

    def change(block: ledger_pb2.Block, header: ledger_pb2.BlockHeader) -> None:
        del block.codes[1]

    exc = divergence(fresh, tamper_block(chain[1], change))
    assert (exc.height, exc.what) == (2, "validation code of transaction 1 differs")


def test_replay_names_the_first_extra_code(chain: list[BlockWrite], fresh: BlockExecutor) -> None:
    replay_up_to(fresh, chain, 2)

    def change(block: ledger_pb2.Block, header: ledger_pb2.BlockHeader) -> None:
        block.codes.append(ledger_pb2.VALID)

    exc = divergence(fresh, tamper_block(chain[1], change))
    assert (exc.height, exc.what) == (2, "validation code of transaction 2 differs")


def test_replay_detects_a_changed_tx(
    chain: list[BlockWrite], fresh: BlockExecutor, make_tx: TxFactory
) -> None:
    replay_up_to(fresh, chain, 3)
    other = make_tx(args={"key": "b", "value": 4})

    def change(block: ledger_pb2.Block, header: ledger_pb2.BlockHeader) -> None:
        block.txs[0] = other

    exc = divergence(fresh, tamper_block(chain[2], change))
    assert (exc.height, exc.what) == (3, "tx_root does not match the transactions")


@pytest.mark.parametrize(
    ("field", "value", "what"),
    [
        ("state_hash", bytes(32), "state_hash differs from the re-executed writes"),
        ("results_root", bytes(32), "results_root differs from the re-executed results"),
        ("tx_root", bytes(32), "tx_root does not match the transactions"),
        ("prev_hash", bytes(32), "prev_hash does not match the previous block's hash"),
        ("timestamp_ms", 0, "timestamp goes backwards"),
    ],
)
def test_replay_detects_a_changed_header_field(
    chain: list[BlockWrite], fresh: BlockExecutor, field: str, value: object, what: str
) -> None:
    replay_up_to(fresh, chain, 2)

    def change(block: ledger_pb2.Block, header: ledger_pb2.BlockHeader) -> None:
        setattr(header, field, value)

    exc = divergence(fresh, tamper_block(chain[1], change))
    assert (exc.height, exc.what) == (2, what)


def test_replay_detects_a_later_timestamp_that_changes_a_code(
    chain: list[BlockWrite], fresh: BlockExecutor, t0: int
) -> None:
    replay_up_to(fresh, chain, 1)

    def change(block: ledger_pb2.Block, header: ledger_pb2.BlockHeader) -> None:
        header.timestamp_ms = t0 + 10 * 60_000  # every tx of block 1 is expired by then

    exc = divergence(fresh, tamper_block(chain[0], change))
    assert (exc.height, exc.what) == (1, "validation code of transaction 0 differs")


def test_replay_refuses_a_block_that_does_not_follow_the_tip(
    chain: list[BlockWrite], fresh: BlockExecutor
) -> None:
    exc = divergence(fresh, chain[1].block_bytes)
    assert (exc.height, exc.what) == (2, "does not follow the tip at height 0")


# -- start-up check --------------------------------------------------------------------


def test_check_recent_on_a_sound_chain(chain: list[BlockWrite], ledger: Ledger) -> None:
    assert ledger.check_recent() == []
    assert ledger.check_recent(count=1) == []


def test_check_recent_detects_a_changed_header(chain: list[BlockWrite], ledger: Ledger) -> None:
    def change(block: ledger_pb2.Block, header: ledger_pb2.BlockHeader) -> None:
        header.proposer = "mallory"

    key = layout.height_key(layout.BLOCK, 2)
    ledger.store.write({key: tamper_block(chain[1], change)}, set(), sync=True)
    with pytest.raises(LedgerError, match=r"^block 2 does not hash to the hash chained after it$"):
        ledger.check_recent()
    # Only the newest block is checked when asked for one.
    assert ledger.check_recent(count=1) == []


def test_check_recent_detects_garbage_and_missing_blocks(
    chain: list[BlockWrite], ledger: Ledger
) -> None:
    key = layout.height_key(layout.BLOCK, 2)
    ledger.store.write({key: b"\xff\xff\xff"}, set(), sync=True)
    with pytest.raises(LedgerError, match=r"^block 2 does not parse"):
        ledger.check_recent()
    ledger.store.write({}, {key}, sync=True)
    with pytest.raises(LedgerError, match=r"^block 2 is missing from the block store$"):
        ledger.check_recent()
    tip_key = layout.height_key(layout.BLOCK, 3)
    ledger.store.write({}, {tip_key}, sync=True)
    with pytest.raises(LedgerError, match=r"^savepoint names height 3 but that block is missing"):
        ledger.check_recent()


def test_check_recent_detects_a_savepoint_that_disagrees(
    chain: list[BlockWrite], ledger: Ledger, genesis: Genesis
) -> None:
    tip = ledger.tip
    bad = layout.Tip(tip.height, tip.hash, bytes(32), tip.timestamp_ms)
    ledger.store.write({layout.TIP: bad.encode()}, set(), sync=True)
    reopened = Ledger(ledger.store, genesis)
    with pytest.raises(LedgerError, match=r"^block 3's state_hash differs from the savepoint$"):
        reopened.check_recent()


def test_check_recent_lists_blocks_above_the_savepoint(
    chain: list[BlockWrite], ledger: Ledger, genesis: Genesis
) -> None:
    tip = ledger.tip
    older = layout.Tip(2, chain[1].block_hash, chain[1].header.state_hash, tip.timestamp_ms)
    ledger.store.write({layout.TIP: older.encode()}, set(), sync=True)
    assert Ledger(ledger.store, genesis).check_recent() == [3]


# -- ledger guards -------------------------------------------------------------------------


def test_commit_refuses_a_block_that_does_not_extend_the_tip(
    chain: list[BlockWrite], ledger: Ledger
) -> None:
    with pytest.raises(LedgerError, match=r"^block 2 does not extend the tip \(height 3\)$"):
        ledger.commit(chain[1])


def test_ledger_refuses_another_chains_genesis(ledger: Ledger, genesis: Genesis) -> None:
    config = ledger_pb2.GenesisConfig()
    config.CopyFrom(genesis.config)
    config.created_at_ms += 1
    other = genesis_mod.parse(genesis_mod.build(config))
    with pytest.raises(LedgerError, match="this data directory belongs to chain"):
        Ledger(ledger.store, other)


def test_garbage_savepoint_is_a_ledger_error(ledger: Ledger, genesis: Genesis) -> None:
    ledger.store.write({layout.TIP: b"garbage"}, set(), sync=True)
    with pytest.raises(LedgerError):
        Ledger(ledger.store, genesis)


def test_ledger_reopens_at_its_tip(
    chain: list[BlockWrite], ledger: Ledger, genesis: Genesis
) -> None:
    assert Ledger(ledger.store, genesis).tip == ledger.tip
    assert ledger.block(0) is not None and ledger.results(0) is not None
    assert ledger.block(4) is None and ledger.results(4) is None


# -- queries ---------------------------------------------------------------------------


def test_query_reads_committed_state(
    executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, t0: int
) -> None:
    commit(executor, [make_tx(args={"key": "a", "value": [1, 2]})], t0)
    outcome = executor.query(txlib.parse(make_tx(function="get", args={"key": "a"}), 1 << 20), t0)
    assert outcome.code == TxCode.VALID
    assert json.loads(outcome.result) == [1, 2]


def test_query_is_read_only(
    executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, t0: int
) -> None:
    commit(executor, [make_tx(args={"key": "a", "value": 1})], t0)
    before = store_snapshot(ledger)
    tx = txlib.parse(make_tx(function="put", args={"key": "a", "value": 2}), 1 << 20)
    outcome = executor.query(tx, t0)
    assert outcome.code == TxCode.PERMISSION_DENIED
    assert outcome.message == "a read-only call cannot write state"
    assert outcome.writes == {}
    assert store_snapshot(ledger) == before
    # A query leaves no trace: the same signed body can still be submitted as a tx.
    assert ledger.tx_location(tx.tx_id) is None


def test_query_runs_the_identity_checks(
    executor: BlockExecutor, make_tx: TxFactory, t0: int
) -> None:
    raw = make_tx(function="get", args={"key": "a"}, now_ms=t0, ttl_ms=10)
    outcome = executor.query(txlib.parse(raw, 1 << 20), t0 + 10)
    assert outcome.code == TxCode.EXPIRED
