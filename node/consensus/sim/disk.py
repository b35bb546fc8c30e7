"""A simulated disk: MemoryStorage whose unsynced writes a crash throws away.

`save(..., sync=False)` lands in the "page cache": readable at once, durable only after
a later synced write (an fsync flushes everything before it, as LevelDB's log does) or
an explicit `writeback()` (the kernel flushing on its own). `crash()` returns the disk to
its last durable state.
"""

from __future__ import annotations

from collections.abc import Sequence

from node.consensus.entry import EMPTY_SNAPSHOT, Entry, HardState, Snapshot
from node.consensus.storage import MemoryStorage


class SimDisk(MemoryStorage):
    def __init__(self, snapshot: Snapshot = EMPTY_SNAPSHOT) -> None:
        super().__init__(snapshot)
        # The durable state, captured before the first unsynced write since the last sync.
        self._durable: tuple[HardState, Snapshot, list[Entry]] | None = None

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        sync: bool = True,
    ) -> None:
        if not sync and self._durable is None:
            self._durable = (self._hard_state, self._snapshot, list(self._entries))
        super().save(hard_state, entries, snapshot, sync)
        if sync:
            self._durable = None

    def compact(self, snapshot: Snapshot) -> None:
        super().compact(snapshot)
        self._durable = None  # compaction is a synced write

    def writeback(self) -> None:
        self._durable = None

    def has_unsynced(self) -> bool:
        return self._durable is not None

    def crash(self) -> None:
        if self._durable is not None:
            self._hard_state, self._snapshot, self._entries = self._durable
            self._durable = None
