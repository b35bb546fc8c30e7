"""Timing of stalls (node/stalls.py): observers, the slow-stall log line; synced ledger
writes and garbage collections are timed."""

from __future__ import annotations

from pathlib import Path

import structlog

from node.ledger.kvstore import LevelDBKV
from node.stalls import SYNCS, Stalls


def test_observers_see_every_sync_and_slow_ones_are_logged_once_per_interval() -> None:
    times = Stalls("slow_disk_sync", "store", "slow_syncs", slow_s=0.1, log_every_s=10.0)
    seen: list[tuple[str, float]] = []
    with structlog.testing.capture_logs() as logs, times.observed(lambda s, t: seen.append((s, t))):
        times.record("raft", 0.002)
        times.record("raft", 0.25)  # slow: logged
        times.record("raft", 0.4)  # slow, within the interval: counted, not logged
        times.record("ledger", 0.3)  # another store has its own interval
    times.record("raft", 0.5)  # after the block: no observer
    assert [s for s, _ in seen] == ["raft", "raft", "raft", "ledger"]
    slow = [e for e in logs if e["event"] == "slow_disk_sync"]
    assert [(e["store"], e["slow_syncs"], e["slowest_ms"]) for e in slow] == [
        ("raft", 1, 250.0),
        ("ledger", 1, 300.0),
    ]
    assert times.slow_total == {"raft": 3, "ledger": 1}


def test_the_next_line_after_the_interval_counts_what_was_held_back() -> None:
    times = Stalls("slow_disk_sync", "store", "slow_syncs", slow_s=0.1, log_every_s=3600.0)
    with structlog.testing.capture_logs() as logs:
        times.record("raft", 0.2)  # logged
        times.record("raft", 0.7)  # held back
        times.log_every_s = 0.0  # the interval has passed
        times.record("raft", 0.3)  # logged with the one held back
    slow = [e for e in logs if e["event"] == "slow_disk_sync"]
    assert [(e["slow_syncs"], e["slowest_ms"]) for e in slow] == [(1, 200.0), (2, 700.0)]


def test_a_synced_ledger_batch_is_timed_under_the_folder_name(tmp_path: Path) -> None:
    store = LevelDBKV(tmp_path / "ledger")
    seen: list[str] = []
    try:
        with SYNCS.observed(lambda s, _t: seen.append(s)):
            store.write({b"a": b"1"}, set(), sync=True)
            store.write({b"b": b"2"}, set(), sync=False)  # unsynced: not timed
    finally:
        store.close()
    assert seen == ["ledger"]
