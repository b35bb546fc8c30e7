"""`medledger node start`: one trio.run, one root nursery (DESIGN §3).

Start-up: load config and genesis, open and recover the ledger, load contracts, start the
orderer, then the gRPC API. Shutdown on SIGTERM/SIGINT: refuse new submissions, order
and commit everything already admitted, stop the API (waiting for its handler threads),
then close the ledger. Exit 0.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import trio
from cryptography.hazmat.primitives.asymmetric import ed25519
from medledger.v1 import p2p_pb2

from node import gctune, logs
from node.api import server as api_server
from node.api.gateway import Gateway
from node.chain import build_executor, sandbox_engine
from node.clock import now_ms
from node.codes import TxCode
from node.config import NodeConfig
from node.core import NodeCore
from node.crypto import keys
from node.execution.executor import BlockExecutor
from node.execution.sandbox import SandboxEngine, Zygote
from node.faults import GatedNetwork
from node.genesis import Genesis
from node.genesis import load as load_genesis
from node.gossip import BLOCKS as GOSSIP_BLOCKS
from node.gossip import TXS as GOSSIP_TXS
from node.gossip import Gossip, LatestOnly
from node.ledger.kvstore import LevelDBKV, StoreError
from node.ledger.ledger import BlockWrite, Ledger, LedgerError
from node.libp2p_network import Libp2pNetwork, Peer
from node.mempool.mempool import Mempool, MempoolLimits
from node.net import MemoryNetwork, PeerNetwork
from node.ops import backup as backup_mod
from node.ops.admin import serve_admin
from node.ops.admin import socket_path as admin_socket_path
from node.ops.heap import heap_report
from node.ops.metrics import Metrics, serve_http
from node.ops.systemd import Notifier
from node.records.vault import Vault
from node.replication.role_switch import RoleSwitch
from node.stalls import GC_PAUSES, SYNCS
from node.vault_service import VaultService

if TYPE_CHECKING:
    # trio-typing (a libp2p dependency) installs trio-stubs, which mypy prefers to
    # trio's own inline types; its TaskStatus lives here.
    from trio_typing import TaskStatus

log = structlog.get_logger("medledger.node")

# The longest a transfer_leader request waits for the new leader (well within the admin
# socket's own 300 s limit, so that the answer always arrives).
MAX_TRANSFER_WAIT_S = 120

GOSSIP_BATCH = 100
# Ids of transactions this node gossiped, to send each once: newer than any still
# pending unless more than this many are admitted within a transaction TTL.
GOSSIP_SENT_MEMORY = 20_000
# Block announcements by gossip are hints for observers (consenters send each certified
# block's announcement to observers directly as well): at most one, the newest, per
# interval, instead of one per block from every consenter.
ANNOUNCE_GOSSIP_INTERVAL_S = 0.25


class StartupError(Exception):
    pass


@dataclass
class Services:
    config: NodeConfig
    genesis: Genesis
    store: LevelDBKV
    ledger: Ledger
    core: NodeCore
    engines: list[SandboxEngine]

    def close(self) -> None:
        for engine in self.engines:
            engine.close()
        try:
            self.ledger.sync()  # blocks are written unsynced (decision 010)
        except StoreError as exc:
            log.warning("ledger_sync_failed", error=str(exc))
        self.store.close()


def open_node(config: NodeConfig, zygote: Zygote) -> Services:
    """Everything that can fail before any task starts; raises with a clear message.
    `zygote` is the contract sandbox's parent process, started before any thread."""
    genesis = load_genesis(config.resolve(config.node.genesis))
    genesis.node(config.node.name)  # must be a genesis node
    data_dir = config.resolve(config.node.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = LevelDBKV(data_dir / "ledger", memtable_mb=config.storage.ledger_memtable_mb)
    engines: list[SandboxEngine] = []
    try:
        ledger = Ledger(store, genesis)
        block_engine = sandbox_engine(zygote, genesis, ledger)
        query_engine = sandbox_engine(zygote, genesis, ledger)
        engines.extend([block_engine, query_engine])
        executor = build_executor(genesis, ledger, block_engine, query_engine)
        recover(ledger, executor)
        m = config.mempool
        mempool = Mempool(MempoolLimits(m.max_txs, m.max_bytes, m.institution_share))
        core = NodeCore(config.node.name, genesis, ledger, executor, executor.checker, mempool)
    except BaseException:
        for engine in engines:
            engine.close()
        store.close()
        raise
    return Services(config, genesis, store, ledger, core, engines)


def recover(ledger: Ledger, executor: BlockExecutor) -> None:
    """Re-check the newest blocks' hashes; replay derived stores for blocks stored above
    the savepoint (none today, since one batch writes both; block sync will store first)."""
    pending = ledger.check_recent()
    for height in pending:
        data = ledger.block_bytes(height)
        if data is None:
            raise LedgerError(f"block {height} vanished during recovery")
        write = executor.replay(data)
        ledger.commit(write)
        executor.activate(write)
        log.info("block_replayed", height=height)


async def serve_api(
    gateway: Gateway,
    services: Services,
    vault: VaultService | None = None,
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The gRPC server as a task: it serves from `started` until cancelled, then answers
    every waiter and stops, waiting for its handler threads (before the ledger closes)."""
    config = services.config
    api = await trio.to_thread.run_sync(
        api_server.start, gateway, config.api, config.resolve, vault
    )
    try:
        task_status.started(api.port)
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            services.core.release_waiters()
            await trio.to_thread.run_sync(api.stop)


async def watchdog(notifier: Notifier, status: Callable[[], str]) -> None:
    """WATCHDOG=1 from the event loop itself: a stuck loop stops the pings."""
    interval = notifier.watchdog_interval_s
    while True:
        if interval is not None:
            notifier.watchdog()
        notifier.status(status())
        await trio.sleep(interval if interval is not None else 5.0)


class Node:
    """The running node: its services under one root nursery."""

    def __init__(
        self,
        services: Services,
        network: PeerNetwork,
        notifier: Notifier | None = None,
    ) -> None:
        self.services = services
        self.core = services.core
        self.gate: GatedNetwork | None = None
        if services.config.testing.fault_injection:
            log.warning("fault_injection_enabled", note="test-only; never in production")
            network = self.gate = GatedNetwork(network)
        self.network = network
        self.notifier = notifier or Notifier()
        self.metrics = Metrics()
        self.halted: Exception | None = None
        self.gossip: Gossip | None = None
        self._gossip_limiter = trio.CapacityLimiter(1)
        self._root: trio.CancelScope | None = None
        self._stop = trio.Event()
        genesis, config = services.genesis, services.config
        # Consenter or observer as chain state says, switching at run time (issue 3).
        self.replication = RoleSwitch(
            self.core,
            genesis,
            services.store,
            network,
            self.metrics,
            lambda: keys.load_private(config.resolve(config.node.key)),
            self.halt,
            config.storage.raft_segment_mb * 1024 * 1024,
        )
        self.core.commit_listeners.append(self._observe_commit)
        data_dir = config.resolve(config.node.data_dir)
        self.vault = VaultService(self.core, Vault.in_data_dir(data_dir), network, now_ms)

    async def on_gossip(self, topic: str, peer: str, data: bytes) -> None:
        if topic == GOSSIP_TXS:
            # Admission verifies signatures: off the thread that runs Raft, one batch at
            # a time (a profile of the 3-consenter leader had 13 % of it here).
            await trio.to_thread.run_sync(self._admit_gossip, data, limiter=self._gossip_limiter)
        else:
            announce = p2p_pb2.BlockAnnounce.FromString(data)
            self.replication.announced(announce.height)

    def _admit_gossip(self, data: bytes) -> None:
        now = now_ms()
        for raw in p2p_pb2.TxForward.FromString(data).txs:
            self.core.submit(raw, now, local=False)  # duplicates are refused, cheaply

    async def _gossip_txs(self) -> None:
        """Spread what this node admitted in batches of 100+ (or every half second)."""
        sent: dict[bytes, None] = {}
        waited = 0.0
        while self.gossip is not None:
            await trio.sleep(0.1)
            waited += 0.1
            fresh = self.core.fresh_local(2000, sent)
            if not fresh or (len(fresh) < GOSSIP_BATCH and waited < 0.5):
                continue
            waited = 0.0
            for tx_id, _ in fresh:
                sent[tx_id] = None
            while len(sent) > GOSSIP_SENT_MEMORY:
                sent.pop(next(iter(sent)))
            payload = p2p_pb2.TxForward(txs=[r for _, r in fresh]).SerializeToString()
            if not await self.gossip.publish(GOSSIP_TXS, payload):
                self.metrics.gossip_drops.inc()

    async def _sample_metrics(self) -> None:
        while True:
            self.metrics.peers.set(len(self.network.peers()))
            self.metrics.sandbox_workers.set(
                sum(e.worker_pid is not None for e in self.services.engines)
            )
            self.metrics.mempool_size.set(len(self.core.mempool))
            self.metrics.set_role(self.role)
            gctune.drain()
            await trio.sleep(1.0)

    def stop(self) -> None:
        """Stop as on SIGTERM (trio thread)."""
        self._stop.set()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("node_stopping", signal=signal.Signals(signum).name)
                self._stop.set()
                return

    def halt(self, reason: Exception) -> None:
        """Stop serving at once: this node's state can no longer be trusted."""
        log.error("node_halted", reason=str(reason), kind=type(reason).__name__, alert=True)
        self.halted = reason
        self.core.close()
        if self._root is not None:
            self._root.cancel()

    def _observe_commit(self, write: BlockWrite, latencies: list[float]) -> None:
        m = self.metrics
        m.height.set(write.height)
        for code in write.codes:
            m.txs_committed.labels(TxCode(code).name).inc()
        for latency in latencies:
            m.tx_latency.observe(latency)
        m.mempool_size.set(len(self.core.mempool))

    @property
    def role(self) -> str:
        return self.replication.role

    def status_line(self) -> str:
        return f"height {self.core.ledger.tip.height}, role {self.role}"

    def healthy(self) -> tuple[bool, str]:
        if self.core.closing:
            return False, "stopping"
        return True, f"ok: {self.status_line()}"

    async def admin(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "status":
            tip = self.core.ledger.tip
            return {
                "ok": True,
                "node": self.core.name,
                "height": tip.height,
                "last_block_hash": tip.hash.hex(),
                "role": self.role,
            }
        if op == "log_level":
            level = str(request.get("level", ""))
            if level not in ("debug", "info", "warning", "error"):
                return {"ok": False, "error": "level must be debug, info, warning or error"}
            logs.set_level(level)
            log.info("log_level_changed", level=level)
            return {"ok": True, "level": level}
        if op == "backup":
            dest = Path(str(request.get("dest", "")))
            if not dest.is_absolute():
                return {"ok": False, "error": "dest must be an absolute path"}
            manifest = await trio.to_thread.run_sync(backup_mod.backup, self.services.store, dest)
            log.info("backup_written", dest=str(dest), height=manifest["height"])
            return {"ok": True, **manifest}
        if op == "heap":
            top = request.get("top", 25)
            if not isinstance(top, int) or not 1 <= top <= 500:
                return {"ok": False, "error": "top must be an integer from 1 to 500"}
            return {"ok": True, **await trio.to_thread.run_sync(heap_report, top)}
        if op == "transfer_leader":
            target = request.get("to")
            timeout_s = request.get("timeout_s", 10)
            if target is not None and (not isinstance(target, str) or not target):
                return {"ok": False, "error": "to must be a node name"}
            if (
                isinstance(timeout_s, bool)
                or not isinstance(timeout_s, int | float)
                or not 0 < timeout_s <= MAX_TRANSFER_WAIT_S
            ):
                return {
                    "ok": False,
                    "error": f"timeout_s must be a number over 0 and at most {MAX_TRANSFER_WAIT_S}",
                }
            return {
                "node": self.core.name,
                **await self.replication.transfer_leader(target, float(timeout_s)),
            }
        if op in ("gate", "diverge"):
            return self._fault(op, request)
        return {
            "ok": False,
            "error": f"unknown op {op!r}; ops: status, log_level, backup, heap, transfer_leader",
        }

    def _fault(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        if self.gate is None:
            return {"ok": False, "error": "fault injection is off (testing.fault_injection)"}
        if op == "gate":
            blocked = request.get("block", [])
            if not isinstance(blocked, list) or not all(isinstance(p, str) for p in blocked):
                return {"ok": False, "error": "block must be a list of node names"}
            self.gate.blocked = set(blocked)
            log.warning("fault_gate", blocked=sorted(self.gate.blocked))
            return {"ok": True, "blocked": sorted(self.gate.blocked)}
        height = self.core.ledger.tip.height + 1
        self.core.executor.diverge_from_height = height
        log.warning("fault_diverge", from_height=height)
        return {"ok": True, "from_height": height}

    async def run(
        self,
        task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
        handle_signals: bool = True,
    ) -> None:
        services, core = self.services, self.core
        config = services.config
        token = trio.lowlevel.current_trio_token()
        self.vault.token = token
        core.wake_orderer = lambda: token.run_sync_soon(self.replication.wake)
        gateway = Gateway(
            core,
            config.api.wait_timeout_ms,
            unsigned_events=config.api.unsigned_events,
            role=lambda: (
                self.replication.role,
                self.replication.leader,
                self.replication.term,
                sorted(self.network.peers()),
            ),
        )
        self.metrics.height.set(core.ledger.tip.height)
        self.metrics.set_role(self.role)
        # Synced writes and collections of this process feed this node's histograms.
        with (
            SYNCS.observed(self.metrics.observe_disk_sync),
            GC_PAUSES.observed(self.metrics.observe_gc_pause),
        ):
            async with trio.open_nursery() as nursery:
                self._root = nursery.cancel_scope
                if handle_signals:
                    nursery.start_soon(self._signals)
                await nursery.start(self.replication.run)
                nursery.start_soon(self.vault.run)
                port = await nursery.start(serve_api, gateway, services, self.vault)
                if config.metrics.listen:
                    await nursery.start(
                        serve_http, config.metrics.listen, self.metrics, self.healthy
                    )
                data_dir = config.resolve(config.node.data_dir)
                await nursery.start(serve_admin, admin_socket_path(data_dir), self.admin)
                log.info(
                    "node_started",
                    api=config.api.listen,
                    port=port,
                    height=core.ledger.tip.height,
                    chain_id=services.genesis.chain_id.hex()[:16],
                    gossip_txs=config.p2p.gossip_txs,
                )
                self.notifier.ready(self.status_line())
                nursery.start_soon(watchdog, self.notifier, self.status_line)
                nursery.start_soon(self._sample_metrics)
                if self.gossip is not None:
                    gossip = self.gossip
                    if config.p2p.gossip_txs:
                        nursery.start_soon(self._gossip_txs)
                    announcer = LatestOnly(ANNOUNCE_GOSSIP_INTERVAL_S)
                    nursery.start_soon(announcer.run, partial(gossip.publish, GOSSIP_BLOCKS))
                    self.replication.announce_with(announcer.offer)
                task_status.started(port)
                await self._stop.wait()
                self.notifier.stopping()
                core.close()
                with trio.CancelScope(shield=True):
                    await self.replication.drain()
                nursery.cancel_scope.cancel()
        if self.halted is not None:
            raise self.halted
        log.info("node_stopped", height=core.ledger.tip.height)


async def serve(
    services: Services,
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    genesis, config = services.genesis, services.config
    name = config.node.name
    if len(genesis.config.nodes) == 1:
        # A consortium of one talks to nobody: an in-process network with no peers.
        await Node(services, MemoryNetwork().endpoint(name)).run(task_status=task_status)
        return
    network = open_network(services)
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        node = Node(services, network)
        gossip = Gossip(network, node.on_gossip)
        await nursery.start(gossip.run)
        node.gossip = gossip
        await node.run(task_status=task_status)
        nursery.cancel_scope.cancel()


def open_network(services: Services) -> Libp2pNetwork:
    config, genesis = services.config, services.genesis
    key = keys.load_private(config.resolve(config.p2p.key))
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise StartupError(f"p2p.key {config.p2p.key} must be an Ed25519 key")
    peers = {
        n.name: Peer(n.name, n.peer_id, n.p2p_address) for n in genesis.config.nodes if n.peer_id
    }
    mine = peers.get(config.node.name)
    network = Libp2pNetwork(config.node.name, key, config.p2p.listen, peers, config.p2p.psk)
    if config.testing.p2p_capture:
        network.tap = capture_to(config.resolve(config.testing.p2p_capture))
    if mine is None or mine.peer_id != network.peer_id:
        raise StartupError(
            f"p2p.key of {config.node.name} does not match the peer id in the genesis block"
        )
    return network


def capture_to(path: Path) -> Callable[[str, str, bytes], None]:
    """The testing.p2p_capture tap: every outgoing payload, length-prefixed, appended."""
    log.warning("p2p_capture_enabled", path=str(path), note="test-only; never in production")
    path.parent.mkdir(parents=True, exist_ok=True)
    capture = path.open("ab")

    def tap(peer: str, protocol: str, payload: bytes) -> None:
        head = f"{peer} {protocol} {len(payload)}\n".encode()
        capture.write(head + payload + b"\n")
        capture.flush()

    return tap


def run(config: NodeConfig, zygote: Zygote) -> None:
    services = open_node(config, zygote)
    frozen = gctune.tune()
    log.info("gc_tuned", frozen_objects=frozen, thresholds=list(gctune.THRESHOLDS))
    try:
        trio.run(serve, services)
    except BaseExceptionGroup as group:
        # A failed service ends the node; report its cause, not trio's wrapping.
        raise _first_cause(group) from None
    finally:
        services.close()


def _first_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_cause(first) if isinstance(first, BaseExceptionGroup) else first
