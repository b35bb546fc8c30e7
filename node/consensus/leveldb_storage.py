"""Raft storage on LevelDB (plyvel), for production.

Keys, under whatever prefix the caller's (prefixed) DB has:
    b"hs"                 -> hard state: term u64 | commit u64 | vote (utf-8, may be empty)
    b"snap"               -> snapshot: index u64 | term u64 | len u32 | membership | data
    b"e" + index u64 (BE) -> entry: term u64 | kind u8 | data

Every `save` and `compact` is one `write_batch(transaction=True, sync=...)`, so a crash
leaves either all of a Ready or none of it. The entries above the snapshot are also
kept in memory, so the core's frequent term and entry reads never touch the disk; but
only the newest `resident_bytes` of entry payloads stay there. Older committed entries
(a whole transaction batch each) keep their term and kind in memory and their payload
only on disk: compaction bounds the log by a count of entries, and under load a few
thousand batches are hundreds of megabytes. Reading them back serves a lagging follower.
Ownership and errors are as documented in storage.py; a value that cannot be decoded
raises StorageCorrupted.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from node.consensus.entry import EMPTY_SNAPSHOT, Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from node.consensus.errors import CompactedError, StorageCorrupted, UnavailableError
from node.consensus.membership import Membership, decode_membership, encode_membership
from node.consensus.storage import MemoryStorage

_HS = b"hs"
_SNAP = b"snap"
_ENTRY = b"e"
_U64 = struct.Struct(">Q")
_ENTRY_HEAD = struct.Struct(">QB")
_SNAP_HEAD = struct.Struct(">QQI")

# Payload bytes of the newest entries kept in memory (at about 1 MB of transactions a
# second under load, the last quarter minute or so).
RESIDENT_BYTES = 16 * 1024 * 1024


def _entry_key(index: int) -> bytes:
    return _ENTRY + _U64.pack(index)


def _encode_hard_state(hs: HardState) -> bytes:
    return _U64.pack(hs.term) + _U64.pack(hs.commit) + (hs.vote or "").encode()


def _decode_hard_state(raw: bytes) -> HardState:
    if len(raw) < 16:
        raise StorageCorrupted("hard state is truncated")
    (term,) = _U64.unpack_from(raw, 0)
    (commit,) = _U64.unpack_from(raw, 8)
    vote = raw[16:].decode() or None
    return HardState(term, vote, commit)


def _encode_snapshot(s: Snapshot) -> bytes:
    members = encode_membership(s.meta.membership)
    return _SNAP_HEAD.pack(s.meta.index, s.meta.term, len(members)) + members + s.data


def _decode_snapshot(raw: bytes) -> Snapshot:
    try:
        index, term, n = _SNAP_HEAD.unpack_from(raw, 0)
        start = _SNAP_HEAD.size
        membership = decode_membership(raw[start : start + n])
    except (struct.error, ValueError, KeyError) as exc:
        raise StorageCorrupted(f"snapshot record cannot be decoded: {exc}") from exc
    return Snapshot(SnapshotMeta(index, term, membership), raw[start + n :])


def _encode_entry(e: Entry) -> bytes:
    return _ENTRY_HEAD.pack(e.term, e.kind) + e.data


def _decode_entry(index: int, raw: bytes) -> Entry:
    try:
        term, kind = _ENTRY_HEAD.unpack_from(raw, 0)
        return Entry(term, index, EntryKind(kind), raw[_ENTRY_HEAD.size :])
    except (struct.error, ValueError) as exc:
        raise StorageCorrupted(f"entry {index} cannot be decoded: {exc}") from exc


class LevelDBStorage(MemoryStorage):
    """`db` is an open plyvel.DB or a prefixed DB (e.g. `db.prefixed_db(b"raft/")`);
    the caller owns it and closes it. Reads are served by the in-memory copy that
    MemoryStorage keeps; writes go to LevelDB first, then to the copy."""

    def __init__(self, db: Any, resident_bytes: int = RESIDENT_BYTES) -> None:
        self._db = db
        self._resident_limit = resident_bytes
        # Entries with index >= _resident_from hold their payload in memory; below it,
        # `_entries` holds stubs (term, index, kind, no data) and the payload is on disk.
        self._resident_from = 0
        self._resident_size = 0
        raw_snap = db.get(_SNAP)
        super().__init__(_decode_snapshot(raw_snap) if raw_snap is not None else EMPTY_SNAPSHOT)
        raw_hs = db.get(_HS)
        if raw_hs is not None:
            self._hard_state = _decode_hard_state(raw_hs)
        expected = self._snapshot.meta.index + 1
        for key, value in db.iterator(prefix=_ENTRY):
            (index,) = _U64.unpack(key[len(_ENTRY) :])
            if index < expected:
                continue  # below the snapshot; batches make this impossible, but harmless
            if index != expected:
                raise StorageCorrupted(f"entry {expected} is missing (found {index})")
            self._entries.append(_decode_entry(index, value))
            expected += 1
        self._resident_from = self._snapshot.meta.index + 1
        self._resident_size = sum(len(e.data) for e in self._entries)
        self._evict()

    @staticmethod
    def initialize(
        db: Any, membership: Membership, resident_bytes: int = RESIDENT_BYTES
    ) -> LevelDBStorage:
        """Initialise an empty DB for a founding member; refuses a DB that has state."""
        if db.get(_SNAP) is not None or db.get(_HS) is not None:
            raise StorageCorrupted("refusing to bootstrap: Raft state already present")
        snap = Snapshot(SnapshotMeta(0, 0, membership))
        db.put(_SNAP, _encode_snapshot(snap), sync=True)
        return LevelDBStorage(db, resident_bytes)

    @staticmethod
    def initialize_at(db: Any, snapshot: Snapshot, hard_state: HardState) -> LevelDBStorage:
        """(Re)start the Raft state of a member joining with a ledger it already holds:
        the log begins after `snapshot` (the entry that made the ledger's newest block),
        so nothing the ledger holds is applied again. Any older Raft state in `db` (of a
        node that was a member before) is replaced; the caller keeps its term and vote
        in `hard_state`, which must not go backwards."""
        with db.write_batch(transaction=True, sync=True) as batch:
            for key, _ in db.iterator(prefix=_ENTRY):
                batch.delete(key)
            batch.put(_SNAP, _encode_snapshot(snapshot))
            batch.put(_HS, _encode_hard_state(hard_state))
        return LevelDBStorage(db)

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        sync: bool = True,
    ) -> None:
        if hard_state is None and not entries and snapshot is None:
            return
        old_last = self.last_index()
        new_snapshot = snapshot is not None and snapshot.meta.index > self._snapshot.meta.index
        base = snapshot.meta.index if snapshot is not None and new_snapshot else None
        snap_index = base if base is not None else self._snapshot.meta.index
        if entries and entries[0].index > (snap_index if base is not None else old_last) + 1:
            # Checked before writing, so that a refused save leaves nothing behind.
            raise UnavailableError(f"gap: appending {entries[0].index} after {old_last}")
        entries = [e for e in entries if e.index > snap_index]
        with self._db.write_batch(transaction=True, sync=sync) as batch:
            if new_snapshot:
                assert snapshot is not None
                batch.put(_SNAP, _encode_snapshot(snapshot))
                for i in range(self._snapshot.meta.index + 1, old_last + 1):
                    batch.delete(_entry_key(i))
                old_last = snapshot.meta.index
            if entries:
                for e in entries:
                    batch.put(_entry_key(e.index), _encode_entry(e))
                for i in range(entries[-1].index + 1, old_last + 1):
                    batch.delete(_entry_key(i))  # an overwritten, longer suffix
            if hard_state is not None:
                batch.put(_HS, _encode_hard_state(hard_state))
        if new_snapshot:
            assert snapshot is not None
            super().save(None, (), snapshot, sync)
            self._resident_from = snapshot.meta.index + 1
            self._resident_size = 0
        if entries:
            # Entries from entries[0] on are replaced (usually none: an append).
            first = max(entries[0].index, self._resident_from)
            offset = self._snapshot.meta.index + 1
            for e in self._entries[first - offset :]:
                self._resident_size -= len(e.data)
            if entries[0].index < self._resident_from:
                self._resident_from = entries[0].index  # replaced stubs: all in memory again
            self._resident_size += sum(len(e.data) for e in entries)
        super().save(hard_state, entries, None, sync)
        self._evict()

    def _evict(self) -> None:
        """Swap the oldest committed entries' payloads for stubs until the payloads in
        memory fit in `resident_bytes` (the newest entry always stays)."""
        if self._resident_size <= self._resident_limit:
            return
        offset = self._snapshot.meta.index + 1
        last_evictable = min(self._hard_state.commit, self.last_index() - 1)
        entries = self._entries
        index = self._resident_from
        while self._resident_size > self._resident_limit and index <= last_evictable:
            e = entries[index - offset]
            # The mark moves first: a reader in another thread that sees this stub also
            # sees the mark past it, and reads the payload from disk (see `entries`).
            self._resident_from = index + 1
            if e.data:
                entries[index - offset] = Entry(e.term, e.index, e.kind)
                self._resident_size -= len(e.data)
            index += 1

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        out = super().entries(lo, hi)
        resident_from = self._resident_from  # read after the copy (see `_evict`)
        if not out or (out[0].index >= resident_from and max_bytes is None):
            return out
        size = 0
        for n, e in enumerate(out):
            if e.index < resident_from:
                raw = self._db.get(_entry_key(e.index))
                if raw is None:  # compacted meanwhile (compaction runs in a worker thread)
                    raise CompactedError(f"index {e.index} is compacted")
                out[n] = e = _decode_entry(e.index, raw)
            if max_bytes is not None and len(out) > 1:
                size += len(e.data) + 24
                if size > max_bytes and n > 0:
                    return out[:n]
        return out

    def compact(self, snapshot: Snapshot) -> None:
        first = self._snapshot.meta.index + 1
        if snapshot.meta.index < first:
            return
        # Not synced: a write batch is atomic in LevelDB's log, so a crash keeps either
        # the new snapshot without the entries it covers or the old snapshot with them,
        # both a valid log; the next synced save makes it durable anyway. (A synced
        # compaction cost an extra fsync every COMPACT_EVERY entries on the Raft loop.)
        with self._db.write_batch(transaction=True, sync=False) as batch:
            batch.put(_SNAP, _encode_snapshot(snapshot))
            for i in range(first, snapshot.meta.index + 1):
                batch.delete(_entry_key(i))
        resident_from = self._resident_from
        dropped = self._entries[max(0, resident_from - first) : snapshot.meta.index + 1 - first]
        super().compact(snapshot)
        self._resident_size -= sum(len(e.data) for e in dropped)
        self._resident_from = max(resident_from, snapshot.meta.index + 1)
