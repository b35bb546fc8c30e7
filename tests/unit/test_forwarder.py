"""Forwarder round selection: a follower sends its own new transactions at once, re-sends
what stays pending after `resend_ms`, and holds back what it received by gossip until
GOSSIP_FALLBACK times `resend_ms` after it arrived (its origin forwards it)."""

from __future__ import annotations

import pytest

from node.codes import TxCode
from node.core import NodeCore
from node.execution.executor import BlockExecutor
from node.genesis import Genesis
from node.ledger.ledger import Ledger
from node.mempool.mempool import Mempool, MempoolLimits
from node.net import MemoryNetwork
from node.replication.forwarder import GOSSIP_FALLBACK, MAX_FORWARD, Forwarder
from node.tx import tx_id_of

from .builders import TxFactory


@pytest.fixture
def core(genesis: Genesis, ledger: Ledger, executor: BlockExecutor) -> NodeCore:
    return NodeCore("hosp2", genesis, ledger, executor, executor.checker, Mempool(MempoolLimits()))


@pytest.fixture
def forwarder(core: NodeCore) -> Forwarder:
    return Forwarder(core, MemoryNetwork().endpoint("hosp2"), lambda: "hosp1", resend_ms=1000)


def ids(batch: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [tx_id for tx_id, _ in batch]


def test_new_local_transactions_go_at_once_and_again_after_resend_ms(
    core: NodeCore, forwarder: Forwarder, make_tx: TxFactory, t0: int
) -> None:
    first = [make_tx() for _ in range(3)]
    for raw in first:
        core.submit(raw, t0)
    assert ids(forwarder._candidates(t0)) == [tx_id_of(r) for r in first]
    assert forwarder._candidates(t0 + 10) == []
    later = [make_tx() for _ in range(2)]
    for raw in later:
        core.submit(raw, t0 + 20)
    assert ids(forwarder._candidates(t0 + 20)) == [tx_id_of(r) for r in later]
    # A second later the first three are due again (still pending), the others not yet.
    assert ids(forwarder._candidates(t0 + 1000)) == [tx_id_of(r) for r in first]
    assert ids(forwarder._candidates(t0 + 1020)) == [tx_id_of(r) for r in later]


def test_gossiped_transactions_wait_for_their_origin(
    core: NodeCore, forwarder: Forwarder, make_tx: TxFactory, t0: int
) -> None:
    gossiped = make_tx()
    core.submit(gossiped, t0, local=False)
    own = make_tx()
    core.submit(own, t0 + 5)
    assert ids(forwarder._candidates(t0 + 5)) == [tx_id_of(own)]
    wait = GOSSIP_FALLBACK * 1000  # the fixture's resend_ms
    assert tx_id_of(gossiped) not in ids(forwarder._candidates(t0 + wait - 1))
    assert tx_id_of(gossiped) in ids(forwarder._candidates(t0 + wait))


def test_a_backlog_beyond_the_oldest_window_is_still_forwarded(
    core: NodeCore, forwarder: Forwarder, make_tx: TxFactory, t0: int
) -> None:
    # More already-sent transactions than one look at the oldest covers must not stop
    # the new ones from going out.
    old = [make_tx() for _ in range(MAX_FORWARD * 4 + 10)]
    for raw in old:
        core.submit(raw, t0)
    sent = forwarder._candidates(t0)
    assert len(sent) == len(old)
    new = make_tx()
    core.submit(new, t0 + 50)
    assert ids(forwarder._candidates(t0 + 50)) == [tx_id_of(new)]


def test_settled_transactions_are_forgotten(
    core: NodeCore, forwarder: Forwarder, make_tx: TxFactory, t0: int
) -> None:
    raw = make_tx()
    core.submit(raw, t0)
    forwarder._candidates(t0)
    core.drop(tx_id_of(raw), TxCode.EXPIRED, "gone")
    forwarder._forget_settled()
    assert forwarder._sent == {}


def test_re_sends_back_off_and_a_new_leader_gets_everything_at_once(
    core: NodeCore, forwarder: Forwarder, make_tx: TxFactory, t0: int
) -> None:
    raw = make_tx()
    core.submit(raw, t0)
    sends = [t for t in range(t0, t0 + 20_000, 50) if forwarder._candidates(t, "hosp1")]
    assert [t - t0 for t in sends] == [0, 1000, 2000, 4000, 8000, 16000]
    assert ids(forwarder._candidates(t0 + 20_000, "hosp3")) == [tx_id_of(raw)]
    assert forwarder._candidates(t0 + 20_050, "hosp3") == []
