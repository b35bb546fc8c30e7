"""Commit votes between consenters and the certificates they form (DESIGN §3.1 step 5).

After applying a block, a consenter signs its hash and sends the vote to the other
consenters on /medledger/vote/1; when a quorum of votes for one hash arrives, the
certificate is stored beside the block and observers are told the block exists. A
certified hash that differs from this node's own halts the node (`on_diverged`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import structlog
import trio
from medledger.v1 import p2p_pb2

from node.core import NodeCore
from node.crypto import keys
from node.ledger.ledger import BlockWrite
from node.net import ANNOUNCE, VOTE, PeerNetwork
from node.ordering.certificates import (
    BadVote,
    CertificateCollector,
    ConsenterKeys,
    Diverged,
    sign_vote,
)

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("medledger.votes")


class CommitVoter:
    def __init__(
        self,
        core: NodeCore,
        network: PeerNetwork,
        key: keys.PrivateKey,
        consenters: ConsenterKeys,
        observers: Callable[[], Iterable[str]],
        on_diverged: Callable[[Diverged], None],
        voters: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        """`voters()`: the consenters to send this node's votes to (the chain state's set
        now); `observers()`: the nodes told directly that a block is certified."""
        self.core = core
        self.network = network
        self.key = key
        self.consenters = consenters
        self.collector = CertificateCollector(consenters)
        self.observers = observers
        self.voters: Callable[[], Iterable[str]] = voters or (lambda: list(consenters.keys))
        self.on_diverged = on_diverged
        self.bad_votes = 0
        # Also tells observers by gossip (set by the node when gossip runs).
        self.announce: Callable[[bytes], None] = lambda payload: None
        self._send, self._receive = trio.open_memory_channel[tuple[int, bytes]](10_000)
        self._token: trio.lowlevel.TrioToken | None = None
        network.handle(VOTE, self._on_vote)
        self.committed_listener = self._committed  # removed again when the role ends
        core.commit_listeners.append(self.committed_listener)

    def _committed(self, write: BlockWrite, _latencies: list[float]) -> None:
        # Called on the applying worker thread: hand over to the trio loop.
        if self._token is not None:
            self._token.run_sync_soon(self._send.send_nowait, (write.height, write.block_hash))

    async def run(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        task_status.started()
        async for height, block_hash in self._receive:
            vote = sign_vote(self.key, self.core.name, height, block_hash)
            try:
                self.collector.derived(height, block_hash)
                self._record(vote)
            except Diverged as exc:
                self.on_diverged(exc)
                return
            payload = vote.SerializeToString()
            for peer in self.voters():
                if peer != self.core.name:
                    self.network.send(peer, VOTE, payload)

    async def _on_vote(self, peer: str, payload: bytes) -> bytes | None:
        try:
            vote = p2p_pb2.CommitVote.FromString(payload)
            if vote.node != peer:
                raise BadVote(f"{peer} sent a vote in the name of {vote.node}")
            self._record(vote)
        except (BadVote, ValueError) as exc:
            self.bad_votes += 1
            log.warning("vote_refused", peer=peer, reason=str(exc))
        except Diverged as exc:
            self.on_diverged(exc)
        return None

    def _record(self, vote: p2p_pb2.CommitVote) -> None:
        cert = self.collector.add(vote)
        if cert is None:
            return
        self.core.ledger.put_certificate(vote.height, cert)
        certified = self.collector.certified(vote.height) or vote.block_hash
        announce = p2p_pb2.BlockAnnounce(
            height=vote.height, block_hash=certified, node=self.core.name
        ).SerializeToString()
        for peer in self.observers():
            self.network.send(peer, ANNOUNCE, announce)
        self.announce(announce)
