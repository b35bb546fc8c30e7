"""What stalls a node, timed in one place: synced writes (the Raft log's fdatasync, the
ledger's synced write batch) and the garbage collector's pauses.

A synced write waits for the disk to say the bytes are stable. On a shared or virtual
disk that wait is sometimes hundreds of milliseconds for every process at once, and
then every transaction in flight waits with it: the first thing to rule in or out when
commit latency spikes. A collection of Python's cyclic garbage collector stops every
thread of the node while it runs (node/gctune.py keeps those short).

Each timed stall is passed to the observers (the node's Prometheus histograms
`medledger_disk_sync_seconds{store=...}` and `medledger_gc_pause_seconds{generation=...}`),
and one slower than `SLOW_S` is logged (`slow_disk_sync`, `slow_gc_pause`) at most once
per `LOG_EVERY_S` per store or generation, with how many were slow since the last line,
as etcd logs a slow fdatasync.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

log = structlog.get_logger("medledger.stalls")

SLOW_S = 0.1
LOG_EVERY_S = 10.0

Observer = Callable[[str, float], None]


class Stalls:
    """Counts and reports one kind of stall by source: `event` names the log line,
    `label` its source field ("store" for syncs, "generation" for collections) and
    `count_field` the field with how many were slow since the last line."""

    def __init__(
        self,
        event: str,
        label: str,
        count_field: str,
        slow_s: float = SLOW_S,
        log_every_s: float = LOG_EVERY_S,
    ) -> None:
        self.event = event
        self.label = label
        self.count_field = count_field
        self.slow_s = slow_s
        self.log_every_s = log_every_s
        self._observers: list[Observer] = []
        self._lock = threading.Lock()
        # source -> (slow stalls not yet logged, slowest of them, when the last line was)
        self._unlogged: dict[str, tuple[int, float, float]] = {}
        self.slow_total: dict[str, int] = {}

    @contextmanager
    def observed(self, observer: Observer) -> Iterator[None]:
        """Pass every timed stall to `observer` while the block runs."""
        self._observers.append(observer)
        try:
            yield
        finally:
            self._observers.remove(observer)

    @contextmanager
    def timed(self, source: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.record(source, time.monotonic() - started)

    def record(self, source: str, seconds: float) -> None:
        for observer in list(self._observers):
            observer(source, seconds)
        if seconds < self.slow_s:
            return
        now = time.monotonic()
        with self._lock:
            self.slow_total[source] = self.slow_total.get(source, 0) + 1
            count, slowest, last = self._unlogged.get(source, (0, 0.0, float("-inf")))
            count, slowest = count + 1, max(slowest, seconds)
            if now - last < self.log_every_s:
                self._unlogged[source] = (count, slowest, last)
                return
            self._unlogged[source] = (0, 0.0, now)
        log.warning(
            self.event,
            **{self.label: source, self.count_field: count},
            slowest_ms=round(slowest * 1000, 1),
            threshold_ms=round(self.slow_s * 1000, 1),
        )


# The process's synced writes: the storages time theirs here, the daemon observes it.
SYNCS = Stalls("slow_disk_sync", "store", "slow_syncs")
# The process's garbage collections, timed by node.gctune's callback.
GC_PAUSES = Stalls("slow_gc_pause", "generation", "slow_pauses")
