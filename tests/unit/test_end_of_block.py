"""The end-of-block sweep: run by the system after every block, covered by the hashes."""

from __future__ import annotations

from node.chain import build_executor
from node.crypto.hashing import sha256
from node.execution.executor import BlockExecutor
from node.execution.sandbox import ENGINE_VERSION, InProcessMeteredEngine
from node.execution.types import ContractModule
from node.genesis import Genesis
from node.ledger.kvstore import MemoryKV
from node.ledger.ledger import Ledger

from .builders import TxFactory, metered_engine

REFERRAL_STUB = """
def sweep(ctx, limit):
    if ctx.caller.role != "system":
        raise PermissionDenied("the node sweeps")
    ctx.put("swept/" + str(ctx.block_time), limit)
"""


def with_stub(genesis: Genesis, ledger: Ledger) -> BlockExecutor:
    engine = metered_engine(genesis)
    engine.load(
        ContractModule(
            "referral", REFERRAL_STUB, sha256(REFERRAL_STUB.encode()), ENGINE_VERSION, ()
        )
    )
    return build_executor(genesis, ledger, engine)


def test_sweep_runs_after_every_block_and_replays(
    genesis: Genesis, make_tx: TxFactory, t0: int
) -> None:
    ledger = Ledger(MemoryKV(), genesis)
    executor = with_stub(genesis, ledger)
    write = executor.derive([make_tx(args={"key": "a", "value": 1})], t0, "hosp1")
    ledger.commit(write)
    swept = [sw for sw in write.state if sw.key.startswith(b"referral/swept/")]
    assert [(sw.key, sw.tx_index) for sw in swept] == [(f"referral/swept/{t0}".encode(), 1)]
    results = ledger.results(1)
    assert results is not None and results.end_of_block.code == 0

    # A fresh node replays it to the same hashes; one without the sweep cannot.
    other = Ledger(MemoryKV(), genesis)
    assert with_stub(genesis, other).replay(write.block_bytes).block_hash == write.block_hash
    without = build_executor(genesis, Ledger(MemoryKV(), genesis), InProcessMeteredEngine())
    assert without.derive([], t0, "x").header.state_hash != write.header.state_hash


def test_no_sweep_when_the_contract_is_not_loaded(
    executor: BlockExecutor, make_tx: TxFactory, t0: int
) -> None:
    write = executor.derive([make_tx(args={"key": "a", "value": 1})], t0, "hosp1")
    executor.ledger.commit(write)
    results = executor.ledger.results(1)
    assert results is not None and not results.HasField("end_of_block")
