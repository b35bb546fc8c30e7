"""Block sync (DESIGN §3.1 step 6): pulling certified blocks from peers.

Hospitals that are not consenters and the regulator do not run Raft: they hear that a
block exists (an announcement, or a periodic poll, since announcements may be lost),
ask a peer for the blocks above their tip on /medledger/sync/1, check each block's
certificate (a quorum of consenter signatures over its hash), re-execute it and compare
every derived field with the certified header, and commit it. A consenter whose Raft log
was compacted past it uses the same protocol to catch up before Raft resumes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
import trio
from medledger.v1 import ledger_pb2, p2p_pb2

from node.clock import now_ms
from node.core import NodeCore
from node.crypto.hashing import sha256
from node.net import ANNOUNCE, SYNC, NetworkError, PeerNetwork
from node.ordering.certificates import ConsenterKeys

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("medledger.sync")

MAX_BLOCKS = 64


class BlockSyncServer:
    def __init__(self, core: NodeCore, network: PeerNetwork, leader: Callable[[], str]) -> None:
        self.core = core
        self.leader = leader
        network.handle(SYNC, self._on_request)

    async def _on_request(self, peer: str, payload: bytes) -> bytes | None:
        try:
            request = p2p_pb2.SyncRequest.FromString(payload)
        except ValueError:
            return None
        return await trio.to_thread.run_sync(self._answer, request)

    def _answer(self, request: p2p_pb2.SyncRequest) -> bytes:
        ledger = self.core.ledger
        tip = ledger.tip.height
        response = p2p_pb2.SyncResponse(tip_height=tip, leader=self.leader())
        count = max(1, min(request.max_blocks or MAX_BLOCKS, MAX_BLOCKS))
        for height in range(
            max(1, request.from_height), min(tip, request.from_height + count - 1) + 1
        ):
            block = ledger.block_with_certificate(height)
            if block is None or not block.certificate.signatures:
                break  # certified blocks only: the rest is served once certified
            response.blocks.append(block)
        return response.SerializeToString()


class BlockSyncer:
    def __init__(
        self,
        core: NodeCore,
        network: PeerNetwork,
        consenters: ConsenterKeys,
        sources: list[str],
        interval_s: float = 1.0,
        stop_before: Callable[[], bool] = lambda: False,
    ) -> None:
        self.core = core
        self.network = network
        self.consenters = consenters
        self.sources = sources
        self.interval_s = interval_s
        # Checked before each block: True stops syncing (this node becomes a consenter).
        self.stop_before = stop_before
        self.leader = ""
        self.rejected = 0
        self._wake = trio.Event()
        network.handle(ANNOUNCE, self._on_announce)

    def announced(self, height: int) -> None:
        """A block above our tip exists (direct announcement or gossip): sync now."""
        if height > self.core.ledger.tip.height:
            self._wake.set()

    async def _on_announce(self, peer: str, payload: bytes) -> bytes | None:
        try:
            announce = p2p_pb2.BlockAnnounce.FromString(payload)
        except ValueError:
            return None
        self.announced(announce.height)
        return None

    async def run(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with trio.move_on_after(self.interval_s):
                await self._wake.wait()
            self._wake = trio.Event()
            while await self.sync_once():
                pass

    async def sync_until(self, raft_index: int) -> None:
        """Catch up until the applied Raft index reaches `raft_index` (a consenter whose
        log the leader compacted)."""
        while self.core.ledger.raft_applied() < raft_index:
            if not await self.sync_once():
                await trio.sleep(0.2)

    async def sync_once(self) -> bool:
        """Ask one peer for blocks above the tip; True when some were committed."""
        peers = [p for p in self.sources if p in set(self.network.peers())] or self.sources
        random.shuffle(peers)
        for peer in peers:
            request = p2p_pb2.SyncRequest(
                from_height=self.core.ledger.tip.height + 1, max_blocks=MAX_BLOCKS
            )
            try:
                raw = await self.network.request(peer, SYNC, request.SerializeToString(), 10.0)
                response = p2p_pb2.SyncResponse.FromString(raw)
            except (NetworkError, ValueError) as exc:
                log.debug("sync_failed", peer=peer, reason=str(exc))
                continue
            if response.leader:
                self.leader = response.leader
            if not response.blocks:
                continue
            committed = await trio.to_thread.run_sync(self._apply, peer, list(response.blocks))
            if committed:
                return True
        return False

    def _apply(self, peer: str, blocks: list[ledger_pb2.Block]) -> int:
        committed = 0
        for block in blocks:
            if self.stop_before():
                break
            header = ledger_pb2.BlockHeader.FromString(block.header)
            if header.height != self.core.ledger.tip.height + 1:
                break
            block_hash = sha256(block.header)
            if not self.consenters.certificate_valid(header.height, block_hash, block.certificate):
                self.rejected += 1
                log.warning("sync_block_uncertified", peer=peer, height=header.height)
                break
            cert = ledger_pb2.CommitCertificate()
            cert.CopyFrom(block.certificate)
            block.ClearField("certificate")
            # Divergence (our re-execution differs from the certified header) propagates:
            # the node halts rather than serve a state the consortium did not certify.
            self.core.apply_synced(block.SerializeToString(), cert, now_ms())
            committed += 1
        return committed
