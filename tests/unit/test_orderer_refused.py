"""A proposal that Raft refuses (it stepped down, or a transfer is under way) must hand
the trio thread back: the Ready loop that updates `role` runs on the same thread, and a
proposer looping without an await stalled the node (no ticks, no SIGTERM)."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import trio

from node.consensus import NotLeader
from node.ordering.raft_orderer import RaftOrderer


class Spun(Exception):
    pass


def orderer() -> tuple[RaftOrderer, dict[str, int]]:
    calls = {"propose": 0, "requeue": 0}

    class Mempool:
        size_bytes = 100

        def __len__(self) -> int:
            return 1

        def oldest_received_ms(self) -> int:
            return 1

    def requeue(batch: Any) -> None:
        calls["requeue"] += 1

    core: Any = SimpleNamespace(
        lock=threading.Lock(),
        mempool=Mempool(),
        take_batch=lambda now, n, size: [SimpleNamespace(raw=b"tx")],
        requeue=requeue,
        name="hosp1",
        ledger=SimpleNamespace(raft_applied=lambda: 0),
    )
    cutter: Any = SimpleNamespace(
        next_deadline_ms=lambda oldest: 0,
        should_cut=lambda n, size, oldest, now: True,
        config=SimpleNamespace(max_block_txs=10, max_block_bytes=1 << 20),
    )

    def propose(entries: Any) -> int:
        calls["propose"] += 1
        if calls["propose"] > 1000:
            raise Spun("the proposer kept proposing without yielding")
        raise NotLeader("stepped down")

    raft: Any = SimpleNamespace(propose=propose)
    storage: Any = SimpleNamespace(snapshot=lambda: SimpleNamespace(meta=SimpleNamespace(index=0)))
    o = RaftOrderer(core, cutter, SimpleNamespace(), raft, storage, 0.05)  # type: ignore[arg-type]
    return o, calls


async def test_a_refused_proposal_yields_to_the_ready_loop() -> None:
    o, calls = orderer()
    o.role = "leader"

    async def ready_loop() -> None:
        # Trio schedules tasks in no fixed order: let the proposer meet the refusal first.
        while calls["propose"] == 0:
            await trio.sleep(0)
        o.role = "follower"  # what the Ready loop does when Raft stepped down

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(o._proposer)
            nursery.start_soon(ready_loop)
            while o.role == "leader":
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert 1 <= calls["propose"] <= 5
    assert calls["requeue"] == calls["propose"]  # nothing admitted is lost


async def test_a_follower_proposer_sleeps_until_it_becomes_leader() -> None:
    """A follower's mempool holds gossiped transactions past the cut deadline; its
    proposer used to go round a zero-length `move_on_after` without end (a fifth of a
    follower's GIL time under load). It must sleep until the node becomes leader."""
    o, calls = orderer()
    deadlines = {"n": 0}
    next_deadline = o.cutter.next_deadline_ms

    def counting(oldest: Any) -> Any:
        deadlines["n"] += 1
        return next_deadline(oldest)

    o.cutter.next_deadline_ms = counting
    o.metrics = SimpleNamespace(set_role=lambda role: None)
    o.raft.status = lambda: SimpleNamespace(term=2)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(o._proposer)
            for _ in range(50):
                o.wake()  # gossiped transactions arrive
                await trio.sleep(0.001)
            assert deadlines["n"] == 0 and calls["propose"] == 0
            o._role_changed("leader", "hosp1")
            while calls["propose"] == 0:
                await trio.sleep(0.001)
            nursery.cancel_scope.cancel()
