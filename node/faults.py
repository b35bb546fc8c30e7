"""Test-only fault injection (config `testing.fault_injection = true`): a gate that cuts
this node off from chosen peers, and a forced divergence of this node's execution.
Reached through the admin socket; a production node refuses both."""

from __future__ import annotations

from node.net import Handler, NetworkError, PeerNetwork


class GatedNetwork:
    """Wraps a PeerNetwork; traffic to and from `blocked` peers is dropped both ways."""

    def __init__(self, inner: PeerNetwork) -> None:
        self.inner = inner
        self.blocked: set[str] = set()

    def handle(self, protocol: str, handler: Handler) -> None:
        async def gated(peer: str, payload: bytes) -> bytes | None:
            if peer in self.blocked:
                return None
            return await handler(peer, payload)

        self.inner.handle(protocol, gated)

    def send(self, peer: str, protocol: str, payload: bytes) -> bool:
        if peer in self.blocked:
            return False
        return self.inner.send(peer, protocol, payload)

    async def request(self, peer: str, protocol: str, payload: bytes, timeout_s: float) -> bytes:
        if peer in self.blocked:
            raise NetworkError(f"{peer} is cut off by the test gate")
        return await self.inner.request(peer, protocol, payload, timeout_s)

    def peers(self) -> list[str]:
        return [p for p in self.inner.peers() if p not in self.blocked]
