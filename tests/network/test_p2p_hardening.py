"""The guards of node/p2p_hardening.py around two py-libp2p 0.8.1 defects."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from google.protobuf.message import DecodeError
from libp2p.io.exceptions import IOException
from libp2p.stream_muxer.yamux.yamux import Yamux

from node import p2p_hardening


class SlowConn:
    """A secured connection whose write goes out in two halves, with a wait between."""

    def __init__(self, stall: bool = False) -> None:
        self.wire = bytearray()
        self.stall = stall
        self.closed = False

    async def write(self, data: bytes) -> None:
        half = len(data) // 2
        self.wire += data[:half]
        await trio.sleep(3600 if self.stall else 1)
        self.wire += data[half:]

    async def close(self) -> None:
        self.closed = True


class FakeMuxer:
    def __init__(self, conn: SlowConn) -> None:
        self._write_lock = trio.Lock()
        self.secured_conn = conn


async def test_a_cancelled_frame_write_still_writes_the_whole_frame(
    autojump_clock: trio.abc.Clock,
) -> None:
    assert p2p_hardening.harden_yamux()
    conn = SlowConn()
    muxer = FakeMuxer(conn)
    with trio.move_on_after(0.5) as scope:  # a caller's timeout fires mid-frame
        await Yamux._write_frame(muxer, b"A" * 100)  # type: ignore[arg-type]
    assert scope.cancelled_caught
    assert bytes(conn.wire) == b"A" * 100  # never half a frame on the wire
    assert not conn.closed


async def test_a_stalled_frame_write_closes_the_connection(
    autojump_clock: trio.abc.Clock,
) -> None:
    assert p2p_hardening.harden_yamux()
    conn = SlowConn(stall=True)
    with pytest.raises(IOException, match="stalled"):
        await Yamux._write_frame(FakeMuxer(conn), b"B" * 100)  # type: ignore[arg-type]
    assert conn.closed


async def test_a_bad_pubsub_stream_is_reset_not_fatal() -> None:
    handlers: dict[str, Any] = {}
    dead: list[object] = []

    class Host:
        def set_stream_handler(self, protocol: str, handler: Any) -> None:
            handlers[protocol] = handler

    class Stream:
        reset_called = False
        muxed_conn = type("C", (), {"peer_id": "peer-1"})()

        async def reset(self) -> None:
            Stream.reset_called = True

    class Pubsub:
        async def stream_handler(self, stream: Any) -> None:
            raise DecodeError("Error parsing message with type 'pubsub.pb.RPC'")

        def _handle_dead_peer(self, peer_id: object) -> None:
            dead.append(peer_id)

    p2p_hardening.guard_pubsub_handlers(Host(), Pubsub(), ["/meshsub/1.1.0"])
    await handlers["/meshsub/1.1.0"](Stream())
    assert Stream.reset_called and dead == ["peer-1"]
