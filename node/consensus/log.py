"""The Raft log as the core sees it: stable entries in Storage plus an unstable tail.

Entries the core appends live in the unstable tail until the application reports (via
`RawNode.advance` or `RawNode.persisted`) that it saved them; then reads go to Storage.
Within the tail, entries from `in_progress` on have not been handed out in a Ready yet;
those before it are being saved (a leader's asynchronous write, thesis §10.2.1). An
unstable snapshot, received from a leader, replaces the whole log until it is saved.

Index invariants: snapshot index < first_index() <= committed + 1, applied <= committed
<= last_index(); unstable_offset <= in_progress <= last_index() + 1. The committed index
never decreases.
"""

from __future__ import annotations

from node.consensus.entry import Entry, Snapshot
from node.consensus.errors import CompactedError, UnavailableError
from node.consensus.storage import Storage


class RaftLog:
    def __init__(self, storage: Storage, applied: int) -> None:
        self.storage = storage
        self.unstable: list[Entry] = []
        self.unstable_offset = storage.last_index() + 1  # index of unstable[0]
        # First unstable index not yet handed out to be saved.
        self.in_progress = self.unstable_offset
        self.unstable_snapshot: Snapshot | None = None
        snap_index = storage.first_index() - 1
        hs = storage.initial_state()
        last = storage.last_index()
        # The application may have applied past the saved commit (commit-only hard
        # state changes need no fsync), but never past the durable log.
        self.committed = min(max(hs.commit, applied, snap_index), last)
        self.applied = min(max(applied, snap_index), self.committed)

    # ---- reading -------------------------------------------------------------------

    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.unstable_offset + len(self.unstable) - 1
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index
        return self.storage.last_index()

    def term(self, index: int) -> int | None:
        """Term at `index`, or None if compacted away or beyond the end."""
        off = self.unstable_offset
        if index >= off:
            pos = index - off
            return self.unstable[pos].term if pos < len(self.unstable) else None
        snap = self.unstable_snapshot
        if snap is not None:
            return snap.meta.term if index == snap.meta.index else None
        try:
            return self.storage.term(index)
        except (CompactedError, UnavailableError):
            return None

    def stable_index(self) -> int:
        """Last index whose entry the application reported saved (durably, when the
        Ready said must_sync); 0 while a received snapshot is not saved yet."""
        if self.unstable_snapshot is not None:
            return 0
        return self.unstable_offset - 1

    def last_term(self) -> int:
        t = self.term(self.last_index())
        assert t is not None
        return t

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a log ending at (last_index, last_term) at least as up to date as ours?"""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries lo <= i < hi (at least one if lo < hi). Raises CompactedError if lo
        is below first_index()."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(f"index {lo} compacted")
        off = self.unstable_offset
        out: list[Entry] = []
        if lo < off:
            out = self.storage.entries(lo, min(hi, off), max_bytes)
            if len(out) < min(hi, off) - lo:  # storage stopped at max_bytes
                return out
        if hi > off:
            start = max(lo, off) - off
            tail = self.unstable[start : hi - off]
            if max_bytes is None:
                out.extend(tail)
            else:
                size = sum(len(e.data) + 24 for e in out)
                for e in tail:
                    size += len(e.data) + 24
                    if size > max_bytes and out:
                        break
                    out.append(e)
        return out

    def first_index_of_term(self, index: int) -> int:
        """Smallest i <= index with the same term as `index`, within what we still hold."""
        term = self.term(index)
        first = self.first_index()
        while index > first and self.term(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int, at_most: int) -> int | None:
        """Largest i <= at_most whose term is `term`, or None if we hold no such entry."""
        i = min(at_most, self.last_index())
        first = self.first_index() - 1
        while i >= first:
            t = self.term(i)
            if t is None or t < term:
                return None
            if t == term:
                return i
            i -= 1
        return None

    # ---- changing --------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        """Put `entries` at their indexes, dropping whatever followed entries[0].index."""
        if not entries:
            return
        first = entries[0].index
        assert first > self.committed, f"overwriting committed index {first}"
        if first < self.in_progress:
            self.in_progress = first  # the replacements are yet to be handed out
        off = self.unstable_offset
        end = off + len(self.unstable)
        if first == end:
            self.unstable.extend(entries)
        elif first <= off:
            # Storage holds entries from `first` on that will be overwritten on save.
            self.unstable_offset = first
            self.unstable = list(entries)
        else:
            del self.unstable[first - off :]
            self.unstable.extend(entries)

    def maybe_append(
        self, index: int, log_term: int, commit: int, entries: tuple[Entry, ...]
    ) -> tuple[int, list[Entry]] | None:
        """Follower side of APPEND: None if (index, log_term) does not match, else the
        last index this message vouches for and the entries actually appended."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        appended: list[Entry] = []
        # Skip the prefix we already hold: re-appending it would truncate entries that a
        # newer message already added (messages may arrive out of order).
        for pos, e in enumerate(entries):
            t = self.term(e.index)
            if t != e.term:
                if t is not None and e.index <= self.committed:
                    raise AssertionError(f"entry {e.index} conflicts with committed log")
                appended = list(entries[pos:])
                self.append(appended)
                break
        self.commit_to(min(commit, last_new))
        return last_new, appended

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(f"commit {index} beyond last index {self.last_index()}")
            self.committed = index

    def restore(self, snapshot: Snapshot) -> None:
        self.unstable_snapshot = snapshot
        self.unstable = []
        self.unstable_offset = snapshot.meta.index + 1
        self.in_progress = self.unstable_offset
        self.committed = snapshot.meta.index

    def unsaved(self) -> list[Entry]:
        """Entries not handed out to be saved yet."""
        return self.unstable[self.in_progress - self.unstable_offset :]

    def has_unsaved(self) -> bool:
        return self.in_progress < self.unstable_offset + len(self.unstable)

    def saving_to(self, index: int) -> None:
        """Entries up to `index` were handed out and are being saved."""
        if index >= self.in_progress:
            self.in_progress = index + 1

    def stable_to(self, index: int, term: int) -> None:
        """The application saved entries up to (index, term)."""
        off = self.unstable_offset
        if index < off or self.term(index) != term:
            return  # overwritten since that Ready; the new tail is still unstable
        del self.unstable[: index + 1 - off]
        self.unstable_offset = index + 1
        if self.in_progress < self.unstable_offset:
            self.in_progress = self.unstable_offset

    def stable_snapshot_to(self, index: int) -> None:
        if self.unstable_snapshot is not None and self.unstable_snapshot.meta.index == index:
            self.unstable_snapshot = None

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            self.applied = min(index, self.committed)

    def next_committed(self, max_bytes: int, limit: int) -> list[Entry]:
        """Committed entries to apply next, none beyond `limit`."""
        lo = self.applied + 1
        if self.unstable_snapshot is not None:
            lo = max(lo, self.unstable_snapshot.meta.index + 1)
        hi = min(self.committed, limit)
        if lo > hi:
            return []
        return self.slice(lo, hi + 1, max_bytes)

    def has_next_committed(self, limit: int) -> bool:
        lo = self.applied + 1
        if self.unstable_snapshot is not None:
            lo = max(lo, self.unstable_snapshot.meta.index + 1)
        return lo <= min(self.committed, limit)
