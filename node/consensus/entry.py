"""Value types the Raft core stores and persists: log entries, hard state, snapshots.

Everything here is an immutable value. The application's payload is opaque bytes; the
core never looks inside NORMAL entries. CONFIG entries carry a whole `Membership`
(encoded with `membership.encode_membership`), not a delta, so that the configuration in
force at any index can be read off the log without replaying deltas.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from node.consensus.membership import Membership


class EntryKind(enum.IntEnum):
    NORMAL = 0  # application payload (a transaction batch)
    NOOP = 1  # appended by every new leader; commits the leader's term (Raft §5.4.2)
    CONFIG = 2  # a full membership; takes effect when appended (thesis §4.1)


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def size(self) -> int:
        # 24 bytes stands for term, index and kind on the wire; good enough for batching.
        return len(self.data) + 24


@dataclass(frozen=True, slots=True)
class HardState:
    """What must survive a crash before any message that depends on it is sent."""

    term: int = 0
    vote: str | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    membership: Membership


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine as of `meta.index`; `data` belongs to the application
    (for MedLedger: the block height and hash and the window of recent tx ids)."""

    meta: SnapshotMeta
    data: bytes = b""

    @property
    def index(self) -> int:
        return self.meta.index

    @property
    def term(self) -> int:
        return self.meta.term


EMPTY_MEMBERSHIP = Membership(frozenset(), frozenset())
EMPTY_SNAPSHOT = Snapshot(SnapshotMeta(0, 0, EMPTY_MEMBERSHIP))


def entries_size(entries: list[Entry] | tuple[Entry, ...]) -> int:
    return sum(len(e.data) + 24 for e in entries)
