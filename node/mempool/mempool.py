"""A bounded mempool with per-institution quotas (sans-IO: time comes in as an argument).

Order is first come, first served. Each institution may hold at most `institution_share`
of the capacity (count and bytes), so one hospital flooding its node cannot starve the
others' transactions.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Container
from dataclasses import dataclass

from node.codes import TxCode
from node.tx import Rejection


@dataclass(frozen=True, slots=True)
class PendingTx:
    tx_id: bytes
    raw: bytes
    institution: str
    expires_at_ms: int
    received_ms: int
    local: bool = True  # admitted through this node's API (not forwarded or gossiped)


@dataclass(frozen=True)
class MempoolLimits:
    max_txs: int = 50_000
    max_bytes: int = 128 * 1024 * 1024
    institution_share: float = 0.5


class Mempool:
    def __init__(self, limits: MempoolLimits) -> None:
        self.limits = limits
        self._txs: OrderedDict[bytes, PendingTx] = OrderedDict()
        # The ids of the `local` ones, in the same order: gossip asks for the oldest
        # local transactions every tenth of a second, and behind a backlog of forwarded
        # ones a walk over the whole pool (under the node's lock) stalls admission.
        self._local: OrderedDict[bytes, None] = OrderedDict()
        self._bytes = 0
        self._per_inst: dict[str, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_id: bytes) -> bool:
        return tx_id in self._txs

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def add(self, tx: PendingTx) -> None:
        """Admit `tx` or raise Rejection (DUPLICATE_TXID, MEMPOOL_FULL, QUOTA_EXCEEDED)."""
        if tx.tx_id in self._txs:
            raise Rejection(TxCode.DUPLICATE_TXID, "transaction is already pending")
        limits = self.limits
        size = len(tx.raw)
        if len(self._txs) >= limits.max_txs or self._bytes + size > limits.max_bytes:
            raise Rejection(
                TxCode.MEMPOOL_FULL,
                f"mempool is full ({len(self._txs)} transactions, {self._bytes} bytes); "
                "retry later",
            )
        count, nbytes = self._per_inst.get(tx.institution, (0, 0))
        if (
            count + 1 > limits.max_txs * limits.institution_share
            or nbytes + size > limits.max_bytes * limits.institution_share
        ):
            raise Rejection(
                TxCode.QUOTA_EXCEEDED,
                f"institution {tx.institution} already has {count} pending transactions, "
                f"its share of this node's mempool; retry later",
            )
        self._txs[tx.tx_id] = tx
        if tx.local:
            self._local[tx.tx_id] = None
        self._bytes += size
        self._per_inst[tx.institution] = (count + 1, nbytes + size)

    def restore(self, tx: PendingTx) -> None:
        """Put back a transaction taken out for a batch that was not ordered, ahead of
        newer ones and without the capacity checks (it was admitted already)."""
        self._txs[tx.tx_id] = tx
        self._txs.move_to_end(tx.tx_id, last=False)
        if tx.local:
            self._local[tx.tx_id] = None
            self._local.move_to_end(tx.tx_id, last=False)
        self._bytes += len(tx.raw)
        count, nbytes = self._per_inst.get(tx.institution, (0, 0))
        self._per_inst[tx.institution] = (count + 1, nbytes + len(tx.raw))

    def remove(self, tx_id: bytes) -> PendingTx | None:
        tx = self._txs.pop(tx_id, None)
        if tx is not None:
            if tx.local:
                del self._local[tx_id]
            self._bytes -= len(tx.raw)
            count, nbytes = self._per_inst[tx.institution]
            if count == 1:
                del self._per_inst[tx.institution]
            else:
                self._per_inst[tx.institution] = (count - 1, nbytes - len(tx.raw))
        return tx

    def take(
        self, max_txs: int, max_bytes: int, now_ms: int
    ) -> tuple[list[PendingTx], list[PendingTx]]:
        """Remove and return up to `max_txs` / `max_bytes` of the oldest pending
        transactions, plus the expired ones dropped on the way."""
        batch: list[PendingTx] = []
        expired: list[PendingTx] = []
        total = 0
        txs = self._txs
        # Only the head is visited (never a copy of the whole pool): under a backlog of
        # tens of thousands the cost of a take stays that of the batch.
        while txs:
            tx = txs[next(iter(txs))]
            if tx.expires_at_ms <= now_ms:
                expired.append(tx)
                self.remove(tx.tx_id)
                continue
            if len(batch) >= max_txs or (batch and total + len(tx.raw) > max_bytes):
                break
            batch.append(tx)
            total += len(tx.raw)
            self.remove(tx.tx_id)
        return batch, expired

    def peek(self, limit: int, local_only: bool = False) -> list[tuple[bytes, bytes]]:
        """The oldest `limit` pending transactions as (tx id, bytes), left in place."""
        if local_only:
            txs = self._txs
            return [(tx_id, txs[tx_id].raw) for tx_id in itertools.islice(self._local, limit)]
        return [(tx.tx_id, tx.raw) for tx in itertools.islice(self._txs.values(), limit)]

    def newest_local(self, limit: int, seen: Container[bytes]) -> list[tuple[bytes, bytes]]:
        """(tx id, bytes) of the local transactions admitted after the newest one in
        `seen`, oldest first, at most `limit` (the newest): walks back from the newest
        end, so a backlog of transactions already in `seen` costs nothing."""
        txs = self._txs
        out: list[tuple[bytes, bytes]] = []
        for tx_id in reversed(self._local):
            if tx_id in seen or len(out) >= limit:
                break
            out.append((tx_id, txs[tx_id].raw))
        out.reverse()
        return out

    def oldest(self, limit: int) -> list[PendingTx]:
        """Up to `limit` of the oldest pending transactions, oldest first, left in place."""
        return list(itertools.islice(self._txs.values(), limit))

    def newest(self, limit: int) -> list[PendingTx]:
        """Up to `limit` of the newest pending transactions, newest first, left in place."""
        return list(itertools.islice(reversed(self._txs.values()), limit))

    def drop_expired(self, now_ms: int) -> list[PendingTx]:
        expired = [tx for tx in self._txs.values() if tx.expires_at_ms <= now_ms]
        for tx in expired:
            self.remove(tx.tx_id)
        return expired

    def oldest_received_ms(self) -> int | None:
        for tx in self._txs.values():
            return tx.received_ms
        return None
