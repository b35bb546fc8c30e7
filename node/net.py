"""What the node needs from the network, independent of libp2p: named peers, one-way
frames and request/response per protocol. `node/p2p/` implements it over libp2p (Noise,
peer allow-list); `MemoryNetwork` is the in-process twin for tests.

Peers are node names from the genesis block; the implementation maps them to
authenticated peer identities, so a handler's `peer` argument can be trusted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

Handler = Callable[[str, bytes], Awaitable[bytes | None]]

RAFT = "/medledger/raft/1"
TX = "/medledger/tx/1"
VOTE = "/medledger/vote/1"
SYNC = "/medledger/sync/1"
ANNOUNCE = "/medledger/announce/1"


class NetworkError(Exception):
    """A peer could not be reached or did not answer in time."""


class PeerNetwork(Protocol):
    def handle(self, protocol: str, handler: Handler) -> None:
        """Serve `protocol`; the handler's return value (if not None) is the reply."""
        ...

    def send(self, peer: str, protocol: str, payload: bytes) -> bool:
        """Queue a one-way frame to `peer` without waiting; False when it was dropped
        (peer unknown or its queue full). Callers that need delivery retry."""
        ...

    async def request(self, peer: str, protocol: str, payload: bytes, timeout_s: float) -> bytes:
        """Send and wait for the reply; raises NetworkError."""
        ...

    def peers(self) -> list[str]:
        """Names of the peers connected now."""
        ...


class MemoryNetwork:
    """A hub of in-process endpoints, for tests: every frame is delivered in order,
    unless a test cuts the link with `partition`."""

    def __init__(self) -> None:
        self.endpoints: dict[str, MemoryEndpoint] = {}
        self.cut: set[frozenset[str]] = set()

    def endpoint(self, name: str) -> MemoryEndpoint:
        endpoint = MemoryEndpoint(self, name)
        self.endpoints[name] = endpoint
        return endpoint

    def partition(self, a: str, b: str, cut: bool = True) -> None:
        pair = frozenset({a, b})
        if cut:
            self.cut.add(pair)
        else:
            self.cut.discard(pair)

    def linked(self, a: str, b: str) -> bool:
        return frozenset({a, b}) not in self.cut and b in self.endpoints


class MemoryEndpoint:
    def __init__(self, hub: MemoryNetwork, name: str) -> None:
        self.hub = hub
        self.name = name
        self.handlers: dict[str, Handler] = {}
        self.nursery: trio.Nursery | None = None

    def handle(self, protocol: str, handler: Handler) -> None:
        self.handlers[protocol] = handler

    def send(self, peer: str, protocol: str, payload: bytes) -> bool:
        if not self.hub.linked(self.name, peer) or self.nursery is None:
            return False
        target = self.hub.endpoints[peer]
        handler = target.handlers.get(protocol)
        if handler is None:
            return False
        self.nursery.start_soon(handler, self.name, payload)
        return True

    async def request(self, peer: str, protocol: str, payload: bytes, timeout_s: float) -> bytes:
        if not self.hub.linked(self.name, peer):
            raise NetworkError(f"{peer} is not reachable")
        handler = self.hub.endpoints[peer].handlers.get(protocol)
        if handler is None:
            raise NetworkError(f"{peer} does not serve {protocol}")
        with trio.move_on_after(timeout_s):
            reply = await handler(self.name, payload)
            return reply or b""
        raise NetworkError(f"{peer} did not answer {protocol} in {timeout_s} s")

    def peers(self) -> list[str]:
        return [n for n in self.hub.endpoints if n != self.name and self.hub.linked(self.name, n)]
