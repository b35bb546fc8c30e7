"""Reading a process's /proc/<pid>/stat (Linux), in one place."""

from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def stat_fields(pid: int) -> list[str] | None:
    """The fields after the command name (the first is the state: R, S, Z, …), or None
    when the process is gone. The command name may hold spaces and parentheses."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def cpu_seconds(fields: list[str]) -> float:
    """User + system CPU seconds from `stat_fields`."""
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


def rss_bytes(fields: list[str]) -> int:
    """Resident set size from `stat_fields`."""
    return int(fields[21]) * PAGE_BYTES


def rss_parts_bytes(pid: int) -> dict[str, int]:
    """RssAnon (the process's own memory), RssFile (file pages it maps: LevelDB maps its
    table files, so these grow with the ledger pages read, and the kernel can take them
    back) and RssShmem from /proc/<pid>/status; {} when the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        if line.startswith("Rss"):
            name, _, value = line.partition(":")
            out[name] = int(value.split()[0]) * 1024
    return out
