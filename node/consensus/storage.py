"""Durable Raft storage: the protocol the core reads through, and an in-memory twin.

The core only *reads* storage (entries, terms, the snapshot, the initial state). The
application *writes* it: after each `Ready` it calls `save(...)` with the hard state,
entries and snapshot the Ready carries, before sending the Ready's messages (a leader's
Ready marked `async_save` may be sent first: see rawnode.py), and it calls
`compact(snapshot)` when it has taken a snapshot of its state machine.

Ownership: returned lists are fresh lists the caller may keep or change; the Entry and
Snapshot values inside are immutable and shared. Errors: `CompactedError` for an index at
or below the snapshot, `UnavailableError` for an index beyond the last entry,
`StorageCorrupted` (LevelDB only) for bytes that cannot be decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from node.consensus.entry import EMPTY_SNAPSHOT, Entry, HardState, Snapshot, SnapshotMeta
from node.consensus.errors import CompactedError, UnavailableError
from node.consensus.membership import Membership


class Storage(Protocol):
    def initial_state(self) -> HardState:
        """The last saved hard state (HardState() for a new node)."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries with lo <= index < hi; at least one if lo < hi, even over max_bytes."""
        ...

    def term(self, index: int) -> int:
        """Term of the entry at `index`; the snapshot's term for its own index."""
        ...

    def first_index(self) -> int:
        """Index of the first entry that may be available (snapshot index + 1)."""
        ...

    def last_index(self) -> int:
        """Index of the last entry (the snapshot index if there is none after it)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot (index 0 and the bootstrap membership at first)."""
        ...

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        sync: bool = True,
    ) -> None:
        """Persist a Ready atomically: snapshot first (it replaces the whole log), then
        entries (overwriting any stored entries from entries[0].index on), then hard
        state. With sync, durable when this returns."""
        ...

    def compact(self, snapshot: Snapshot) -> None:
        """Record an application snapshot and drop the entries it covers. Its index must
        lie between the current snapshot index and the last index."""
        ...


class MemoryStorage:
    """Dict-and-list storage for tests and the simulator; nothing survives the process."""

    def __init__(self, snapshot: Snapshot = EMPTY_SNAPSHOT) -> None:
        self._hard_state = HardState()
        self._snapshot = snapshot
        self._entries: list[Entry] = []  # _entries[0].index == snapshot index + 1

    @staticmethod
    def bootstrap(membership: Membership) -> MemoryStorage:
        """Storage of a founding member: an empty log whose configuration is `membership`."""
        return MemoryStorage(Snapshot(SnapshotMeta(0, 0, membership)))

    def initial_state(self) -> HardState:
        return self._hard_state

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._snapshot.meta.index + 1
        if lo < offset:
            raise CompactedError(f"index {lo} is compacted (first is {offset})")
        if hi > offset + len(self._entries):
            raise UnavailableError(f"index {hi - 1} beyond last {offset + len(self._entries) - 1}")
        out = self._entries[lo - offset : hi - offset]
        if max_bytes is not None and len(out) > 1:
            size = 0
            for n, e in enumerate(out):
                size += len(e.data) + 24
                if size > max_bytes and n > 0:
                    return out[:n]
        return out

    def term(self, index: int) -> int:
        snap = self._snapshot.meta
        if index == snap.index:
            return snap.term
        if index < snap.index:
            raise CompactedError(f"index {index} is compacted (snapshot at {snap.index})")
        pos = index - snap.index - 1
        if pos >= len(self._entries):
            raise UnavailableError(f"index {index} beyond last {snap.index + len(self._entries)}")
        return self._entries[pos].term

    def first_index(self) -> int:
        return self._snapshot.meta.index + 1

    def last_index(self) -> int:
        return self._snapshot.meta.index + len(self._entries)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        sync: bool = True,
    ) -> None:
        if snapshot is not None and snapshot.meta.index > self._snapshot.meta.index:
            self._snapshot = snapshot
            self._entries = []
        if entries:
            self._append(entries)
        if hard_state is not None:
            self._hard_state = hard_state

    def _append(self, entries: Sequence[Entry]) -> None:
        offset = self._snapshot.meta.index + 1
        first = entries[0].index
        if first < offset:  # the front is already covered by the snapshot
            entries = entries[offset - first :]
            if not entries:
                return
            first = offset
        pos = first - offset
        if pos > len(self._entries):
            raise UnavailableError(
                f"gap: appending {first} after {offset + len(self._entries) - 1}"
            )
        del self._entries[pos:]
        self._entries.extend(entries)

    def compact(self, snapshot: Snapshot) -> None:
        index = snapshot.meta.index
        if index <= self._snapshot.meta.index:
            return  # an older snapshot than the one we hold: nothing to do
        if index > self.last_index():
            raise UnavailableError(f"snapshot {index} beyond last index {self.last_index()}")
        del self._entries[: index - self._snapshot.meta.index]
        self._snapshot = snapshot
