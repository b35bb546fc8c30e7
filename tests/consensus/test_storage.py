"""Raft storage: the in-memory twin and the LevelDB implementation behave alike."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plyvel
import pytest

from node.consensus import (
    CompactedError,
    Entry,
    EntryKind,
    HardState,
    Membership,
    MemoryStorage,
    RaftConfig,
    RawNode,
    Snapshot,
    SnapshotMeta,
    UnavailableError,
)
from node.consensus.leveldb_storage import LevelDBStorage
from node.consensus.storage import Storage

MEMBERS = Membership.of(["n1"])


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Any]:
    handle = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    yield handle
    handle.close()


def entries(lo: int, hi: int, term: int) -> list[Entry]:
    return [Entry(term, i, EntryKind.NORMAL, b"e%d" % i) for i in range(lo, hi)]


def drain(node: RawNode, store: Storage, applied: list[Entry]) -> None:
    """Persist, apply (NORMAL entries into `applied`) and advance every Ready."""
    while node.has_ready():
        rd = node.ready()
        store.save(rd.hard_state, rd.entries, rd.snapshot, rd.must_sync)
        applied.extend(e for e in rd.committed_entries if e.kind is EntryKind.NORMAL)
        node.advance(rd)


def exercise(storage: Storage) -> None:
    storage.save(HardState(1, "n1", 0), entries(1, 6, 1), None)
    assert storage.last_index() == 5 and storage.first_index() == 1
    assert [e.index for e in storage.entries(2, 5)] == [2, 3, 4]
    assert len(storage.entries(1, 6, max_bytes=1)) == 1  # always at least one
    # Overwriting a suffix drops what followed it.
    storage.save(HardState(2, None, 3), entries(4, 5, 2), None)
    assert storage.last_index() == 4 and storage.term(4) == 2
    with pytest.raises(UnavailableError):
        storage.term(5)
    snap = Snapshot(SnapshotMeta(3, 1, MEMBERS), b"app")
    storage.compact(snap)
    assert storage.first_index() == 4 and storage.term(3) == 1
    with pytest.raises(CompactedError):
        storage.entries(2, 4)
    with pytest.raises(CompactedError):
        storage.term(2)
    assert storage.snapshot() == snap
    assert storage.initial_state() == HardState(2, None, 3)
    # A snapshot from the leader replaces the whole log.
    storage.save(None, (), Snapshot(SnapshotMeta(10, 3, MEMBERS), b"new"))
    assert storage.last_index() == 10 and storage.first_index() == 11
    storage.save(None, entries(11, 13, 3), None)
    assert storage.last_index() == 12


def test_memory_storage() -> None:
    exercise(MemoryStorage.bootstrap(MEMBERS))


def test_leveldb_storage_matches_and_survives_reopen(db: Any) -> None:
    prefixed = db.prefixed_db(b"raft/")
    storage = LevelDBStorage.initialize(prefixed, MEMBERS)
    exercise(storage)
    again = LevelDBStorage(prefixed)
    assert again.initial_state() == storage.initial_state()
    assert again.snapshot() == storage.snapshot()
    assert again.entries(11, 13) == storage.entries(11, 13)
    assert db.get(b"hs") is None  # everything lives under the prefix


def test_leveldb_refuses_to_bootstrap_twice(db: Any) -> None:
    LevelDBStorage.initialize(db, MEMBERS)
    with pytest.raises(Exception, match="already present"):
        LevelDBStorage.initialize(db, MEMBERS)


def test_single_node_group_on_leveldb_restarts_and_reapplies(db: Any) -> None:
    """The foundation's single-node path as a Raft group of one, with a restart that
    re-delivers committed entries above the application's applied index."""
    storage = LevelDBStorage.initialize(db, MEMBERS)
    node = RawNode(RaftConfig("n1"), storage, random.Random(1))
    node.campaign()
    applied: list[Entry] = []

    drain(node, storage, applied)
    last = node.propose([b"a", b"b", b"c"])
    drain(node, storage, applied)
    assert [e.data for e in applied] == [b"a", b"b", b"c"]
    # The application durably applied only through "a" before the crash.
    durable_applied = applied[0].index
    applied.clear()
    storage2 = LevelDBStorage(db)
    node2 = RawNode(RaftConfig("n1", applied=durable_applied), storage2, random.Random(2))
    drain(node2, storage2, applied)
    assert [e.data for e in applied] == [b"b", b"c"]
    assert node2.status().committed == last


def test_leveldb_refused_save_writes_nothing(db: Any) -> None:
    storage = LevelDBStorage.initialize(db, MEMBERS)
    storage.save(HardState(1, None, 0), entries(1, 3, 1), None)
    with pytest.raises(UnavailableError):
        storage.save(HardState(2, None, 0), entries(5, 6, 1), None)  # a gap after 2
    again = LevelDBStorage(db)
    assert again.initial_state() == HardState(1, None, 0)
    assert again.last_index() == 2


def test_leveldb_keeps_only_the_newest_payloads_in_memory(db: Any) -> None:
    """Committed entries beyond `resident_bytes` live on disk only; every read still
    returns them whole, and the twin's answers do not change."""
    twin = MemoryStorage.bootstrap(MEMBERS)
    storage = LevelDBStorage.initialize(db, MEMBERS, resident_bytes=100)
    big = [Entry(1, i, EntryKind.NORMAL, bytes([i]) * 40) for i in range(1, 21)]
    for store in (twin, storage):
        store.save(HardState(1, "n1", 0), big[:10], None)
        store.save(HardState(1, "n1", 15), big[10:], None)  # 1..15 committed
    assert storage._resident_size <= 100 + 40 * 5  # uncommitted ones always stay
    assert any(not e.data for e in storage._entries)  # some payloads left memory
    for lo, hi, limit in [(1, 21, None), (3, 9, None), (1, 21, 100), (14, 18, 1), (20, 21, 0)]:
        assert storage.entries(lo, hi, limit) == twin.entries(lo, hi, limit)
    assert [storage.term(i) for i in range(1, 21)] == [twin.term(i) for i in range(1, 21)]
    snap = Snapshot(SnapshotMeta(5, 1, MEMBERS), b"")
    twin.compact(snap)
    storage.compact(snap)
    assert storage.entries(6, 21) == twin.entries(6, 21)
    with pytest.raises(CompactedError):
        storage.entries(5, 7)
    # Overwriting the uncommitted suffix, then a restart, still agree.
    tail = [Entry(2, i, EntryKind.NORMAL, b"x" * 60) for i in range(17, 19)]
    twin.save(HardState(2, None, 15), tail, None)
    storage.save(HardState(2, None, 15), tail, None)
    assert storage.entries(6, 19) == twin.entries(6, 19)
    again = LevelDBStorage(db, resident_bytes=100)
    assert again.entries(6, 19) == twin.entries(6, 19)
    assert again.last_index() == 18
