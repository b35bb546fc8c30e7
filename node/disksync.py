"""How long the node's synced writes take (the Raft log's fdatasync, the ledger's synced
write batch), in one place.

A synced write waits for the disk to say the bytes are stable. On a shared or virtual
disk that wait is sometimes hundreds of milliseconds for every process at once, and
then every transaction in flight waits with it: the first thing to rule in or out when
commit latency spikes. Each timed sync is passed to the observers (the node's
Prometheus histogram `medledger_disk_sync_seconds{store=...}`), and a sync slower than
`SLOW_S` is logged as `slow_disk_sync` (at most once per `LOG_EVERY_S` per store, with
how many were slow since the last line), as etcd logs a slow fdatasync.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

log = structlog.get_logger("medledger.disk")

SLOW_S = 0.1
LOG_EVERY_S = 10.0

Observer = Callable[[str, float], None]


class SyncTimes:
    """Counts and reports synced writes by store name ("raft", "ledger")."""

    def __init__(self, slow_s: float = SLOW_S, log_every_s: float = LOG_EVERY_S) -> None:
        self.slow_s = slow_s
        self.log_every_s = log_every_s
        self._observers: list[Observer] = []
        self._lock = threading.Lock()
        # store -> (slow syncs not yet logged, slowest of them, when the last line was)
        self._unlogged: dict[str, tuple[int, float, float]] = {}
        self.slow_total: dict[str, int] = {}

    @contextmanager
    def observed(self, observer: Observer) -> Iterator[None]:
        """Pass every timed sync to `observer` while the block runs."""
        self._observers.append(observer)
        try:
            yield
        finally:
            self._observers.remove(observer)

    @contextmanager
    def timed(self, store: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.record(store, time.monotonic() - started)

    def record(self, store: str, seconds: float) -> None:
        for observer in list(self._observers):
            observer(store, seconds)
        if seconds < self.slow_s:
            return
        now = time.monotonic()
        with self._lock:
            self.slow_total[store] = self.slow_total.get(store, 0) + 1
            count, slowest, last = self._unlogged.get(store, (0, 0.0, float("-inf")))
            count, slowest = count + 1, max(slowest, seconds)
            if now - last < self.log_every_s:
                self._unlogged[store] = (count, slowest, last)
                return
            self._unlogged[store] = (0, 0.0, now)
        log.warning(
            "slow_disk_sync",
            store=store,
            slow_syncs=count,
            slowest_ms=round(slowest * 1000, 1),
            threshold_ms=round(self.slow_s * 1000, 1),
        )


# The process's synced writes: the storages time theirs here, the daemon observes it.
SYNCS = SyncTimes()
