"""`node.ledger.verify.verify`: re-derives every hash of a stored chain, so a change made
through the store (with valid checksums) is found and named by its height."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from medledger.v1 import ledger_pb2

from node.chain import build_executor
from node.codes import TxCode
from node.execution.executor import BlockExecutor
from node.execution.sandbox import InProcessMeteredEngine
from node.genesis import Genesis
from node.ledger import layout
from node.ledger.kvstore import MemoryKV
from node.ledger.ledger import Ledger, decode_block
from node.ledger.verify import verify
from node.tx import tx_id_of

from .builders import TxFactory, metered_engine

HEIGHT = 10


@pytest.fixture
def executor(genesis: Genesis, ledger: Ledger) -> BlockExecutor:
    """Every built-in contract: verify re-executes with all the chain carries (the
    end-of-block sweep of `referral` included)."""
    names = tuple(c.name for c in genesis.config.contracts)
    return build_executor(genesis, ledger, metered_engine(genesis, names))


@pytest.fixture
def chain(executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, t0: int) -> list[bytes]:
    """Ten blocks; block h puts k<h> = h and shared = h, and the even ones hold a failing
    delete. Returns the first tx id of every block (index 0 = block 1)."""
    first_ids: list[bytes] = []
    for h in range(1, HEIGHT + 1):
        txs = [
            make_tx(args={"key": f"k{h}", "value": h}),
            make_tx(args={"key": "shared", "value": h}),
        ]
        if h % 2 == 0:
            txs.append(make_tx(function="delete", args={"key": "missing"}))
        write = executor.derive(txs, t0 + 10 * h, "hosp1")
        ledger.commit(write)
        first_ids.append(tx_id_of(txs[0]))
    return first_ids


def store_of(ledger: Ledger) -> MemoryKV:
    store = ledger.store
    assert isinstance(store, MemoryKV)
    return store


def put(ledger: Ledger, key: bytes, value: bytes) -> None:
    ledger.store.write({key: value}, set(), sync=True)


def rewrite_block(
    ledger: Ledger, height: int, change: Callable[[ledger_pb2.Block, ledger_pb2.BlockHeader], None]
) -> None:
    key = layout.height_key(layout.BLOCK, height)
    block, header = decode_block(ledger.store.get(key) or b"")
    change(block, header)
    block.header = header.SerializeToString()
    put(ledger, key, block.SerializeToString())


def test_an_untampered_chain_verifies(chain: list[bytes], ledger: Ledger) -> None:
    report = verify(store_of(ledger), InProcessMeteredEngine())
    assert report.ok, report.problem
    assert report.height == HEIGHT
    assert report.last_block_hash == ledger.tip.hash.hex()
    assert report.bad_height is None and report.problem == ""


def test_a_fresh_ledger_verifies(ledger: Ledger) -> None:
    report = verify(store_of(ledger), InProcessMeteredEngine())
    assert (report.ok, report.height) == (True, 0)


def test_changed_code(chain: list[bytes], ledger: Ledger) -> None:
    def change(block: ledger_pb2.Block, header: ledger_pb2.BlockHeader) -> None:
        assert block.codes[2] == ledger_pb2.CONTRACT_ERROR
        block.codes[2] = ledger_pb2.VALID

    rewrite_block(ledger, 4, change)
    report = verify(store_of(ledger), InProcessMeteredEngine())
    assert (report.ok, report.bad_height) == (False, 4)
    assert report.problem == "block 4: validation code of transaction 2 differs"


def test_changed_args_of_a_tx(chain: list[bytes], ledger: Ledger) -> None:
    def change(block: ledger_pb2.Block, header: ledger_pb2.BlockHeader) -> None:
        signed = ledger_pb2.SignedTx.FromString(block.txs[1])
        body = ledger_pb2.TxBody.FromString(signed.body)
        body.args = body.args.replace(b'"value":5', b'"value":6')
        signed.body = body.SerializeToString()
        block.txs[1] = signed.SerializeToString()

    rewrite_block(ledger, 5, change)
    report = verify(store_of(ledger), InProcessMeteredEngine())
    assert (report.ok, report.bad_height) == (False, 5)
    assert report.problem == "block 5: tx_root does not match the transactions"


@pytest.mark.parametrize("height", [1, 6, HEIGHT])
def test_changed_header_timestamp(chain: list[bytes], ledger: Ledger, height: int) -> None:
    def change(block: ledger_pb2.Block, header: ledger_pb2.BlockHeader) -> None:
        header.timestamp_ms += 1

    rewrite_block(ledger, height, change)
    report = verify(store_of(ledger), InProcessMeteredEngine())
    assert (report.ok, report.bad_height) == (False, height)
    assert "header was changed" in report.problem


def test_changed_state_value(chain: list[bytes], ledger: Ledger) -> None:
    key = layout.STATE + b"kv/k7"
    value = layout.VersionedValue.decode(ledger.store.get(key) or b"")
    assert (value.height, value.value) == (7, b"7")
    put(ledger, key, layout.VersionedValue(value.height, value.index, b"8").encode())
    report = verify(store_of(ledger), InProcessMeteredEngine())
    assert (report.ok, report.bad_height) == (False, 7)
    assert report.problem.startswith("state value b'kv/k7' differs")


def test_changed_state_value_and_its_version(chain: list[bytes], ledger: Ledger) -> None:
    # Whatever version the tamperer writes, the height named is the one that wrote it.
    put(ledger, layout.STATE + b"kv/shared", layout.VersionedValue(3, 0, b"3").encode())
    report = verify(store_of(ledger), InProcessMeteredEngine())
    assert (report.ok, report.bad_height) == (False, HEIGHT)


def test_deleted_state_value(chain: list[bytes], ledger: Ledger) -> None:
    ledger.store.write({}, {layout.STATE + b"kv/k2"}, sync=True)
    report = verify(store_of(ledger), InProcessMeteredEngine())
    assert (report.ok, report.bad_height) == (False, 2)


def test_changed_tx_index_entry(chain: list[bytes], ledger: Ledger) -> None:
    key = layout.TXINDEX + chain[2]
    location = layout.TxLocation.decode(ledger.store.get(key) or b"")
    assert location == layout.TxLocation(3, 0, TxCode.VALID)
    put(ledger, key, layout.TxLocation(3, 0, TxCode.CONTRACT_ERROR).encode())
    report = verify(store_of(ledger), InProcessMeteredEngine())
    assert (report.ok, report.bad_height) == (False, 3)
    assert report.problem.startswith("tx index entry")


def test_deleted_tx_index_entry(chain: list[bytes], ledger: Ledger) -> None:
    ledger.store.write({}, {layout.TXINDEX + chain[5]}, sync=True)
    report = verify(store_of(ledger), InProcessMeteredEngine())
    assert (report.ok, report.bad_height) == (False, 6)


def test_changed_history_entry(chain: list[bytes], ledger: Ledger) -> None:
    key = layout.history_key(b"kv/shared", 8, 1)
    assert ledger.store.get(key) == b"\x018"
    put(ledger, key, b"\x019")
    report = verify(store_of(ledger), InProcessMeteredEngine())
    assert (report.ok, report.bad_height) == (False, 8)
    assert report.problem.startswith("history entry")


def test_changed_results(chain: list[bytes], ledger: Ledger) -> None:
    key = layout.height_key(layout.RESULTS, 9)
    results = ledger_pb2.BlockResults.FromString(ledger.store.get(key) or b"")
    results.results[0].message = "all fine"
    put(ledger, key, results.SerializeToString())
    report = verify(store_of(ledger), InProcessMeteredEngine())
    assert (report.ok, report.bad_height) == (False, 9)
    assert report.problem == "stored results of block 9 differ from re-execution"


def test_missing_block(chain: list[bytes], ledger: Ledger) -> None:
    ledger.store.write({}, {layout.height_key(layout.BLOCK, 4)}, sync=True)
    report = verify(store_of(ledger), InProcessMeteredEngine())
    assert (report.ok, report.bad_height) == (False, 4)
    assert report.problem == "block 4 is missing"


def test_savepoint_that_does_not_name_the_last_block(chain: list[bytes], ledger: Ledger) -> None:
    tip = ledger.tip
    put(ledger, layout.TIP, layout.Tip(tip.height, bytes(32), tip.state_hash, 0).encode())
    report = verify(store_of(ledger), InProcessMeteredEngine())
    assert report.ok is False and report.bad_height == HEIGHT


def test_not_a_ledger() -> None:
    report = verify(MemoryKV(), InProcessMeteredEngine())
    assert (report.ok, report.bad_height) == (False, 0)
    assert report.problem == "no genesis block: this is not a ledger data directory"


def test_garbage_savepoint_is_a_failed_report(chain: list[bytes], ledger: Ledger) -> None:
    put(ledger, layout.TIP, b"garbage")
    report = verify(store_of(ledger), InProcessMeteredEngine())
    assert report.ok is False
