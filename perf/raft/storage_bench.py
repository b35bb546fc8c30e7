"""Raft storage alone: the write-ahead log against the LevelDB log, as a node uses them.

    python perf/raft/storage_bench.py [--entries 3000] [--entry-kb 60] [--rounds 3] [--save]

Each round saves `--entries` entries one per synced save with a hard state (what a
follower does per APPEND: a block's batch of transactions, ~60 KB at 100 transactions),
compacting every 1,000 entries and keeping 2,000 (RaftOrderer's COMPACT_EVERY and
COMPACT_KEEP), into a fresh directory, then reopens it. It reports per save: CPU of the
whole process (LevelDB's compaction thread and the WAL's segment preparer included),
wall time (the fsync wait), and the p50/p99/max save latency; and the reopen time.
Systems run alternately within a round so both see the same machine. Prints JSON;
--save writes perf/results/raft-storage.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import plyvel

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.consensus import Entry, EntryKind, HardState, Membership, Snapshot, SnapshotMeta
from node.consensus.leveldb_storage import LevelDBStorage
from node.consensus.resident import ResidentStorage
from node.consensus.wal_storage import WalStorage

MEMBERS = Membership.of(["n1", "n2", "n3"])
COMPACT_EVERY = 1000
COMPACT_KEEP = 2000
# The node's ledger LevelDB options (node/ledger/kvstore.py), which the Raft log shared.
LEDGER_OPTIONS = {"write_buffer_size": 16 << 20, "max_file_size": 8 << 20}


def _open(system: str, folder: Path) -> tuple[ResidentStorage, Any]:
    if system == "wal":
        return WalStorage.initialize(folder / "raft", MEMBERS), None
    db = plyvel.DB(str(folder / "ledger"), create_if_missing=True, **LEDGER_OPTIONS)
    return LevelDBStorage.initialize(db.prefixed_db(b"raft/"), MEMBERS), db


def _reopen(system: str, folder: Path) -> float:
    """Seconds to open the storage again (replay), not counting closing it."""
    started = time.perf_counter()
    if system == "wal":
        storage = WalStorage(folder / "raft")
        took = time.perf_counter() - started
        storage.close()
        return took
    db = plyvel.DB(str(folder / "ledger"), **LEDGER_OPTIONS)
    LevelDBStorage(db.prefixed_db(b"raft/"))
    took = time.perf_counter() - started
    db.close()
    return took


def run_one(system: str, entries: int, entry_bytes: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"raft-storage-{system}-"))
    try:
        storage, db = _open(system, folder)
        payload = os.urandom(entry_bytes)
        latencies = []
        snapshot_index = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in range(1, entries + 1):
            started = time.perf_counter()
            storage.save(HardState(2, "n1", i - 1), [Entry(2, i, EntryKind.NORMAL, payload)], None)
            latencies.append(time.perf_counter() - started)
            index = i - 1 - COMPACT_KEEP
            if index - snapshot_index >= COMPACT_EVERY:
                storage.compact(Snapshot(SnapshotMeta(index, 2, MEMBERS)))
                snapshot_index = index
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        if isinstance(storage, WalStorage):
            storage.close()
        if db is not None:
            db.close()
        reopen = _reopen(system, folder)
        latencies.sort()
        return {
            "cpu_us_per_save": round(1e6 * cpu / entries, 1),
            "wall_us_per_save": round(1e6 * wall / entries, 1),
            "p50_ms": round(1e3 * latencies[len(latencies) // 2], 3),
            "p99_ms": round(1e3 * latencies[int(len(latencies) * 0.99)], 3),
            "max_ms": round(1e3 * latencies[-1], 3),
            "reopen_ms": round(1e3 * reopen, 1),
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=3000)
    parser.add_argument("--entry-kb", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, Any]]] = {"wal": [], "leveldb": []}
    for _ in range(args.rounds):
        for system in results:
            results[system].append(run_one(system, args.entries, args.entry_kb * 1024))
    medians = {
        system: {key: sorted(r[key] for r in rows)[len(rows) // 2] for key in rows[0]}
        for system, rows in results.items()
    }
    out = {
        "benchmark": "raft-storage",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python perf/raft/storage_bench.py " + " ".join(sys.argv[1:]),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "entries": args.entries,
        "entry_bytes": args.entry_kb * 1024,
        "rounds": results,
        "medians": medians,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.save:
        target = Path(__file__).resolve().parents[1] / "results" / "raft-storage.json"
        target.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
