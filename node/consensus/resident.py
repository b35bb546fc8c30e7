"""Raft storage that keeps the log in memory but only the newest payloads resident.

Both durable storages (wal_storage.py, leveldb_storage.py) keep every entry above the
snapshot in memory, so the core's frequent term and entry reads never touch the disk;
but only the newest `resident_bytes` of entry payloads stay there. Older committed
entries (a whole transaction batch each) keep their term and kind in memory and their
payload only on disk: compaction bounds the log by a count of entries, and under load a
few thousand batches are hundreds of megabytes. Reading them back serves a lagging
follower; a subclass says how (`_load`).

Threads: `save` and `compact` run in one worker thread at a time, while the core reads
`entries` on the event loop thread. `_evict` moves the resident mark before it swaps a
payload for a stub, and `entries` reads the mark after it copied the list, so a reader
that sees a stub also sees the mark past it and loads the payload.
"""

from __future__ import annotations

from collections.abc import Sequence

from node.consensus.entry import Entry, EntryKind, HardState, Snapshot
from node.consensus.errors import CompactedError, UnavailableError
from node.consensus.membership import Membership, decode_membership
from node.consensus.storage import MemoryStorage

# Payload bytes of the newest entries kept in memory (at about 1 MB of transactions a
# second under load, the last quarter minute or so).
RESIDENT_BYTES = 16 * 1024 * 1024


class ResidentStorage(MemoryStorage):
    def __init__(self, snapshot: Snapshot, resident_bytes: int = RESIDENT_BYTES) -> None:
        super().__init__(snapshot)
        self._resident_limit = resident_bytes
        # Entries with index >= _resident_from hold their payload in memory; below it,
        # `_entries` holds stubs (term, index, kind, no data) and the payload is on disk.
        self._resident_from = snapshot.meta.index + 1
        self._resident_size = 0

    def _load(self, index: int) -> Entry | None:
        """The stored entry at `index`, or None when it was compacted meanwhile."""
        raise NotImplementedError

    def last_membership(self) -> Membership:
        """The configuration in force at the end of the log: its last CONFIG entry's, or
        the snapshot's."""
        for e in reversed(self._entries):
            if e.kind == EntryKind.CONFIG:
                stored = e if e.data else self._load(e.index)
                if stored is not None:
                    return decode_membership(stored.data)
        return self._snapshot.meta.membership

    def _loaded(self) -> None:
        """Call after filling `_entries` from disk at open: counts and trims payloads."""
        self._resident_from = self._snapshot.meta.index + 1
        self._resident_size = sum(len(e.data) for e in self._entries)
        self._evict()

    def _admit(
        self, entries: Sequence[Entry], snapshot: Snapshot | None
    ) -> tuple[list[Entry], bool]:
        """Check a save before anything is written (a refused save leaves nothing behind):
        returns the entries to store (those above the snapshot in force after it) and
        whether `snapshot` replaces the log. UnavailableError for a gap."""
        old_last = self.last_index()
        new_snapshot = snapshot is not None and snapshot.meta.index > self._snapshot.meta.index
        snap_index = snapshot.meta.index if new_snapshot and snapshot else self._snapshot.meta.index
        if entries and entries[0].index > (snap_index if new_snapshot else old_last) + 1:
            raise UnavailableError(f"gap: appending {entries[0].index} after {old_last}")
        return [e for e in entries if e.index > snap_index], new_snapshot

    def _remember(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        new_snapshot: bool,
    ) -> None:
        """Apply a save that is already on disk to the in-memory copy."""
        if new_snapshot:
            assert snapshot is not None
            super().save(None, (), snapshot, False)
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
        super().save(hard_state, entries, None, False)
        self._evict()

    def _forget_compacted(self, snapshot: Snapshot) -> None:
        """Apply a compaction that is already on disk to the in-memory copy."""
        first = self._snapshot.meta.index + 1
        resident_from = self._resident_from
        dropped = self._entries[max(0, resident_from - first) : snapshot.meta.index + 1 - first]
        super().compact(snapshot)
        self._resident_size -= sum(len(e.data) for e in dropped)
        self._resident_from = max(resident_from, snapshot.meta.index + 1)

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
            # The mark moves first (see the module docstring).
            self._resident_from = index + 1
            if e.data:
                entries[index - offset] = Entry(e.term, e.index, e.kind)
                self._resident_size -= len(e.data)
            index += 1

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        out = super().entries(lo, hi)
        resident_from = self._resident_from  # read after the copy (see the docstring)
        if not out or (out[0].index >= resident_from and max_bytes is None):
            return out
        size = 0
        for n, e in enumerate(out):
            if e.index < resident_from:
                loaded = self._load(e.index)
                if loaded is None:  # compacted meanwhile (compaction runs in a worker thread)
                    raise CompactedError(f"index {e.index} is compacted")
                out[n] = e = loaded
            if max_bytes is not None and len(out) > 1:
                size += len(e.data) + 24
                if size > max_bytes and n > 0:
                    return out[:n]
        return out
