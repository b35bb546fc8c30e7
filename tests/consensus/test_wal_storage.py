"""The Raft write-ahead log: behaves like the in-memory twin, survives reopening, torn
writes and segment rotation, deletes only what compaction made unnecessary, and takes
over the log of a node that kept it in LevelDB."""

from __future__ import annotations

import errno
import random
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
    StorageCorrupted,
    UnavailableError,
    wal_storage,
)
from node.consensus.leveldb_storage import LevelDBStorage
from node.consensus.wal_storage import SPARE, WalStorage

from .test_storage import MEMBERS, drain, entries, exercise

SMALL = 4096  # bytes per segment: a few records each, so tests rotate often


def same(storage: WalStorage | MemoryStorage, twin: MemoryStorage) -> None:
    assert storage.initial_state() == twin.initial_state()
    assert storage.snapshot() == twin.snapshot()
    assert (storage.first_index(), storage.last_index()) == (twin.first_index(), twin.last_index())
    lo, hi = twin.first_index(), twin.last_index() + 1
    assert storage.entries(lo, hi) == twin.entries(lo, hi)


def segments(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("*.wal"))


def test_wal_storage_matches_and_survives_reopen(tmp_path: Path) -> None:
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL)
    twin = MemoryStorage.bootstrap(MEMBERS)
    exercise(storage)
    exercise(twin)
    same(storage, twin)
    storage.close()
    again = WalStorage(wal, segment_bytes=SMALL)
    same(again, twin)
    again.close()


def test_refuses_to_initialize_twice_and_reports_a_missing_log(tmp_path: Path) -> None:
    wal = tmp_path / "raft"
    WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL).close()
    with pytest.raises(StorageCorrupted, match="holds one"):
        WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StorageCorrupted, match="no Raft log"):
        WalStorage(tmp_path / "empty")


def test_random_operations_agree_with_the_twin_across_reopens(tmp_path: Path) -> None:
    """Appends, suffix overwrites, hard states, compactions and installed snapshots in a
    seeded random order, on 4 KB segments; reopened every few steps."""
    rng = random.Random(7)
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, resident_bytes=300, segment_bytes=SMALL)
    twin = MemoryStorage.bootstrap(MEMBERS)
    term = 1
    most_segments = 0
    for step in range(600):
        last, commit = twin.last_index(), twin.initial_state().commit
        op = rng.random()
        if op < 0.55:  # append, sometimes overwriting an uncommitted suffix
            first = last + 1
            if last > commit and rng.random() < 0.3:
                first = rng.randint(commit + 1, last)
                term += 1
            new = [
                Entry(term, i, EntryKind.NORMAL, rng.randbytes(rng.randint(0, 120)))
                for i in range(first, first + rng.randint(1, 6))
            ]
            args: tuple[HardState | None, list[Entry], Snapshot | None] = (None, new, None)
        elif op < 0.8:  # the commit index moves (never past the log)
            hs = HardState(term, rng.choice([None, "n1", "n2"]), rng.randint(commit, last))
            args = (hs, [], None)
        elif op < 0.97 and commit > twin.snapshot().index:  # compaction up to applied
            index = rng.randint(twin.snapshot().index, commit)
            snap = Snapshot(SnapshotMeta(index, twin.term(index), MEMBERS), b"s%d" % index)
            storage.compact(snap)
            twin.compact(snap)
            args = (None, [], None)
        else:  # the leader sent a snapshot beyond our log
            index = last + rng.randint(1, 5)
            term += 1
            snap = Snapshot(SnapshotMeta(index, term, MEMBERS), b"")
            args = (HardState(term, None, index), [], snap)
        storage.save(*args, sync=rng.random() < 0.5)
        twin.save(*args)
        same(storage, twin)
        most_segments = max(most_segments, len(segments(wal)))
        if step % 37 == 36:
            storage.close()
            storage = WalStorage(wal, resident_bytes=300, segment_bytes=SMALL)
            same(storage, twin)
    storage.close()
    assert most_segments >= 3  # it did rotate
    assert len(segments(wal)) < most_segments + 2  # and compaction deleted segments


def test_a_torn_last_record_is_dropped_and_the_log_continues(tmp_path: Path) -> None:
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, segment_bytes=1 << 20)
    storage.save(HardState(1, "n1", 0), entries(1, 4, 1), None)
    end_before = storage._offset
    storage.save(HardState(1, "n1", 2), entries(4, 6, 1), None)
    storage.close()
    path = wal / segments(wal)[-1]
    with path.open("r+b") as f:  # a crash tore the last record: its tail never arrived
        f.seek(end_before + 30)
        f.write(b"\xff" * 4)
    again = WalStorage(wal, segment_bytes=1 << 20)
    assert again.last_index() == 3 and again.initial_state() == HardState(1, "n1", 0)
    with path.open("rb") as f:  # the torn bytes were zeroed
        f.seek(end_before)
        assert f.read(64) == bytes(64)
    again.save(None, entries(4, 5, 2), None)
    again.close()
    third = WalStorage(wal, segment_bytes=1 << 20)
    assert third.last_index() == 4 and third.term(4) == 2
    third.close()


def test_damage_before_the_last_segment_is_refused(tmp_path: Path) -> None:
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL)
    for i in range(1, 60):
        storage.save(HardState(1, "n1", 0), [Entry(1, i, EntryKind.NORMAL, b"x" * 200)], None)
    storage.close()
    assert len(segments(wal)) >= 3
    with (wal / segments(wal)[0]).open("r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01")
    with pytest.raises(StorageCorrupted, match="damaged"):
        WalStorage(wal, segment_bytes=SMALL)


def test_old_payloads_are_read_back_from_the_segments(tmp_path: Path) -> None:
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, resident_bytes=100, segment_bytes=SMALL)
    twin = MemoryStorage.bootstrap(MEMBERS)
    big = [Entry(1, i, EntryKind.NORMAL, bytes([i]) * 40) for i in range(1, 41)]
    for store in (twin, storage):
        store.save(HardState(1, "n1", 0), big[:20], None)
        store.save(HardState(1, "n1", 35), big[20:], None)
    assert any(not e.data for e in storage._entries)  # some payloads left memory
    for lo, hi, limit in [(1, 41, None), (3, 9, None), (1, 41, 100), (14, 18, 1)]:
        assert storage.entries(lo, hi, limit) == twin.entries(lo, hi, limit)
    snap = Snapshot(SnapshotMeta(30, 1, MEMBERS))
    storage.compact(snap)
    twin.compact(snap)
    with pytest.raises(CompactedError):
        storage.entries(30, 32)
    assert storage.entries(31, 41) == twin.entries(31, 41)
    # A reader holding a location of a deleted segment gets CompactedError, not bytes.
    storage._resident_from = 36
    storage._where[31] = (0, 0, 40, 1, EntryKind.NORMAL)
    with pytest.raises(CompactedError):
        storage.entries(31, 33)
    storage.close()


def test_initialize_at_replaces_an_existing_log(tmp_path: Path) -> None:
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL)
    storage.save(HardState(3, "n1", 2), entries(1, 5, 3), None)
    storage.close()
    at = Snapshot(SnapshotMeta(40, 4, Membership.of(["n2"], ["n1"])))
    joined = WalStorage.initialize_at(wal, at, HardState(4, None, 40), segment_bytes=SMALL)
    assert joined.snapshot() == at and joined.last_index() == 40
    assert len(segments(wal)) == 1
    joined.save(None, entries(41, 43, 4), None)
    joined.close()
    again = WalStorage(wal, segment_bytes=SMALL)
    assert again.snapshot() == at and again.last_index() == 42
    assert again.initial_state() == HardState(4, None, 40)
    again.close()


def test_migrates_a_leveldb_log(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    try:
        old = LevelDBStorage.initialize(db, MEMBERS, resident_bytes=100)
        old.save(HardState(2, "n1", 500), entries(1, 601, 2), None)
        old.compact(Snapshot(SnapshotMeta(100, 2, MEMBERS), b"app"))
        wal = tmp_path / "raft"
        new = WalStorage.migrate(wal, old, segment_bytes=SMALL)
        same(new, _twin_of(old))
        assert not (tmp_path / "raft.new").exists()
        new.close()
        reopened = WalStorage(wal, segment_bytes=SMALL)
        same(reopened, _twin_of(old))
        reopened.close()
    finally:
        db.close()


def _twin_of(storage: LevelDBStorage) -> MemoryStorage:
    twin = MemoryStorage(storage.snapshot())
    twin.save(
        storage.initial_state(),
        storage.entries(storage.first_index(), storage.last_index() + 1),
        None,
    )
    return twin


def test_a_half_made_segment_gets_its_checkpoint(tmp_path: Path) -> None:
    """A crash right after a new segment was put in place, before its first record."""
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL)
    storage.save(HardState(1, "n1", 1), entries(1, 3, 1), None)
    storage.close()
    (wal / f"{2:016d}.wal").write_bytes(bytes(SMALL))
    (wal / SPARE).write_bytes(b"half")
    again = WalStorage(wal, segment_bytes=SMALL)
    assert again.last_index() == 2 and again.initial_state() == HardState(1, "n1", 1)
    again.save(None, entries(3, 4, 1), None)
    again.close()
    third = WalStorage(wal, segment_bytes=SMALL)
    assert third.last_index() == 3
    third.close()


def test_single_node_group_on_the_wal_restarts_and_reapplies(tmp_path: Path) -> None:
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL)
    node = RawNode(RaftConfig("n1"), storage, random.Random(1))
    node.campaign()
    applied: list[Entry] = []

    drain(node, storage, applied)
    last = 0
    for n in range(50):
        last = node.propose([b"tx%d" % n])
        drain(node, storage, applied)
    storage.close()
    durable_applied = applied[9].index
    applied.clear()
    storage2 = WalStorage(wal, segment_bytes=SMALL)
    node2 = RawNode(RaftConfig("n1", applied=durable_applied), storage2, random.Random(2))
    drain(node2, storage2, applied)
    assert [e.data for e in applied] == [b"tx%d" % n for n in range(10, 50)]
    assert node2.status().committed == last
    storage2.close()


def test_refused_save_writes_nothing(tmp_path: Path) -> None:
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL)
    storage.save(HardState(1, None, 0), entries(1, 3, 1), None)
    with pytest.raises(UnavailableError):
        storage.save(HardState(2, None, 0), entries(5, 6, 1), None)  # a gap after 2
    with pytest.raises(UnavailableError):
        storage.compact(Snapshot(SnapshotMeta(9, 1, MEMBERS)))
    storage.close()
    again = WalStorage(wal, segment_bytes=SMALL)
    assert again.initial_state() == HardState(1, None, 0) and again.last_index() == 2
    again.close()


def test_a_new_log_comes_with_its_spare_and_keeps_it_across_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = tmp_path / "raft"
    WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL).close()
    assert (wal / SPARE).read_bytes() == bytes(SMALL)

    def no_fill(path: Path, size: int, *args: Any) -> None:
        raise AssertionError("the spare made with the log was filled again")

    monkeypatch.setattr(wal_storage, "_zero_fill", no_fill)
    storage = WalStorage(wal, segment_bytes=SMALL)
    storage.save(
        HardState(1, None, 0), [Entry(1, 1, EntryKind.NORMAL, b"x" * (SMALL - 1000))], None
    )
    assert storage._spare is None and storage._spare_ready  # over half full, no fill
    storage.save(None, [Entry(1, 2, EntryKind.NORMAL, b"y" * 1200)], None)
    assert segments(wal)[-1] == "0000000000000002.wal"  # rotated into the spare
    storage.close()


def test_a_short_spare_left_by_a_stopped_fill_is_removed(tmp_path: Path) -> None:
    wal = tmp_path / "raft"
    WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL).close()
    with (wal / SPARE).open("r+b") as f:
        f.truncate(SMALL // 3)
    storage = WalStorage(wal, segment_bytes=SMALL)
    assert not (wal / SPARE).exists() and not storage._spare_ready
    storage.close()


def test_a_spare_is_filled_once_the_segment_is_half_full(tmp_path: Path) -> None:
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL)
    storage.save(HardState(1, None, 0), entries(1, 3, 1), None)
    storage.save(None, [Entry(1, 3, EntryKind.NORMAL, b"x" * (SMALL * 3 // 4))], None)
    # Into the spare made with the log; nothing compacted, so no segment is released.
    storage.save(None, [Entry(1, 4, EntryKind.NORMAL, b"x" * (SMALL // 3))], None)
    assert storage._spare is None and not (wal / SPARE).exists()
    storage.save(None, [Entry(1, 5, EntryKind.NORMAL, b"x" * (SMALL // 4))], None)
    assert storage._spare is not None
    storage._spare.join()  # the next segment is prepared in a thread
    assert (wal / SPARE).read_bytes() == bytes(SMALL)
    storage.close()


def test_released_segments_are_reused_without_a_zero_fill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fills: list[int] = []
    fill = wal_storage._zero_fill

    def counted(path: Path, size: int, *args: Any) -> None:
        fills.append(size)
        fill(path, size, *args)

    monkeypatch.setattr(wal_storage, "_zero_fill", counted)
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL)
    twin = MemoryStorage.bootstrap(MEMBERS)
    started = set(segments(wal))
    for i in range(1, 300):
        args = (HardState(1, "n1", i - 1), [Entry(1, i, EntryKind.NORMAL, b"%d" % i * 100)], None)
        storage.save(*args)
        twin.save(*args)
        started |= set(segments(wal))
        if i % 2 == 0:  # compaction keeps up: all but the last 2 entries
            snap = Snapshot(SnapshotMeta(i - 2, 1, MEMBERS), b"s%d" % i)
            storage.compact(snap)
            twin.compact(snap)
        if storage._spare is not None:
            storage._spare.join()
    same(storage, twin)
    assert len(started) >= 20  # it rotated often,
    assert len(fills) <= 3  # and after the first segments every one was a released one
    assert len(segments(wal)) <= 3
    storage.close()
    again = WalStorage(wal, segment_bytes=SMALL)  # old records past each seal are ignored
    same(again, twin)
    again.close()


def test_a_log_that_stopped_after_sealing_its_segment_continues_in_a_new_one(
    tmp_path: Path,
) -> None:
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, segment_bytes=1 << 20)
    storage.save(HardState(1, "n1", 1), entries(1, 3, 1), None)
    storage._put_frame(wal_storage._frame(wal_storage._SEAL_BODY.pack(4, 1), storage._crc))
    storage.close()  # the process stopped before the next segment was made
    again = WalStorage(wal, segment_bytes=1 << 20)
    assert again.last_index() == 2
    again.save(None, entries(3, 4, 1), None)
    assert len(segments(wal)) == 2
    again.close()
    third = WalStorage(wal, segment_bytes=1 << 20)
    assert third.last_index() == 3 and third.entries(1, 4) == entries(1, 4, 1)
    third.close()


def test_a_seal_naming_another_segment_is_damage(tmp_path: Path) -> None:
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, segment_bytes=1 << 20)
    storage.save(HardState(1, "n1", 1), entries(1, 3, 1), None)
    storage._put_frame(wal_storage._frame(wal_storage._SEAL_BODY.pack(4, 7), storage._crc))
    storage.close()
    with pytest.raises(StorageCorrupted, match="seal of segment 7"):
        WalStorage(wal, segment_bytes=1 << 20)


def test_a_folder_without_segments_is_replaced(tmp_path: Path) -> None:
    wal = tmp_path / "raft"
    wal.mkdir()
    (wal / SPARE).write_bytes(b"left over")
    assert not WalStorage.exists(wal)
    storage = WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL)
    assert storage.last_index() == 0 and len(segments(wal)) == 1
    storage.close()


def test_a_torn_write_that_lost_its_first_page_is_cleared(tmp_path: Path) -> None:
    """Power loss tore an unsynced record so that its header page reverted to zeros but a
    later page reached the disk: replay ends at the zeros and must clear the rest, or
    the stale bytes are read as damage once the segment is no longer the last."""
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, segment_bytes=64 * 1024)
    storage.save(HardState(1, "n1", 1), [Entry(1, 1, EntryKind.NORMAL, b"a" * 3800)], None)
    end = storage._offset
    storage.save(None, [Entry(1, 2, EntryKind.NORMAL, b"\x01" * 20000)], None, sync=False)
    storage.close()
    with (wal / segments(wal)[0]).open("r+b") as f:
        f.seek(end)
        f.write(bytes(4096 - end))  # the first page of the unsynced record is lost
    again = WalStorage(wal, segment_bytes=64 * 1024)
    assert again.last_index() == 1
    again.save(HardState(1, "n1", 1), [Entry(1, 2, EntryKind.NORMAL, b"b" * 4000)], None)
    again.save(HardState(1, "n1", 2), [Entry(1, 3, EntryKind.NORMAL, b"c" * 60000)], None)
    assert len(segments(wal)) == 2  # the torn segment is no longer the last
    again.close()
    third = WalStorage(wal, segment_bytes=64 * 1024)
    assert third.last_index() == 3 and third.entries(2, 3)[0].data == b"b" * 4000
    third.close()


def test_stray_files_and_empty_records_are_storage_errors(tmp_path: Path) -> None:
    wal = tmp_path / "raft"
    WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL).close()
    (wal / "-1.wal").write_bytes(b"")
    with pytest.raises(StorageCorrupted, match="unexpected file"):
        WalStorage(wal, segment_bytes=SMALL)


def test_a_failed_rotation_lets_no_record_follow_the_seal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL)
    storage.save(HardState(1, "n1", 0), [Entry(1, 1, EntryKind.NORMAL, b"a" * 100)], None)
    fill = wal_storage._zero_fill

    def full_disk(path: Path, size: int, *args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wal_storage, "_zero_fill", full_disk)
    with pytest.raises(OSError):  # a record bigger than a segment needs a bigger one
        storage.save(None, [Entry(1, 2, EntryKind.NORMAL, b"b" * (2 * SMALL))], None)
    monkeypatch.setattr(wal_storage, "_zero_fill", fill)
    storage.save(HardState(1, "n1", 1), [Entry(1, 2, EntryKind.NORMAL, b"c" * 10)], None)
    storage.close()
    again = WalStorage(wal, segment_bytes=SMALL)
    assert again.last_index() == 2 and again.entries(2, 3)[0].data == b"c" * 10
    again.close()


def test_a_torn_record_in_a_reused_segment_is_cleared_to_the_end(tmp_path: Path) -> None:
    wal = tmp_path / "raft"
    storage = WalStorage.initialize(wal, MEMBERS, segment_bytes=SMALL)
    index = 0
    # Segment 2 is the spare made with the log; segment 3 is segment 1, released.
    while storage._seq < 3:
        index += 1
        storage.save(HardState(1, "n1", index - 1), entries(index, index + 1, 1), None)
        if index > 2:
            storage.compact(Snapshot(SnapshotMeta(index - 2, 1, MEMBERS)))
    path = wal / segments(wal)[-1]
    assert path.read_bytes()[storage._offset :].strip(b"\0")  # the file's earlier use
    end = storage._offset
    storage.save(None, [Entry(1, index + 1, EntryKind.NORMAL, b"t" * 300)], None, sync=False)
    storage.close()
    with path.open("r+b") as f:  # the unsynced record was torn
        f.seek(end + 100)
        f.write(b"\xee" * 8)
    again = WalStorage(wal, segment_bytes=SMALL)
    assert again.last_index() == index
    assert path.read_bytes()[end:] == bytes(SMALL - end)
    again.save(None, [Entry(1, index + 1, EntryKind.NORMAL, b"u" * 10)], None)
    again.close()
    third = WalStorage(wal, segment_bytes=SMALL)
    assert (
        third.last_index() == index + 1 and third.entries(index + 1, index + 2)[0].data == b"u" * 10
    )
    third.close()
