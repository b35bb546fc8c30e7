"""Forwarding admitted transactions to the Raft leader (DESIGN §3.1 step 2).

A node that is not the leader keeps what it admitted in its own mempool and sends it to
the leader in batches on /medledger/tx/1, re-sending every `resend_ms` until the
transaction commits (it then leaves the mempool) or expires. The leader admits forwarded
transactions like its own; the same bytes are the same transaction, so re-sending never
commits anything twice.
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


class Forwarder:
    def __init__(
        self,
        core: NodeCore,
        network: PeerNetwork,
        leader: Callable[[], str],
        interval_s: float = 0.05,
        resend_ms: int = 1000,
    ) -> None:
        self.core = core
        self.network = network
        self.leader = leader
        self.interval_s = interval_s
        self.resend_ms = resend_ms
        self._sent: dict[bytes, int] = {}
        network.handle(TX, self._on_forward)

    async def run(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        last_expiry = 0
        while True:
            await trio.sleep(self.interval_s)
            leader = self.leader()
            if now_ms() - last_expiry >= 1000:  # a full mempool scan: once a second
                last_expiry = now_ms()
                self.core.expire(last_expiry)
            if not leader or leader == self.core.name:
                continue
            batch = self._candidates(now_ms())
            if not batch:
                continue
            request = p2p_pb2.TxForward(txs=[raw for _, raw in batch]).SerializeToString()
            try:
                reply = p2p_pb2.TxForwardReply.FromString(
                    await self.network.request(leader, TX, request, timeout_s=5.0)
                )
            except (NetworkError, ValueError) as exc:
                log.debug("forward_failed", leader=leader, reason=str(exc))
                continue
            for (tx_id, _), code in zip(batch, reply.codes, strict=False):
                if code not in (TxCode.VALID, TxCode.DUPLICATE_TXID) and (
                    TxCode(code) not in RETRYABLE_CODES
                ):
                    # The leader will never take it (e.g. expired by its clock): settle it.
                    self.core.drop(tx_id, TxCode(code), "refused by the leader")

    def _candidates(self, now: int) -> list[tuple[bytes, bytes]]:
        pending = self.core.pending(MAX_FORWARD * 4)
        alive = {tx_id for tx_id, _ in pending}
        for tx_id in [t for t in self._sent if t not in alive]:
            del self._sent[tx_id]
        out = []
        for tx_id, raw in pending:
            if now - self._sent.get(tx_id, 0) >= self.resend_ms:
                self._sent[tx_id] = now
                out.append((tx_id, raw))
                if len(out) >= MAX_FORWARD:
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
        now = now_ms()
        codes = []
        for raw in forward.txs[: MAX_FORWARD * 2]:
            outcome, _ = self.core.submit(raw, now, local=False)
            codes.append(int(outcome.code))
        return p2p_pb2.TxForwardReply(codes=codes, leader=leader).SerializeToString()
