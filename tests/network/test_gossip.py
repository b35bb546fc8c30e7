"""Gossip between consortium hosts: batches arrive everywhere, beyond py-libp2p's
default limits; garbage costs only its message (issue 4)."""

from __future__ import annotations

import trio
from p2p_helpers import listen_of, make_peers, running, wait_until

from node.gossip import BLOCKS, TXS, Gossip
from node.libp2p_network import Libp2pNetwork


async def test_batches_reach_every_peer_and_garbage_is_refused() -> None:
    names = ["a", "b", "c"]
    peers, keys = make_peers(names)
    nets = {n: Libp2pNetwork(n, keys[n], listen_of(peers[n]), peers) for n in names}
    got: dict[str, list[tuple[str, str, bytes]]] = {n: [] for n in names}

    def receiver(name: str):  # type: ignore[no-untyped-def]
        async def on_message(topic: str, peer: str, data: bytes) -> None:
            if data.startswith(b"garbage"):
                raise ValueError("not a TxForward")
            got[name].append((topic, peer, data))

        return on_message

    gossips = {n: Gossip(nets[n], receiver(n)) for n in names}
    async with running(*nets.values()) as nursery:
        for g in gossips.values():
            await nursery.start(g.run)
        await wait_until(lambda: all(len(n.peers()) == 2 for n in nets.values()))
        # Far more than py-libp2p's default 10 messages per topic per peer per second.
        sent = 0
        with trio.fail_after(60):
            while not (len(got["b"]) >= 200 and len(got["c"]) >= 200):
                if sent < 200:
                    await gossips["a"].publish(TXS, b"batch-%d" % sent)
                    sent += 1
                else:
                    await trio.sleep(0.05)
        assert {d for t, p, d in got["b"]} == {b"batch-%d" % i for i in range(200)}
        assert all(p == "a" and t == TXS for t, p, _ in got["c"])
        await gossips["b"].publish(TXS, b"garbage")
        await wait_until(lambda: gossips["a"].refused + gossips["c"].refused >= 1)
        await gossips["c"].publish(BLOCKS, b"announce")
        await wait_until(lambda: any(d == b"announce" for _, _, d in got["a"]))
