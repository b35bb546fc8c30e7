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


def test_peer_records_are_reused_and_checked_once_per_distinct_record() -> None:
    from types import SimpleNamespace

    from node.p2p_hardening import cache_peer_records, record_caches

    issued: list[object] = []
    checked: list[tuple[object, bytes]] = []

    def issue(host: object) -> tuple[bytes, bool]:
        issued.append(host)
        return b"record-%d" % len(issued), True

    def consume(msg: Any, host: object, peer: object) -> bool:
        checked.append((peer, msg.senderRecord))
        return msg.senderRecord != b"forged"

    send, receive = record_caches(issue, consume)
    host = object()
    assert send(host) == (b"record-1", True)
    assert send(host) == (b"record-1", False)  # reused, not rebuilt
    assert issued == [host]

    def rpc(record: bytes | None) -> Any:
        return SimpleNamespace(HasField=lambda f: record is not None, senderRecord=record)

    assert receive(rpc(None), host, "a") and checked == []
    assert receive(rpc(b"r1"), host, "a") and receive(rpc(b"r1"), host, "a")
    assert checked == [("a", b"r1")]  # the same bytes from the same peer: checked once
    assert receive(rpc(b"r1"), host, "b")  # another peer: checked on its own
    assert receive(rpc(b"r2"), host, "a")  # a new record: checked
    assert not receive(rpc(b"forged"), host, "a")
    assert not receive(rpc(b"forged"), host, "a")  # a refusal is never cached
    assert len(checked) == 5
    assert cache_peer_records() and cache_peer_records()  # installed once, idempotent


async def test_tuned_yamux_sends_a_window_update_per_half_window_not_per_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from libp2p.stream_muxer.yamux import yamux

    monkeypatch.delenv("PY_YAMUX_RELEASE_ON_READ", raising=False)
    method = "_auto_tune_and_send_window_update"
    current = getattr(yamux.YamuxStream, method)
    monkeypatch.setattr(yamux.YamuxStream, method, getattr(current, "replaced", current))
    for name in ("_perf_yamux_debug_enabled", "_yamux_data_read_timeout"):
        monkeypatch.setattr(yamux, name, getattr(yamux, name))
    monkeypatch.setattr(yamux, "_medledger_tuned", False, raising=False)

    async def window_updates(messages: int, size: int) -> list[int]:
        conn = SimpleNamespace(stream_buffers={}, rtt=lambda: 0.0)
        stream = yamux.YamuxStream(1, conn, is_initiator=False)  # type: ignore[arg-type]
        sent: list[int] = []

        async def send_window_update(increment: int, skip_lock: bool = False) -> None:
            sent.append(increment)

        stream.send_window_update = send_window_update  # type: ignore[method-assign]
        for _ in range(messages):
            stream.recv_window -= size  # the frame arrives (Yamux.handle_incoming) ...
            await stream._auto_tune_and_send_window_update(bytes_read=size)  # ... is read
            # The sender may always send at least half a window more: it never stalls.
            assert stream.recv_window >= yamux.DEFAULT_WINDOW_SIZE // 2 - size
        return sent

    assert len(await window_updates(200, 1000)) >= 100  # py-libp2p's policy
    assert p2p_hardening.tune_yamux() and p2p_hardening.tune_yamux()
    sent = await window_updates(200, 1000)
    # 200 KB read: the first update grows the window (auto-tuning), then one a half window.
    assert 1 <= len(sent) <= 3, sent
