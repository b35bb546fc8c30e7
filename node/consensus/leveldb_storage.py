"""Raft storage on LevelDB (plyvel), for production.

Keys, under whatever prefix the caller's (prefixed) DB has:
    b"hs"                 -> hard state: term u64 | commit u64 | vote (utf-8, may be empty)
    b"snap"               -> snapshot: index u64 | term u64 | len u32 | membership | data
    b"e" + index u64 (BE) -> entry: term u64 | kind u8 | data

Every `save` and `compact` is one `write_batch(transaction=True, sync=...)`, so a crash
leaves either all of a Ready or none of it. The log is also kept in memory, with only the
newest payloads resident (resident.py). Ownership and errors are as documented in
storage.py; a value that cannot be decoded raises StorageCorrupted.

Nodes now keep their Raft log in a write-ahead log (wal_storage.py); this storage stays
to read (and migrate) the log of a node that ran an older version, and as the
comparison in perf/raft.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from node.consensus.entry import EMPTY_SNAPSHOT, Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from node.consensus.errors import StorageCorrupted
from node.consensus.membership import Membership, decode_membership, encode_membership
from node.consensus.resident import RESIDENT_BYTES, ResidentStorage

_HS = b"hs"
_SNAP = b"snap"
_ENTRY = b"e"
_U64 = struct.Struct(">Q")
_ENTRY_HEAD = struct.Struct(">QB")
_SNAP_HEAD = struct.Struct(">QQI")


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


class LevelDBStorage(ResidentStorage):
    """`db` is an open plyvel.DB or a prefixed DB (e.g. `db.prefixed_db(b"raft/")`);
    the caller owns it and closes it. Reads are served by the in-memory copy;
    writes go to LevelDB first, then to the copy."""

    def __init__(self, db: Any, resident_bytes: int = RESIDENT_BYTES) -> None:
        self._db = db
        raw_snap = db.get(_SNAP)
        super().__init__(
            _decode_snapshot(raw_snap) if raw_snap is not None else EMPTY_SNAPSHOT, resident_bytes
        )
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
        self._loaded()

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
        the log begins after `snapshot`. Any older Raft state in `db` is replaced."""
        with db.write_batch(transaction=True, sync=True) as batch:
            for key, _ in db.iterator(prefix=_ENTRY):
                batch.delete(key)
            batch.put(_SNAP, _encode_snapshot(snapshot))
            batch.put(_HS, _encode_hard_state(hard_state))
        return LevelDBStorage(db)

    @staticmethod
    def clear(db: Any) -> None:
        """Delete every key of the Raft state in `db` (after a migration)."""
        with db.write_batch(transaction=True, sync=True) as batch:
            for key in db.iterator(include_value=False):
                batch.delete(key)

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
        entries, new_snapshot = self._admit(entries, snapshot)
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
        self._remember(hard_state, entries, snapshot, new_snapshot)

    def _load(self, index: int) -> Entry | None:
        raw = self._db.get(_entry_key(index))
        return None if raw is None else _decode_entry(index, raw)

    def compact(self, snapshot: Snapshot) -> None:
        first = self._snapshot.meta.index + 1
        if snapshot.meta.index < first:
            return
        # Not synced: a write batch is atomic in LevelDB's log, so a crash keeps either
        # the new snapshot without the entries it covers or the old snapshot with them,
        # both a valid log; the next synced save makes it durable anyway.
        with self._db.write_batch(transaction=True, sync=False) as batch:
            batch.put(_SNAP, _encode_snapshot(snapshot))
            for i in range(first, snapshot.meta.index + 1):
                batch.delete(_entry_key(i))
        self._forget_compacted(snapshot)
