"""Gossip over libp2p GossipSub: `medledger/txs/1` (transaction batches of 100+) and
`medledger/blocks/1` (certified block announcements), configured deliberately.

Gossip is an optimisation, never relied on for correctness: transactions also reach the
leader by direct forwarding, and observers also poll with block sync. py-libp2p's
defaults drop almost everything under load (NOTES.md: spam protection at 10 messages per
topic per peer per second, 32-message subscription queues), so those limits are raised
to what a consortium sends, while only consortium peers may forward (validator).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog
import trio

from node.libp2p_network import Libp2pNetwork
from node.p2p_hardening import guard_pubsub_handlers

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("medledger.gossip")

TXS = "medledger/txs/1"
BLOCKS = "medledger/blocks/1"
QUEUE = 4096


class Gossip:
    def __init__(
        self,
        network: Libp2pNetwork,
        on_message: Callable[[str, str, bytes], Awaitable[None]],
    ) -> None:
        self.network = network
        self.on_message = on_message  # (topic, peer name, data)
        self.dropped = 0
        self.refused = 0
        self._pubsub: Any = None

    def _validator(self, forwarder: Any, msg: Any) -> bool:
        peer = str(forwarder.to_base58())
        if peer not in self.network.names_by_id:
            self.refused += 1
            return False
        return True

    async def run(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        import libp2p.pubsub.pubsub as pubsub_mod
        from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
        from libp2p.tools.anyio_service import background_trio_service

        # Read by Pubsub.subscribe when it makes each subscription's queue.
        pubsub_mod.SUBSCRIPTION_CHANNEL_SIZE = QUEUE
        peers = max(1, len(self.network.peers_by_name))
        router = GossipSub(
            protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=min(6, peers),
            degree_low=min(4, peers),
            degree_high=min(12, peers + 1),
            heartbeat_interval=1,
            spam_protection_enabled=False,
            max_messages_per_topic_per_second=10_000.0,
            eclipse_protection_enabled=False,
            max_pending_messages_per_peer=QUEUE,
        )
        pubsub = pubsub_mod.Pubsub(
            self.network.host,
            router,
            # Transactions and announcements carry their own signatures/certificates;
            # signing every gossip message again would only cost CPU.
            strict_signing=False,
            msg_id_constructor=lambda m: hashlib.sha256(m.data).digest(),
            allowed_topics={TXS, BLOCKS},
        )
        guard_pubsub_handlers(self.network.host, pubsub, list(router.get_protocols()))
        for topic in (TXS, BLOCKS):
            pubsub.set_topic_validator(topic, self._validator, False)
        async with background_trio_service(pubsub), background_trio_service(router):
            await pubsub.wait_until_ready()
            subscriptions = [await pubsub.subscribe(t) for t in (TXS, BLOCKS)]
            self._pubsub = pubsub
            task_status.started()
            async with trio.open_nursery() as nursery:
                for topic, sub in zip((TXS, BLOCKS), subscriptions, strict=True):
                    nursery.start_soon(self._receive, topic, sub)

    async def _receive(self, topic: str, subscription: Any) -> None:
        while True:
            msg = await subscription.get()
            sender = self.network.names_by_id.get(_peer_of(msg), "")
            if not sender or sender == self.network.name:
                continue
            try:
                await self.on_message(topic, sender, bytes(msg.data))
            except Exception as exc:  # garbage gossip costs its message, not the node
                self.refused += 1
                log.warning("gossip_refused", topic=topic, peer=sender, reason=str(exc))

    async def publish(self, topic: str, data: bytes) -> bool:
        if self._pubsub is None:
            return False
        if self.network.tap is not None:
            self.network.tap("*", topic, data)
        try:
            await self._pubsub.publish(topic, data)
        except Exception as exc:
            self.dropped += 1
            log.debug("gossip_publish_failed", topic=topic, reason=str(exc))
            return False
        return True


class LatestOnly:
    """Sends only the newest of what is offered, at most once per `interval_s`: for
    announcements where a newer one makes the older ones worthless (block heights).
    `offer` is called on the trio thread and never blocks; what was offered last is
    always sent eventually."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.sent = 0
        self.replaced = 0
        self._latest: bytes | None = None
        self._wake = trio.Event()

    def offer(self, payload: bytes) -> None:
        if self._latest is not None:
            self.replaced += 1
        self._latest = payload
        self._wake.set()

    async def run(self, send: Callable[[bytes], Awaitable[object]]) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            payload, self._latest = self._latest, None
            if payload is None:
                continue
            self.sent += 1
            await send(payload)
            await trio.sleep(self.interval_s)


def _peer_of(msg: Any) -> str:
    from libp2p.peer.id import ID

    try:
        return str(ID(msg.from_id).to_base58())
    except Exception:
        return ""
