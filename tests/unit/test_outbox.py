"""The per-peer send queue of node/libp2p_network.py: bounded by bytes as well as count,
and written in chunks of at most COALESCE_BYTES (a leader with a slow follower held two
copies of a 15 MB queue: the queued frames and their join)."""

from __future__ import annotations

from node import libp2p_network as net
from node.libp2p_network import COALESCE_BYTES, QUEUE_BYTES, _Outbox, frame


async def test_bytes_bound_the_queue_but_one_payload_always_fits() -> None:
    box = _Outbox()
    big = b"x" * (QUEUE_BYTES + 1)
    assert box.put(big)  # nothing queued: even an oversized payload is taken
    assert not box.put(b"y")  # over the byte budget: refused, the caller's protocol copes
    assert await box.take() == frame(big)
    assert box.bytes == 0 and box.put(b"y")


async def test_a_long_queue_is_written_in_bounded_chunks() -> None:
    box = _Outbox()
    payload = b"p" * (COALESCE_BYTES // 4)
    for _ in range(10):
        assert box.put(payload)
    chunks = [await box.take() for _ in range(3)]
    assert [len(c) // (len(payload) + 4) for c in chunks] == [4, 4, 2]
    assert b"".join(chunks) == frame(payload) * 10
    assert box.bytes == 0


async def test_the_count_bound_still_holds() -> None:
    box = _Outbox()
    assert all(box.put(b"") for _ in range(net.QUEUE_FRAMES))
    assert not box.put(b"z")
