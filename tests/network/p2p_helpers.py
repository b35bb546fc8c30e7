"""Helpers for tests that run libp2p hosts in this process on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from cryptography.hazmat.primitives.asymmetric import ed25519

from node.libp2p_network import Libp2pNetwork, Peer
from node.localnet import free_base_port
from node.provisioning import libp2p_peer_id


def make_peers(names: list[str]) -> tuple[dict[str, Peer], dict[str, ed25519.Ed25519PrivateKey]]:
    base = free_base_port(count=len(names))
    keys = {n: ed25519.Ed25519PrivateKey.generate() for n in names}
    peers = {}
    for i, n in enumerate(names):
        pid = libp2p_peer_id(keys[n].public_key())
        peers[n] = Peer(n, pid, f"/ip4/127.0.0.1/tcp/{base + i}/p2p/{pid}")
    return peers, keys


@asynccontextmanager
async def running(*networks: Libp2pNetwork) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        for net in networks:
            await nursery.start(net.run)
        yield nursery
        nursery.cancel_scope.cancel()


def listen_of(peer: Peer) -> str:
    return peer.address.split("/p2p/")[0]


async def wait_until(predicate: object, timeout_s: float = 20) -> None:
    with trio.fail_after(timeout_s):
        while not predicate():  # type: ignore[operator]
            await trio.sleep(0.02)
