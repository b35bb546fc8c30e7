"""Which membership is in force at which log index.

A configuration entry takes effect as soon as it is in the log (thesis §4.1), so when a
follower's uncommitted suffix is overwritten, an overwritten configuration entry stops
being in force and the one before it is back. This keeps the configuration entries that
are still in the log (above the snapshot), newest last.
"""

from __future__ import annotations

from node.consensus.entry import EntryKind
from node.consensus.membership import Membership, decode_membership
from node.consensus.storage import Storage


class ConfigHistory:
    def __init__(self, base_index: int, base: Membership) -> None:
        self.base_index = base_index  # the snapshot's index; `base` is in force there
        self.base = base
        self.entries: list[tuple[int, Membership]] = []

    @staticmethod
    def from_storage(storage: Storage) -> ConfigHistory:
        snap = storage.snapshot()
        history = ConfigHistory(snap.meta.index, snap.meta.membership)
        first, last = storage.first_index(), storage.last_index()
        step = 1024
        for lo in range(first, last + 1, step):
            for e in storage.entries(lo, min(lo + step, last + 1)):
                if e.kind is EntryKind.CONFIG:
                    history.add(e.index, decode_membership(e.data))
        return history

    def current(self) -> Membership:
        return self.entries[-1][1] if self.entries else self.base

    def last_index(self) -> int:
        """Index of the configuration in force (the snapshot index if none since)."""
        return self.entries[-1][0] if self.entries else self.base_index

    def add(self, index: int, membership: Membership) -> None:
        self.entries.append((index, membership))

    def truncate_from(self, index: int) -> bool:
        """Forget configurations at `index` and above; True if any were dropped."""
        n = len(self.entries)
        while self.entries and self.entries[-1][0] >= index:
            self.entries.pop()
        return len(self.entries) != n

    def restore(self, index: int, membership: Membership) -> None:
        self.base_index, self.base = index, membership
        self.entries = []

    def at(self, index: int) -> Membership:
        """The membership in force at `index` (which must be >= base_index)."""
        if index < self.base_index:
            raise ValueError(f"membership at {index} is below the snapshot {self.base_index}")
        found = self.base
        for i, m in self.entries:
            if i > index:
                break
            found = m
        return found

    def compact_to(self, index: int) -> None:
        """A snapshot at `index` now holds what the entries up to it said."""
        if index <= self.base_index:
            return
        self.base = self.at(index)
        self.base_index = index
        self.entries = [(i, m) for i, m in self.entries if i > index]
