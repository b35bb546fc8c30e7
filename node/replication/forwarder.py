"""Forwarding admitted transactions to the Raft leader (DESIGN §3.1 step 2).

A node that is not the leader keeps what it admitted in its own mempool and sends it to
the leader in batches on /medledger/tx/1, re-sending it (below) until the transaction
commits (it then leaves the mempool) or expires. The leader admits forwarded
transactions like its own; the same bytes are the same transaction, so re-sending never
commits anything twice.

What goes in a round (every `interval_s`):
- fresh: what this node's own clients gave it since the last round (found from the
  newest end of the mempool), at once, however many are already waiting for the leader;
- due: among the oldest pending transactions, those sent to another leader than the
  current one, those whose last send is `resend_ms` old (the wait doubles with each
  re-send, up to MAX_BACKOFF times `resend_ms`), and those that reached this node by
  gossip and are still pending GOSSIP_FALLBACK times `resend_ms` after it received them
  (their origin forwards them; this node is the fallback if the origin stops).
Forwarding every gossiped transaction at once would send the leader each transaction
once per node, each costing it a parse and a check; re-sending a whole backlog every
`resend_ms` when commits lag (overload) would add that cost again when it hurts most.

The leader admits a forwarded batch in a worker thread: admission verifies signatures,
and the trio thread also runs Raft.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
import trio
from medledger.v1 import p2p_pb2

from node.clock import now_ms
from node.codes import RETRYABLE_CODES, TxCode
from node.core import NodeCore
from node.net import TX, NetworkError, PeerNetwork

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("medledger.forward")

MAX_FORWARD = 500
# The most fresh local transactions one round sends at once (the newest ones).
FRESH_SCAN_MAX = 4096
# Re-sends of a transaction the leader already has wait resend_ms, then twice that, ...
# up to this many times resend_ms.
MAX_BACKOFF = 8
# A transaction that came by gossip is forwarded by this node only if it is still
# pending this many times resend_ms after it arrived: its origin forwards it, and under
# load (commits later than resend_ms) every node re-forwarding what it was gossiped gave
# the leader each transaction once more per node.
GOSSIP_FALLBACK = 2


class Forwarder:
    def __init__(
        self,
        core: NodeCore,
        network: PeerNetwork,
        leader: Callable[[], str],
        interval_s: float = 0.05,
        resend_ms: int = 2000,
    ) -> None:
        self.core = core
        self.network = network
        self.leader = leader
        self.interval_s = interval_s
        self.resend_ms = resend_ms
        # tx id -> (when it is due again, the wait after that, the leader it went to)
        self._sent: dict[bytes, tuple[int, int, str]] = {}
        network.handle(TX, self._on_forward)

    async def run(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        last_expiry = 0
        while True:
            await trio.sleep(self.interval_s)
            leader = self.leader()
            now = now_ms()
            if now - last_expiry >= 1000:  # full scans: once a second
                last_expiry = now
                self.core.expire(now)
                self._forget_settled()
            if not leader or leader == self.core.name:
                continue
            batch = self._candidates(now, leader)
            for start in range(0, len(batch), MAX_FORWARD):
                if not await self._forward(leader, batch[start : start + MAX_FORWARD]):
                    break

    async def _forward(self, leader: str, batch: list[tuple[bytes, bytes]]) -> bool:
        request = p2p_pb2.TxForward(txs=[raw for _, raw in batch]).SerializeToString()
        try:
            reply = p2p_pb2.TxForwardReply.FromString(
                await self.network.request(leader, TX, request, timeout_s=5.0)
            )
        except (NetworkError, ValueError) as exc:
            log.debug("forward_failed", leader=leader, reason=str(exc))
            return False
        for (tx_id, _), code in zip(batch, reply.codes, strict=False):
            if code not in (TxCode.VALID, TxCode.DUPLICATE_TXID) and (
                TxCode(code) not in RETRYABLE_CODES
            ):
                # The leader will never take it (e.g. expired by its clock): settle it.
                self.core.drop(tx_id, TxCode(code), "refused by the leader")
        return True

    def _forget_settled(self) -> None:
        """Drop the send times of transactions that left the mempool (committed,
        expired or dropped), so that `_sent` stays the size of what is pending."""
        mempool = self.core.mempool
        for tx_id in [t for t in self._sent if t not in mempool]:
            del self._sent[tx_id]

    def _fresh(self) -> list[tuple[bytes, bytes]]:
        """This node's own transactions admitted since the last round, oldest first:
        the local ones newer than the newest local one sent already."""
        return self.core.fresh_local(FRESH_SCAN_MAX, self._sent)

    def _candidates(self, now: int, leader: str = "") -> list[tuple[bytes, bytes]]:
        sent = self._sent
        first_wait = self.resend_ms
        out = self._fresh()
        chosen: set[bytes] = set()
        for tx_id, _ in out:
            sent[tx_id] = (now + first_wait, first_wait, leader)
            chosen.add(tx_id)
        # Due: among the oldest, what went to another leader, or waited long enough since
        # it was last sent (or, when it came by gossip, since it arrived).
        for tx in self.core.pending_txs(MAX_FORWARD * 4):
            if tx.tx_id in chosen:
                continue
            record = sent.get(tx.tx_id)
            if record is None:
                fallback = tx.received_ms + GOSSIP_FALLBACK * first_wait
                due, wait = (0 if tx.local else fallback), first_wait
            else:
                due, wait, to = record
                if to != leader:
                    due, wait = 0, first_wait
            if now >= due:
                sent[tx.tx_id] = (now + wait, min(wait * 2, first_wait * MAX_BACKOFF), leader)
                out.append((tx.tx_id, tx.raw))
                if len(out) >= MAX_FORWARD * 4:
                    break
        return out

    async def _on_forward(self, peer: str, payload: bytes) -> bytes | None:
        leader = self.leader()
        try:
            forward = p2p_pb2.TxForward.FromString(payload)
        except ValueError:
            return None
        if leader != self.core.name:
            reply = p2p_pb2.TxForwardReply(
                codes=[int(TxCode.NOT_LEADER)] * len(forward.txs), leader=leader
            )
            return reply.SerializeToString()
        txs = list(forward.txs[: MAX_FORWARD * 2])
        codes = await trio.to_thread.run_sync(self._admit, txs, now_ms())
        return p2p_pb2.TxForwardReply(codes=codes, leader=leader).SerializeToString()

    def _admit(self, txs: list[bytes], now: int) -> list[int]:
        """Admission of a forwarded batch (worker thread)."""
        submit = self.core.submit
        return [int(submit(raw, now, local=False)[0].code) for raw in txs]
