"""Prometheus metrics from the node's own registry, and a small trio HTTP server for
`/metrics` and `/healthz` on `metrics.listen`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("medledger.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    """Every metric the node exports; names carry the `medledger_` prefix."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.height = Gauge("medledger_height", "Height of the last committed block", registry=r)
        self.txs_committed = Counter(
            "medledger_txs_committed",
            "Transactions in committed blocks, by validation code",
            ["code"],
            registry=r,
        )
        self.admission_rejected = Counter(
            "medledger_admission_rejected",
            "Transactions refused at admission, by code",
            ["code"],
            registry=r,
        )
        self.mempool_size = Gauge("medledger_mempool_size", "Pending transactions", registry=r)
        self.raft_term = Gauge("medledger_raft_term", "Current Raft term", registry=r)
        self.raft_commit_index = Gauge(
            "medledger_raft_commit_index", "Raft commit index", registry=r
        )
        self.raft_role = Gauge(
            "medledger_raft_role", "1 for this node's current role", ["role"], registry=r
        )
        self.peers = Gauge("medledger_peers", "Connected consortium peers", registry=r)
        self.sandbox_workers = Gauge(
            "medledger_sandbox_workers", "Live contract sandbox workers", registry=r
        )
        self.gossip_drops = Counter("medledger_gossip_drops", "Gossip messages dropped", registry=r)
        self.block_latency = Histogram(
            "medledger_block_latency_seconds",
            "Applying a committed block: executing it and writing it to disk",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.block_stage = Histogram(
            "medledger_block_stage_seconds",
            "Where a block's time goes: wait (oldest tx in the leader's mempool until the "
            "cut) and order (proposal until commit) on the leader that proposed it; queue "
            "(commit until the applier takes it) and apply on every node",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tx_latency = Histogram(
            "medledger_tx_latency_seconds",
            "From admission to commit, per transaction",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        self.disk_sync = Histogram(
            "medledger_disk_sync_seconds",
            "Synced writes: the Raft log's fdatasync (store=raft), the ledger's synced "
            "write batch (store=ledger)",
            ["store"],
            buckets=SYNC_BUCKETS,
            registry=r,
        )

        self.gc_pause = Histogram(
            "medledger_gc_pause_seconds",
            "Collections of Python's cyclic garbage collector (every thread waits), by "
            "generation (2 = full)",
            ["generation"],
            buckets=SYNC_BUCKETS,
            registry=r,
        )

    def observe_disk_sync(self, store: str, seconds: float) -> None:
        self.disk_sync.labels(store).observe(seconds)

    def observe_gc_pause(self, generation: str, seconds: float) -> None:
        self.gc_pause.labels(generation).observe(seconds)

    def set_role(self, role: str) -> None:
        for name in ("leader", "follower", "candidate", "learner", "observer"):
            self.raft_role.labels(name).set(1 if name == role else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve_http(
    listen: str,
    metrics: Metrics,
    healthy: Callable[[], tuple[bool, str]],
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """GET /metrics (Prometheus text format) and GET /healthz (200 ok / 503 reason)."""
    host, _, port = listen.rpartition(":")
    listeners = await trio.open_tcp_listeners(int(port), host=host or "127.0.0.1")
    bound = listeners[0].socket.getsockname()[1]

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.fail_after(5):
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 8192:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    request += chunk
                line = request.split(b"\r\n", 1)[0].decode("latin-1").split()
                path = line[1] if len(line) >= 2 else ""
                if line[:1] != ["GET"]:
                    status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
                elif path == "/metrics":
                    status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, metrics.render()
                elif path == "/healthz":
                    ok, reason = healthy()
                    status = "200 OK" if ok else "503 Service Unavailable"
                    ctype, body = "text/plain", (reason + "\n").encode()
                else:
                    status, ctype, body = "404 Not Found", "text/plain", b"/metrics, /healthz\n"
                head = (
                    f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                await stream.send_all(head.encode() + body)
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    log.info("metrics_listening", listen=listen, port=bound)
    task_status.started(bound)
    await trio.serve_listeners(handle, listeners)
