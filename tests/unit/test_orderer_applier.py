"""Committed entries are executed by the orderer's applier task, in log order, while the
Ready loop goes on: a block that takes long to execute must not stop the node from
acknowledging and committing what follows (a follower that stopped answering for the
stall window made the leader send the same entries again)."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
from medledger.v1 import ledger_pb2

from node.consensus import Membership, RaftConfig, RawNode
from node.consensus.entry import Entry, EntryKind
from node.consensus.leveldb_storage import LevelDBStorage
from node.ledger.kvstore import LevelDBKV
from node.mempool.mempool import PendingTx
from node.ops.metrics import Metrics
from node.ordering.cutter import CutterConfig
from node.ordering.raft_orderer import RaftOrderer


class EmptyMempool:
    size_bytes = 0

    def __len__(self) -> int:
        return 0

    def oldest_received_ms(self) -> None:
        return None


class SlowCore:
    """Applies blocks in a worker thread; the first one waits for `gate`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.stuck = threading.Event()
        self.applied: list[int] = []
        self.mempool = EmptyMempool()
        self.ledger = SimpleNamespace(raft_applied=lambda: self.applied[-1] if self.applied else 0)
        self.name = "n1"

    def apply_entry(self, batch: Any, term: int, index: int, now_ms: int) -> Any:
        if len(self.applied) == 1:  # the first NORMAL entry (after the leader's no-op)
            self.stuck.set()
            assert self.gate.wait(10), "the test never opened the gate"
        self.applied.append(index)
        return SimpleNamespace(height=len(self.applied), block_hash=b"\x00" * 32)

    def record_applied(self, index: int) -> None:
        self.applied.append(index)


def metrics() -> Metrics:
    return Metrics()


BATCH = ledger_pb2.Batch(txs=[b"tx"], leader_time_ms=1, proposer="n1").SerializeToString()


@contextlib.asynccontextmanager
async def leading_orderer(
    tmp_path: Path, core: Any, wrap: Callable[[LevelDBStorage], None] = lambda storage: None
) -> AsyncIterator[tuple[RawNode, RaftOrderer]]:
    """A one-member Raft orderer over `core` (its storage passed to `wrap` first),
    running, leader, with its first entry applied; stopped when the block ends. The
    whole block must finish within 10 s."""
    kv = LevelDBKV(tmp_path / "raft")
    try:
        storage = LevelDBStorage.initialize(kv.prefixed(b"raft/"), Membership.of(["n1"]))
        wrap(storage)
        raft = RawNode(RaftConfig(id="n1"), storage, random.Random(1))
        cutter: Any = SimpleNamespace(
            next_deadline_ms=lambda oldest: None,
            should_cut=lambda n, size, oldest, now: False,
            config=CutterConfig(batch_timeout_ms=100, max_block_txs=100, max_block_bytes=1 << 20),
        )
        orderer = RaftOrderer(core, cutter, metrics(), raft, storage, 0.05)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(orderer.run)
                while orderer.role != "leader" or not core.applied:
                    await trio.sleep(0.01)
                yield raft, orderer
                nursery.cancel_scope.cancel()
    finally:
        kv.close()


async def test_a_slow_block_does_not_stop_the_ready_loop(tmp_path: Path) -> None:
    core = SlowCore()
    try:
        async with leading_orderer(tmp_path, core) as (raft, orderer):
            raft.propose([BATCH])
            orderer._ready_wake.set()
            while not core.stuck.is_set():
                await trio.sleep(0.01)
            # The first block is stuck in the applier; what follows still commits.
            last = 0
            for _ in range(4):
                last = raft.propose([BATCH])
                orderer._ready_wake.set()
            while raft.status().committed < last:
                await trio.sleep(0.01)
            assert len(core.applied) == 1
            core.gate.set()
            while core.applied[-1] < last:
                await trio.sleep(0.01)
            assert core.applied == sorted(core.applied) == list(range(1, last + 1))
            assert orderer.applied == last
    finally:
        core.gate.set()


class SyncingCore(SlowCore):
    """Records, for every ledger sync, how far the applier had got."""

    def __init__(self, events: list[tuple[str, int]]) -> None:
        super().__init__()
        self.gate.set()
        self.ledger.sync = lambda: events.append(("sync", self.applied[-1]))


async def test_the_ledger_is_synced_before_the_raft_log_is_compacted(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Blocks are written unsynced (decision 010): whatever the Raft log compacts away
    must already be in the ledger on disk, or a power loss would leave nothing to apply
    again."""
    import node.ordering.raft_orderer as raft_orderer

    monkeypatch.setattr(raft_orderer, "COMPACT_EVERY", 3)
    monkeypatch.setattr(raft_orderer, "COMPACT_KEEP", 2)
    events: list[tuple[str, int]] = []

    def record_compactions(storage: LevelDBStorage) -> None:
        compact = storage.compact

        def recording_compact(snapshot: Any) -> None:
            events.append(("compact", snapshot.meta.index))
            compact(snapshot)

        storage.compact = recording_compact  # type: ignore[method-assign]

    core = SyncingCore(events)
    async with leading_orderer(tmp_path, core, record_compactions) as (raft, orderer):
        for _ in range(20):
            last = raft.propose([BATCH])
            orderer._ready_wake.set()
            while orderer.applied < last:
                await trio.sleep(0.01)
        orderer._ready_wake.set()
        while not any(kind == "compact" for kind, _ in events):
            await trio.sleep(0.01)
    compactions = [i for i, (kind, _) in enumerate(events) if kind == "compact"]
    assert compactions
    for i in compactions:
        kind, synced = events[i - 1]
        assert kind == "sync" and synced >= events[i][1], events


async def test_the_ledger_is_synced_after_catching_up_to_a_snapshot(tmp_path: Path) -> None:
    """A snapshot from the leader moves the log's start; the blocks block sync wrote to
    reach it (unsynced, decision 010) must be on disk before anything relies on that."""
    events: list[tuple[str, int]] = []
    core = SyncingCore(events)

    async def catch_up(index: int) -> None:
        core.applied.append(index)  # the blocks up to the snapshot, by block sync
        events.append(("snapshot", index))

    async with leading_orderer(tmp_path, core) as (_, orderer):
        orderer.on_snapshot = catch_up
        await orderer._to_apply.send(40)
        while ("sync", 40) not in events:
            await trio.sleep(0.01)
    assert events.index(("snapshot", 40)) < events.index(("sync", 40))


class ProposingCore(SlowCore):
    """Hands the proposer one batch of two transactions received at 1,000 and 1,040 ms."""

    def __init__(self) -> None:
        super().__init__()
        self.gate.set()
        self.batches = [
            [
                PendingTx(b"a" * 32, b"tx-a", "hosp1", 10**13, 1_000),
                PendingTx(b"b" * 32, b"tx-b", "hosp1", 10**13, 1_040),
            ]
        ]

    def take_batch(self, now: int, max_txs: int, max_bytes: int) -> list[PendingTx]:
        return self.batches.pop() if self.batches else []


async def test_every_block_reports_where_its_time_went(tmp_path: Path, monkeypatch: Any) -> None:
    """The block a node proposed is timed through wait (its oldest transaction in the
    mempool until the cut), order, queue and apply; a block it did not propose (here, one
    proposed to Raft directly) through queue and apply only."""
    import node.ordering.raft_orderer as raft_orderer

    monkeypatch.setattr(raft_orderer, "now_ms", lambda: 1_250)
    core = ProposingCore()
    async with leading_orderer(tmp_path, core) as (raft, orderer):
        registry = orderer.metrics.registry

        def count(stage: str) -> float:
            value = registry.get_sample_value(
                "medledger_block_stage_seconds_count", {"stage": stage}
            )
            return value or 0.0

        before = {stage: count(stage) for stage in ("wait", "order", "queue", "apply")}
        assert orderer._propose_once()
        index = max(orderer._proposed)
        while orderer.applied < index:
            await trio.sleep(0.01)
        assert {stage: count(stage) - before[stage] for stage in before} == {
            "wait": 1,
            "order": 1,
            "queue": 1,
            "apply": 1,
        }
        # 1,250 - 1,000 ms: the oldest transaction's wait, the longest in the block.
        assert registry.get_sample_value(
            "medledger_block_stage_seconds_sum", {"stage": "wait"}
        ) == pytest.approx(0.25)
        last = raft.propose([BATCH])
        orderer._ready_wake.set()
        while orderer.applied < last:
            await trio.sleep(0.01)
        assert count("wait") - before["wait"] == 1 and count("apply") - before["apply"] == 2
        assert not orderer._proposed_at and not orderer._committed_at


class PrecheckingCore(SlowCore):
    """Records prechecks; the one of entry data b"slow" waits for `release`, b"boom" fails."""

    def __init__(self) -> None:
        super().__init__()
        self.gate.set()
        self.release = threading.Event()
        self.prechecked: list[bytes] = []

    def precheck(self, data: bytes) -> None:
        if data == b"slow":
            assert self.release.wait(10), "the test never released the precheck"
        if data == b"boom":
            raise ValueError("a bad entry")
        self.prechecked.append(data)


async def test_applying_an_entry_waits_for_its_precheck_and_a_failed_one_is_harmless(
    tmp_path: Path,
) -> None:
    """A follower pre-checks (parses, verifies the signatures of) the transactions of
    entries it appends; applying such an entry waits for its pre-check rather than
    verifying the same signatures again, and a pre-check that fails changes nothing."""
    core = PrecheckingCore()
    async with leading_orderer(tmp_path, core) as (_, orderer):
        slow = Entry(term=9, index=100, data=b"slow")
        boom = Entry(term=9, index=101, data=b"boom")
        orderer._precheck([slow, boom, Entry(term=9, index=102, kind=EntryKind.NOOP)])
        assert sorted(orderer._prechecks) == [100, 101]
        done = orderer._take_precheck(slow)
        assert done is not None
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()  # the pre-check of entry 100 is still running
        core.release.set()
        with trio.fail_after(5):
            await done.wait()
        assert core.prechecked == [b"slow"]
        failed = orderer._take_precheck(boom)
        assert failed is not None
        with trio.fail_after(5):
            await failed.wait()  # finished despite the error
        assert not orderer._prechecks and orderer._precheck_bytes == 0


async def test_a_replaced_entry_is_prechecked_again_and_stale_ones_are_dropped(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """An entry another leader's replaced at the same index (a later term) gets its own
    pre-check, and applying it never waits for the old one's; entries never applied here
    are forgotten; beyond MAX_PRECHECK_BYTES nothing more is pre-checked."""
    import node.ordering.raft_orderer as raft_orderer

    core = PrecheckingCore()
    core.release.set()
    async with leading_orderer(tmp_path, core) as (_, orderer):
        orderer._precheck([Entry(term=3, index=50, data=b"old"), Entry(3, 51, data=b"x")])
        orderer._precheck([Entry(term=3, index=50, data=b"old")])  # the same again
        orderer._precheck([Entry(term=4, index=50, data=b"new")])
        assert orderer._prechecks[50][0] == 4
        assert orderer._take_precheck(Entry(term=3, index=50, data=b"old")) is None
        orderer._precheck([Entry(term=4, index=60, data=b"y")])
        later = orderer._take_precheck(Entry(term=4, index=60, data=b"y"))
        assert later is not None and not orderer._prechecks  # 51 was never applied here
        with trio.fail_after(5):
            await later.wait()
        with trio.fail_after(5):
            while orderer._precheck_bytes:  # every pre-check started has finished
                await trio.sleep(0.01)
        assert sorted(core.prechecked) == [b"new", b"old", b"x", b"y"]

        monkeypatch.setattr(raft_orderer, "MAX_PRECHECK_BYTES", 10)
        orderer._precheck([Entry(5, 70, data=b"123456"), Entry(5, 71, data=b"123456")])
        assert list(orderer._prechecks) == [70]
