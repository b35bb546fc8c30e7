"""The bounded mempool with per-institution quotas, and the block cutter (both sans-IO)."""

from __future__ import annotations

import pytest

from node.codes import TxCode
from node.mempool.mempool import Mempool, MempoolLimits, PendingTx
from node.ordering.cutter import BlockCutter, CutterConfig
from node.tx import Rejection


def pending(
    n: int, institution: str = "hosp1", size: int = 10, expires: int = 10_000, received: int = 0
) -> PendingTx:
    return PendingTx(n.to_bytes(32, "big"), bytes(size), institution, expires, received)


def add_refused(pool: Mempool, tx: PendingTx) -> Rejection:
    with pytest.raises(Rejection) as info:
        pool.add(tx)
    return info.value


def test_take_is_first_come_first_served() -> None:
    pool = Mempool(MempoolLimits(100, 10_000, 1.0))
    for n in (5, 3, 9, 1):
        pool.add(pending(n, received=n))
    assert len(pool) == 4
    assert pool.oldest_received_ms() == 5
    batch, expired = pool.take(3, 10_000, now_ms=0)
    assert [t.tx_id[-1] for t in batch] == [5, 3, 9]
    assert expired == []
    assert len(pool) == 1
    assert pool.oldest_received_ms() == 1
    batch, _ = pool.take(3, 10_000, now_ms=0)
    assert [t.tx_id[-1] for t in batch] == [1]
    assert pool.oldest_received_ms() is None
    assert pool.size_bytes == 0


def test_take_respects_max_bytes_but_always_takes_one() -> None:
    pool = Mempool(MempoolLimits(100, 10_000, 1.0))
    pool.add(pending(1, size=50))
    pool.add(pending(2, size=30))
    pool.add(pending(3, size=30))
    batch, _ = pool.take(10, 20, now_ms=0)
    # The first one is taken even though it alone exceeds max_bytes: never stuck.
    assert [t.tx_id[-1] for t in batch] == [1]
    batch, _ = pool.take(10, 60, now_ms=0)
    assert [t.tx_id[-1] for t in batch] == [2, 3]


def test_full_by_count() -> None:
    pool = Mempool(MempoolLimits(max_txs=3, max_bytes=10_000, institution_share=1.0))
    for n in range(3):
        pool.add(pending(n))
    rej = add_refused(pool, pending(9))
    assert rej.code == TxCode.MEMPOOL_FULL
    assert rej.message == "mempool is full (3 transactions, 30 bytes); retry later"
    assert (9).to_bytes(32, "big") not in pool


def test_full_by_bytes() -> None:
    pool = Mempool(MempoolLimits(max_txs=100, max_bytes=100, institution_share=1.0))
    pool.add(pending(1, size=60))
    pool.add(pending(2, size=40))  # exactly at the limit: admitted
    rej = add_refused(pool, pending(3, size=1))
    assert rej.code == TxCode.MEMPOOL_FULL
    assert pool.size_bytes == 100 and len(pool) == 2


def test_institution_quota_leaves_room_for_others() -> None:
    pool = Mempool(MempoolLimits(max_txs=10, max_bytes=10_000, institution_share=0.5))
    for n in range(5):
        pool.add(pending(n, "hosp1"))
    rej = add_refused(pool, pending(99, "hosp1"))
    assert rej.code == TxCode.QUOTA_EXCEEDED
    assert rej.message == (
        "institution hosp1 already has 5 pending transactions, its share of this node's "
        "mempool; retry later"
    )
    pool.add(pending(100, "hosp2"))  # another institution still gets in
    assert len(pool) == 6


def test_institution_quota_by_bytes() -> None:
    pool = Mempool(MempoolLimits(max_txs=100, max_bytes=1_000, institution_share=0.5))
    pool.add(pending(1, "hosp1", size=400))
    assert add_refused(pool, pending(2, "hosp1", size=101)).code == TxCode.QUOTA_EXCEEDED
    pool.add(pending(3, "hosp1", size=100))
    pool.add(pending(4, "hosp2", size=500))


def test_duplicate_is_refused() -> None:
    pool = Mempool(MempoolLimits(10, 10_000, 1.0))
    pool.add(pending(1))
    rej = add_refused(pool, pending(1))
    assert rej.code == TxCode.DUPLICATE_TXID
    assert rej.message == "transaction is already pending"
    assert len(pool) == 1
    # Even when full, a duplicate is named as a duplicate.
    full = Mempool(MempoolLimits(1, 10_000, 1.0))
    full.add(pending(1))
    assert add_refused(full, pending(1)).code == TxCode.DUPLICATE_TXID


def test_take_drops_expired_ones() -> None:
    pool = Mempool(MempoolLimits(100, 10_000, 1.0))
    pool.add(pending(1, expires=100))
    pool.add(pending(2, expires=500))
    pool.add(pending(3, expires=101))
    batch, expired = pool.take(10, 10_000, now_ms=101)
    assert [t.tx_id[-1] for t in batch] == [2]
    assert [t.tx_id[-1] for t in expired] == [1, 3]  # expires_at == now counts as expired
    assert len(pool) == 0 and pool.size_bytes == 0


def test_remove_accounting_frees_capacity_and_quota() -> None:
    pool = Mempool(MempoolLimits(max_txs=4, max_bytes=100, institution_share=0.5))
    pool.add(pending(1, "hosp1", size=20))
    pool.add(pending(2, "hosp1", size=30))
    assert add_refused(pool, pending(3, "hosp1")).code == TxCode.QUOTA_EXCEEDED
    removed = pool.remove((1).to_bytes(32, "big"))
    assert removed is not None and removed.tx_id[-1] == 1
    assert pool.remove((1).to_bytes(32, "big")) is None
    assert pool.size_bytes == 30 and len(pool) == 1
    pool.add(pending(3, "hosp1", size=20))  # the freed quota slot is usable again
    pool.remove((2).to_bytes(32, "big"))
    pool.remove((3).to_bytes(32, "big"))
    assert pool.size_bytes == 0 and len(pool) == 0
    # With everything removed the whole share is available again, to the byte.
    pool.add(pending(4, "hosp1", size=50))
    pool.add(pending(5, "hosp1", size=0))
    assert add_refused(pool, pending(6, "hosp1", size=0)).code == TxCode.QUOTA_EXCEEDED


def test_take_accounting_matches_remove() -> None:
    pool = Mempool(MempoolLimits(max_txs=4, max_bytes=100, institution_share=0.5))
    pool.add(pending(1, "hosp1", size=50))
    pool.add(pending(2, "hosp2", size=50))
    pool.take(1, 100, now_ms=0)
    pool.add(pending(3, "hosp1", size=50))
    assert pool.size_bytes == 100


# -- cutter ----------------------------------------------------------------------------

CUTTER = BlockCutter(CutterConfig(batch_timeout_ms=50, max_block_txs=3, max_block_bytes=1_000))


def test_cutter_waits_with_nothing_pending() -> None:
    assert not CUTTER.should_cut(0, 0, None, now_ms=10_000)
    assert not CUTTER.should_cut(0, 0, 0, now_ms=10_000)
    assert CUTTER.next_deadline_ms(None) is None


def test_cutter_cuts_on_count() -> None:
    assert not CUTTER.should_cut(2, 20, oldest_ms=100, now_ms=100)
    assert CUTTER.should_cut(3, 30, oldest_ms=100, now_ms=100)


def test_cutter_cuts_on_bytes() -> None:
    assert not CUTTER.should_cut(1, 999, oldest_ms=100, now_ms=100)
    assert CUTTER.should_cut(1, 1_000, oldest_ms=100, now_ms=100)


def test_cutter_cuts_on_timeout() -> None:
    assert not CUTTER.should_cut(1, 10, oldest_ms=100, now_ms=149)
    assert CUTTER.should_cut(1, 10, oldest_ms=100, now_ms=150)


def test_cutter_next_deadline() -> None:
    assert CUTTER.next_deadline_ms(100) == 150
    assert CUTTER.should_cut(1, 1, 100, CUTTER.next_deadline_ms(100) or 0)


def test_peek_local_only_keeps_pool_order_through_take_remove_and_restore() -> None:
    pool = Mempool(MempoolLimits(100, 10_000, 1.0))
    for n in range(1, 9):
        tx = pending(n)
        pool.add(PendingTx(tx.tx_id, tx.raw, tx.institution, tx.expires_at_ms, n, n % 2 == 0))

    def local(limit: int = 10) -> list[int]:
        return [tx_id[-1] for tx_id, _ in pool.peek(limit, local_only=True)]

    assert local() == [2, 4, 6, 8] and local(2) == [2, 4]
    assert [tx_id[-1] for tx_id, _ in pool.peek(3)] == [1, 2, 3]
    batch, _ = pool.take(3, 10_000, now_ms=0)  # 1, 2, 3
    pool.remove((6).to_bytes(32, "big"))
    assert local() == [4, 8]
    for tx in reversed(batch):
        pool.restore(tx)
    assert local() == [2, 4, 8]
    assert [tx.tx_id[-1] for tx in pool.oldest(3)] == [1, 2, 3]
    assert [tx.tx_id[-1] for tx in pool.newest(2)] == [8, 7]


def test_newest_local_stops_at_what_was_seen() -> None:
    pool = Mempool(MempoolLimits(100, 10_000, 1.0))
    for n in range(1, 9):
        tx = pending(n)
        pool.add(PendingTx(tx.tx_id, tx.raw, tx.institution, tx.expires_at_ms, n, n % 2 == 0))

    def fresh(seen: set[int], limit: int = 10) -> list[int]:
        ids = {n.to_bytes(32, "big") for n in seen}
        return [tx_id[-1] for tx_id, _ in pool.newest_local(limit, ids)]

    assert fresh(set()) == [2, 4, 6, 8]  # oldest first
    assert fresh({4}) == [6, 8]  # only what came after the newest one gossiped
    assert fresh({8}) == []
    assert fresh(set(), limit=2) == [6, 8]  # the newest when there are too many
