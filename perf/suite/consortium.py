"""The consortium under test: started with `node.localnet.up` in a fresh folder, read
back from its files (API addresses, pid files, data dirs), and always stopped."""

from __future__ import annotations

import os
import re
import signal
import time
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # psutil ships no type hints

from node import localnet
from node.genesis import load as load_genesis
from node.ops.admin import call as admin_call
from node.ops.admin import socket_path
from node.sdk.client import Client, ClientError

VALID = 0


@dataclass(frozen=True)
class NodeInfo:
    name: str
    api: str
    pid: int
    data_dir: Path
    consenter: bool
    metrics: str = ""  # host:port of /metrics ("" when off)


class Consortium:
    def __init__(self, root: Path, hospitals: int, consenters: int) -> None:
        self.root = root
        self.hospitals = hospitals
        self.consenters = consenters
        self.nodes: list[NodeInfo] = []
        self._seen: dict[int, float] = {}  # pid -> create time

    def start(self) -> None:
        """Generate and start every node; on failure the caller still calls stop()."""
        localnet.up(self.root, self.hospitals, self.consenters, regulator=False)
        genesis = load_genesis(self.root / "genesis.block")
        consenting = {n.name for n in genesis.config.nodes if n.consenter}
        for config in sorted((self.root / "nodes").glob("*/config.toml")):
            data = tomllib.loads(config.read_text())
            name = config.parent.name
            pid = int((self.root / "run" / f"{name}.pid").read_text())
            data_dir = (config.parent / data["node"].get("data_dir", "data")).resolve()
            self.nodes.append(
                NodeInfo(
                    name,
                    data["api"]["listen"],
                    pid,
                    data_dir,
                    name in consenting,
                    data.get("metrics", {}).get("listen", ""),
                )
            )
        self.remember_pids()

    def remember_pids(self) -> None:
        """Note every process of every node (the sandbox zygote and workers are children),
        so that stop() can make sure none is left."""
        for node in self.nodes:
            try:
                proc = psutil.Process(node.pid)
                for p in [proc, *proc.children(recursive=True)]:
                    self._seen[p.pid] = p.create_time()
            except psutil.Error:
                continue

    def identity(self, node: NodeInfo, client: int) -> Path:
        """A doctor of the node's institution (doctor1 / doctor2 alternate)."""
        return self.root / "identities" / f"{node.name}-doctor{1 + client % 2}"

    def heights(self) -> dict[str, int]:
        out = {}
        for node in self.nodes:
            with Client(node.api, timeout_s=10) as client:
                out[node.name] = client.status().height
        return out

    def stalls(self) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
        """Each node's stalls so far (from /metrics): `disk_syncs` by store
        (`medledger_disk_sync_seconds`), `gc_pauses` by generation
        (`medledger_gc_pause_seconds`) and where blocks spent their time, `block_stages`
        by stage (`medledger_block_stage_seconds`: wait, order, queue, apply), each as
        count, seconds in total and how many took over 100 ms."""
        out: dict[str, dict[str, dict[str, dict[str, float]]]] = {
            "disk_syncs": {},
            "gc_pauses": {},
            "block_stages": {},
        }
        for node in self.nodes:
            if node.metrics:
                try:
                    with urllib.request.urlopen(f"http://{node.metrics}/metrics", timeout=5) as r:
                        page = r.read().decode()
                except OSError:
                    continue
                out["disk_syncs"][node.name] = histogram_totals(page, "disk_sync", "store")
                out["gc_pauses"][node.name] = histogram_totals(page, "gc_pause", "generation")
                out["block_stages"][node.name] = histogram_totals(page, "block_stage", "stage")
        return out

    def roles(self) -> dict[str, str]:
        """Each node's Raft role now (leader / follower / observer ...)."""
        out = {}
        for node in self.nodes:
            with Client(node.api, timeout_s=10) as client:
                out[node.name] = client.status().role
        return out

    def place_leader(self, name: str, timeout_s: float = 60) -> None:
        """Make consenter `name` the Raft leader (`medledger admin transfer-leader` at the
        current one). Where the leader runs moves the numbers (it admits every forwarded
        transaction and proposes every block), so runs to be compared should place it."""
        by_name = {node.name: node for node in self.nodes if node.consenter}
        if name not in by_name:
            raise SystemExit(f"--leader: {name!r} is not a consenter ({', '.join(by_name)})")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            leaders = [n for n, role in self.roles().items() if role == "leader"]
            if leaders == [name]:
                return
            if len(leaders) == 1:
                answer = admin_call(
                    socket_path(by_name[leaders[0]].data_dir),
                    {"op": "transfer_leader", "to": name, "timeout_s": 10},
                )
                if answer.get("ok"):
                    continue
            time.sleep(0.2)
        raise SystemExit(f"--leader: {name} did not become the leader within {timeout_s:g} s")

    def count_valid(
        self, node: NodeInfo, after: int, upto: int, marks: tuple[bytes, ...] = ()
    ) -> int:
        """Transactions with code VALID in blocks after..upto of one node; with `marks`,
        only those whose bytes hold one of them (a round's tag in its args), so that a
        backlog an earlier round left is not counted as this round's."""
        count = 0
        with Client(node.api, timeout_s=30) as client:
            for height in range(after + 1, upto + 1):
                info = client.block(height)
                for raw, result in zip(info.block.txs, info.results.results, strict=False):
                    if result.code == VALID and (not marks or any(m in raw for m in marks)):
                        count += 1
        return count

    def wait_height(self, node: NodeInfo, height: int, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        with Client(node.api, timeout_s=10) as client:
            while True:
                current = int(client.status().height)
                if current >= height or time.monotonic() > deadline:
                    return current
                time.sleep(0.1)

    def stop(self) -> dict[str, str]:
        """SIGTERM every node (localnet.down), then SIGKILL any process of theirs still
        alive. Safe to call when start() failed half-way."""
        result: dict[str, str] = {}
        self.remember_pids()
        if (self.root / "run").exists():
            try:
                result = localnet.down(self.root)
            except (OSError, ValueError) as exc:
                result = {"error": str(exc)}
        for pid, created in sorted(self._seen.items()):
            try:
                proc = psutil.Process(pid)
                # The same pid and start time: still ours, not a reused pid.
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    os.kill(pid, signal.SIGKILL)
                    result[f"pid {pid}"] = "killed (left over)"
            except (psutil.Error, ProcessLookupError):
                continue
        return result


def histogram_totals(text: str, name: str, label: str) -> dict[str, dict[str, float]]:
    """{label value: {count, seconds, over_100ms}} of the histogram
    `medledger_<name>_seconds{<label>=...}` on a Prometheus text page."""
    line = re.compile(
        rf'^medledger_{name}_seconds_(bucket|count|sum)\{{(?:le="([^"]+)",)?{label}="([^"]+)"'
        r'(?:,le="([^"]+)")?\} (\S+)$'
    )
    out: dict[str, dict[str, float]] = {}
    under: dict[str, float] = {}
    for text_line in text.splitlines():
        m = line.match(text_line)
        if not m:
            continue
        kind, le1, source, le2, value = m.groups()
        entry = out.setdefault(source, {"count": 0.0, "seconds": 0.0, "over_100ms": 0.0})
        if kind == "count":
            entry["count"] = float(value)
        elif kind == "sum":
            entry["seconds"] = float(value)
        elif (le1 or le2) == "0.1":
            under[source] = float(value)
    for source, entry in out.items():
        entry["over_100ms"] = entry["count"] - under.get(source, entry["count"])
    return out


def node_error(exc: BaseException) -> str:
    if isinstance(exc, ClientError | RuntimeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
