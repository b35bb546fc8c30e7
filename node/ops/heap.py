"""Where a running node's memory goes, for the admin socket's `heap` operation.

Always: resident set size (and its anonymous and file-backed parts), Python's allocated
blocks, the garbage collector's tracked and frozen objects. With tracing on (start the node with
PYTHONTRACEMALLOC=1, which costs CPU, so only while diagnosing) also the source lines
that hold the most Python memory.
"""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc
from typing import Any

from node import procstat


def heap_report(top: int) -> dict[str, Any]:
    fields = procstat.stat_fields(os.getpid())
    parts = procstat.rss_parts_bytes(os.getpid())
    report: dict[str, Any] = {
        "rss_mb": round(procstat.rss_bytes(fields) / 2**20, 1) if fields else None,
        # RSS = anonymous memory (the process's own) + mapped files (LevelDB's table
        # files: ledger pages read, which the kernel can take back) + shared memory.
        "rss_anon_mb": round(parts.get("RssAnon", 0) / 2**20, 1),
        "rss_file_mb": round(parts.get("RssFile", 0) / 2**20, 1),
        "python_blocks": sys.getallocatedblocks(),
        "gc_objects": len(gc.get_objects()),
        # Objects made before the node opened, frozen out of collections (node/gctune.py).
        "gc_frozen": gc.get_freeze_count(),
        "tracing": tracemalloc.is_tracing(),
    }
    if not tracemalloc.is_tracing():
        report["hint"] = "start the node with PYTHONTRACEMALLOC=1 to see source lines"
        return report
    current, peak = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    report["traced_mb"] = round(current / 2**20, 1)
    report["traced_peak_mb"] = round(peak / 2**20, 1)
    report["top"] = [
        {
            "where": f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}",
            "kb": round(stat.size / 1024, 1),
            "blocks": stat.count,
        }
        for stat in snapshot.statistics("lineno")[:top]
    ]
    return report
