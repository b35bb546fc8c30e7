"""Node costs seen from outside: CPU seconds and RSS of each node's process tree (the
daemon and its contract sandbox processes), sampled by psutil in a background thread,
and the size of each node's data folder."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints

from node import procstat
from perf.suite.consortium import NodeInfo

MB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    t: float  # time.monotonic()
    cpu_s: dict[str, float]  # cumulative user+system CPU of the node's process tree
    daemon_cpu_s: dict[str, float]  # of the daemon process alone (the rest: sandbox)
    rss_mb: dict[str, float]  # the daemon process
    tree_rss_mb: dict[str, float]  # the daemon with its sandbox processes
    # The daemon's anonymous memory (RssAnon): its heap, without file pages it maps.
    # LevelDB maps its table files, so RSS also counts the ledger pages the node has
    # read (page cache the kernel can take back); RssAnon is what the process holds.
    anon_mb: dict[str, float] = field(default_factory=dict)


@dataclass
class NodeProbe:
    node: NodeInfo
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
    _gone_cpu: float = 0.0  # CPU of tree members that exited, kept so totals never drop
    _last: dict[int, float] = field(default_factory=dict)

    def anon_mb(self) -> float:
        """The daemon's RssAnon in MB (0.0 when it is gone)."""
        return procstat.rss_parts_bytes(self.node.pid).get("RssAnon", 0) / MB

    def read(self) -> tuple[float, float, float, float]:
        """(cumulative tree CPU s, daemon CPU s, daemon RSS MB, tree RSS MB)."""
        last_daemon = self._last.get(self.node.pid, 0.0)
        try:
            root = psutil.Process(self.node.pid)
            members = [root, *root.children(recursive=True)]
        except psutil.Error:
            return self._gone_cpu + sum(self._last.values()), last_daemon, 0.0, 0.0
        cpu = daemon = rss = tree = 0.0
        alive: dict[int, float] = {}
        for proc in members:
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    mem = proc.memory_info().rss / MB
            except psutil.Error:
                continue
            used = times.user + times.system
            alive[proc.pid] = used
            cpu += used
            tree += mem
            if proc.pid == self.node.pid:
                rss, daemon = mem, used
        self._gone_cpu += sum(v for pid, v in self._last.items() if pid not in alive)
        self._last = alive
        return self._gone_cpu + cpu, daemon, rss, tree


class Monitor:
    """Samples every node every `interval_s` from start() to stop()."""

    def __init__(self, nodes: list[NodeInfo], interval_s: float) -> None:
        self.probes = [NodeProbe(n) for n in nodes]
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)

    def start(self) -> None:
        self.sample()
        self._thread.start()

    def sample(self) -> Sample:
        cpu, daemon, rss, tree, anon = {}, {}, {}, {}, {}
        with self._lock:
            for probe in self.probes:
                name = probe.node.name
                cpu[name], daemon[name], rss[name], tree[name] = probe.read()
                anon[name] = probe.anon_mb()
            sample = Sample(time.monotonic(), cpu, daemon, rss, tree, anon)
            self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def between(self, t0: float, t1: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if t0 <= s.t <= t1]


def ledger_bytes(data_dir: Path) -> int:
    """Bytes of a node's ledger (its LevelDB): not the Raft log, whose segments are
    zero-filled ahead of use and deleted after compaction, nor the vault."""
    return dir_bytes(data_dir / "ledger")


def dir_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            continue
    return total
