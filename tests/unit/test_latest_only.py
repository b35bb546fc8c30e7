"""Block announcements by gossip: only the newest, at most one per interval, and the
last one offered is always sent."""

from __future__ import annotations

import itertools

import trio

from node.gossip import LatestOnly


async def test_only_the_newest_goes_out_once_per_interval(autojump_clock: trio.abc.Clock) -> None:
    sent: list[tuple[float, bytes]] = []

    async def send(payload: bytes) -> None:
        sent.append((trio.current_time(), payload))

    announcer = LatestOnly(0.25)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(announcer.run, send)
        for height in range(1, 21):  # 20 blocks in 0.5 s
            announcer.offer(b"%d" % height)
            await trio.sleep(0.025)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    payloads = [p for _, p in sent]
    assert payloads[0] == b"1" and payloads[-1] == b"20"  # the first at once, the last kept
    assert len(payloads) <= 4 and payloads == sorted(payloads, key=int)
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(sent)]
    assert all(gap >= 0.25 for gap in gaps)
    assert announcer.sent == len(payloads) and announcer.replaced > 0
