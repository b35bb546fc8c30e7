"""Raft messages over the network: one frame per peer per Ready, on /medledger/raft/1."""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from node.consensus import Message
from node.net import RAFT, PeerNetwork
from node.ordering.raft_orderer import RaftOrderer
from node.ordering.raft_wire import WireError, decode, encode

log = structlog.get_logger("medledger.raft")


class RaftTransport:
    def __init__(self, network: PeerNetwork, orderer: RaftOrderer) -> None:
        self.network = network
        self.orderer = orderer
        self.malformed = 0
        network.handle(RAFT, self._on_frame)
        orderer.send = self.send

    def send(self, messages: Sequence[Message]) -> None:
        by_peer: dict[str, list[Message]] = {}
        for m in messages:
            by_peer.setdefault(m.to, []).append(m)
        for peer, batch in by_peer.items():
            if not self.network.send(peer, RAFT, encode(batch)):
                # Raft tolerates loss; telling it stops pipelining into the void.
                self.orderer.raft.report_unreachable(peer)

    async def _on_frame(self, peer: str, payload: bytes) -> bytes | None:
        try:
            messages = decode(payload, peer)
        except WireError as exc:
            self.malformed += 1
            log.warning("raft_frame_refused", peer=peer, reason=str(exc))
            return None
        for message in messages:
            self.orderer.step(message)
        return None
