"""The closed libp2p network between nodes: frames, requests, allow-list, Noise only,
malformed frames (issue 4). Hosts run in this process on 127.0.0.1, ports chosen free."""

from __future__ import annotations

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import ed25519
from p2p_helpers import listen_of, make_peers, running, wait_until

from node.libp2p_network import FrameError, FrameReader, Libp2pNetwork, Peer, frame
from node.localnet import free_base_port
from node.net import NetworkError

PROTO = "/medledger/test/1"


def test_frame_reader_is_sans_io() -> None:
    reader = FrameReader(max_frame=10)
    data = frame(b"abc") + frame(b"") + frame(b"0123456789")
    out = []
    for i in range(len(data)):  # one byte at a time
        out += reader.feed(data[i : i + 1])
    assert out == [b"abc", b"", b"0123456789"]
    with pytest.raises(FrameError, match="exceeds"):
        FrameReader(max_frame=10).feed((11).to_bytes(4, "big") + b"x" * 11)


async def test_frames_in_order_requests_and_peers() -> None:
    peers, keys = make_peers(["a", "b"])
    a = Libp2pNetwork("a", keys["a"], listen_of(peers["a"]), peers)
    b = Libp2pNetwork("b", keys["b"], listen_of(peers["b"]), peers)
    got: list[tuple[str, bytes]] = []

    async def collect(peer: str, payload: bytes) -> bytes | None:
        got.append((peer, payload))
        return None

    async def echo(peer: str, payload: bytes) -> bytes | None:
        return b"echo:" + peer.encode() + b":" + payload

    b.handle(PROTO, collect)
    b.handle("/medledger/echo/1", echo)
    async with running(a, b):
        await wait_until(lambda: a.peers() == ["b"] and b.peers() == ["a"])
        for i in range(500):
            assert a.send("b", PROTO, b"%d" % i)
        await wait_until(lambda: len(got) == 500)
        assert got == [("a", b"%d" % i) for i in range(500)]
        assert await a.request("b", "/medledger/echo/1", b"x", 5) == b"echo:a:x"
        assert not a.send("nobody", PROTO, b"x")
        with pytest.raises(NetworkError):
            await a.request("nobody", PROTO, b"x", 1)


async def test_outsider_and_plaintext_peers_cannot_reach_handlers() -> None:
    import libp2p
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
    from multiaddr import Multiaddr

    peers, keys = make_peers(["a", "b"])
    a = Libp2pNetwork("a", keys["a"], listen_of(peers["a"]), peers)
    reached: list[str] = []

    async def handler(peer: str, payload: bytes) -> bytes | None:
        reached.append(peer)
        return b"secret"

    a.handle(PROTO, handler)
    # An outsider that speaks Noise, with a key the genesis block does not list.
    outsider = Libp2pNetwork(
        "mallory",
        ed25519.Ed25519PrivateKey.generate(),
        f"/ip4/127.0.0.1/tcp/{free_base_port()}",
        {"a": peers["a"], "mallory": Peer("mallory", "x", "")},
    )
    # A peer offering plaintext only.
    kp = create_new_key_pair()
    plain = libp2p.new_host(key_pair=kp, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(kp)})
    async with running(a, outsider):
        with pytest.raises(NetworkError):
            await outsider.request("a", PROTO, b"let me in", 5)
        await wait_until(lambda: a.refused_peers >= 1)
        async with plain.run(listen_addrs=[Multiaddr(f"/ip4/127.0.0.1/tcp/{free_base_port()}")]):
            with pytest.raises(Exception), trio.fail_after(10):  # noqa: B017 - any refusal
                await plain.connect(info_from_p2p_addr(Multiaddr(peers["a"].address)))
                stream = await plain.new_stream(
                    info_from_p2p_addr(Multiaddr(peers["a"].address)).peer_id, [PROTO]
                )
                await stream.write(frame(b"plaintext"))
                await stream.read(100)
        assert reached == []


async def test_malformed_frames_are_dropped_and_counted_while_others_flow() -> None:
    peers, keys = make_peers(["a", "b", "c"])
    a = Libp2pNetwork("a", keys["a"], listen_of(peers["a"]), peers)
    b = Libp2pNetwork("b", keys["b"], listen_of(peers["b"]), peers)
    c = Libp2pNetwork("c", keys["c"], listen_of(peers["c"]), peers)
    got: list[tuple[str, bytes]] = []

    async def collect(peer: str, payload: bytes) -> bytes | None:
        got.append((peer, payload))
        return None

    a.handle(PROTO, collect)
    async with running(a, b, c):
        await wait_until(lambda: set(a.peers()) == {"b", "c"})
        # b writes a length prefix far above the limit, then garbage.
        stream = await b._open(peers["a"], PROTO)
        await stream.write((2**31).to_bytes(4, "big") + b"garbage")
        await wait_until(lambda: a.malformed == 1)
        for i in range(50):
            assert c.send("a", PROTO, b"ok%d" % i)
        await wait_until(lambda: len([g for g in got if g[0] == "c"]) == 50)
        assert all(peer == "c" for peer, _ in got)


async def test_requests_share_one_stream_and_a_dead_or_late_one_is_replaced() -> None:
    peers, keys = make_peers(["a", "b"])
    a = Libp2pNetwork("a", keys["a"], listen_of(peers["a"]), peers)
    b = Libp2pNetwork("b", keys["b"], listen_of(peers["b"]), peers)
    slow = trio.Event()

    async def echo(peer: str, payload: bytes) -> bytes | None:
        if payload == b"slow":
            await slow.wait()
        return b"echo:" + payload

    b.handle("/medledger/echo/1", echo)
    opened: list[str] = []
    open_stream = a._open

    async def counting_open(peer: Peer, protocol: str) -> object:
        opened.append(protocol)
        return await open_stream(peer, protocol)

    a._open = counting_open  # type: ignore[method-assign]
    async with running(a, b):
        await wait_until(lambda: a.peers() == ["b"])
        for i in range(50):
            assert await a.request("b", "/medledger/echo/1", b"%d" % i, 5) == b"echo:%d" % i
        assert len(opened) == 1  # one stream for all fifty
        # The kept stream dies (as with the peer's restart): the next request opens anew.
        stream, _ = a._request_streams[("b", "/medledger/echo/1")]
        await stream.reset()
        assert await a.request("b", "/medledger/echo/1", b"after", 5) == b"echo:after"
        assert len(opened) == 2
        # A request that times out leaves its stream behind: the late answer is never
        # read as the next request's.
        with pytest.raises(NetworkError, match="did not answer"):
            await a.request("b", "/medledger/echo/1", b"slow", 0.5)
        slow.set()
        assert await a.request("b", "/medledger/echo/1", b"next", 5) == b"echo:next"
        assert len(opened) == 3
