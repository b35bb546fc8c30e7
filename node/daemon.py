"""`medledger node start`: one trio.run, one root nursery (DESIGN §3).

Start-up: load config and genesis, open and recover the ledger, load contracts, start the
orderer, then the gRPC API. Shutdown on SIGTERM/SIGINT: refuse new submissions, order
and commit everything already admitted, stop the API (waiting for its handler threads),
then close the ledger. Exit 0.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
import trio

from node.api import server as api_server
from node.api.gateway import Gateway
from node.chain import build_executor
from node.config import NodeConfig
from node.core import NodeCore
from node.execution.executor import BlockExecutor
from node.genesis import Genesis
from node.genesis import load as load_genesis
from node.ledger.kvstore import LevelDBKV
from node.ledger.ledger import Ledger, LedgerError
from node.mempool.mempool import Mempool, MempoolLimits
from node.ordering.cutter import BlockCutter, CutterConfig

if TYPE_CHECKING:
    # trio-typing (a libp2p dependency) installs trio-stubs, which mypy prefers to
    # trio's own inline types; its TaskStatus lives here.
    from trio_typing import TaskStatus

log = structlog.get_logger("medledger.node")


def now_ms() -> int:
    return int(time.time() * 1000)


class StartupError(Exception):
    pass


@dataclass
class Services:
    config: NodeConfig
    genesis: Genesis
    store: LevelDBKV
    ledger: Ledger
    core: NodeCore


def open_node(config: NodeConfig) -> Services:
    """Everything that can fail before any task starts; raises with a clear message."""
    genesis = load_genesis(config.resolve(config.node.genesis))
    genesis.node(config.node.name)  # must be a genesis node
    consenters = [n for n in genesis.config.nodes if n.consenter]
    if len(consenters) != 1:
        raise StartupError(
            f"this genesis block names {len(consenters)} consenters; this version of "
            "medledger orders with a single consenter (multi-node Raft ordering is not "
            "built yet)"
        )
    data_dir = config.resolve(config.node.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = LevelDBKV(data_dir / "ledger")
    try:
        ledger = Ledger(store, genesis)
        executor = build_executor(genesis, ledger)
        recover(ledger, executor)
        m = config.mempool
        mempool = Mempool(MempoolLimits(m.max_txs, m.max_bytes, m.institution_share))
        core = NodeCore(config.node.name, genesis, ledger, executor, executor.checker, mempool)
    except BaseException:
        store.close()
        raise
    return Services(config, genesis, store, ledger, core)


def recover(ledger: Ledger, executor: BlockExecutor) -> None:
    """Re-check the newest blocks' hashes; replay derived stores for blocks stored above
    the savepoint (none today, since one batch writes both; block sync will store first)."""
    pending = ledger.check_recent()
    for height in pending:
        data = ledger.block_bytes(height)
        if data is None:
            raise LedgerError(f"block {height} vanished during recovery")
        ledger.commit(executor.replay(data))
        log.info("block_replayed", height=height)


class Orderer:
    """Single-node ordering: cut batches from the mempool and apply them in order."""

    def __init__(self, core: NodeCore, cutter: BlockCutter) -> None:
        self.core = core
        self.cutter = cutter
        self._wake = trio.Event()
        # The run loop and the shutdown drain both cut; one block at a time.
        self._cutting = trio.Lock()

    def wake(self) -> None:
        self._wake.set()

    def _due(self, now: int) -> bool:
        with self.core.lock:
            mp = self.core.mempool
            return self.cutter.should_cut(len(mp), mp.size_bytes, mp.oldest_received_ms(), now)

    async def run(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            with self.core.lock:
                deadline = self.cutter.next_deadline_ms(self.core.mempool.oldest_received_ms())
            if deadline is None:
                await self._wake.wait()
            else:
                with trio.move_on_after(max(0, deadline - now_ms()) / 1000):
                    await self._wake.wait()
            self._wake = trio.Event()
            while self._due(now_ms()):
                await self.cut_once()

    async def cut_once(self) -> None:
        async with self._cutting:
            c = self.cutter.config
            now = now_ms()
            batch = self.core.take_batch(now, c.max_block_txs, c.max_block_bytes)
            if not batch:
                return
            # Shielded: a block half-way through execution is finished, never abandoned.
            with trio.CancelScope(shield=True):
                write = await trio.to_thread.run_sync(self.core.apply, batch, now)
        log.info(
            "block_committed", height=write.height, txs=len(batch), hash=write.block_hash.hex()[:16]
        )

    async def drain(self) -> None:
        """Commit everything admitted before shutdown."""
        while True:
            with self.core.lock:
                empty = len(self.core.mempool) == 0
            if empty:
                return
            await self.cut_once()


async def serve(
    services: Services,
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    config, core = services.config, services.core
    params = services.genesis.config.params
    cutter = BlockCutter(
        CutterConfig(params.batch_timeout_ms, params.max_block_txs, params.max_block_bytes)
    )
    orderer = Orderer(core, cutter)
    token = trio.lowlevel.current_trio_token()
    core.wake_orderer = lambda: token.run_sync_soon(orderer.wake)
    gateway = Gateway(
        core,
        config.api.wait_timeout_ms,
        role=lambda: ("leader", core.name, 1, []),
    )
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(orderer.run)
            api = await trio.to_thread.run_sync(
                api_server.start, gateway, config.api, config.resolve
            )
            try:
                log.info(
                    "node_started",
                    api=config.api.listen,
                    port=api.port,
                    height=core.ledger.tip.height,
                    chain_id=services.genesis.chain_id.hex()[:16],
                )
                task_status.started(api.port)
                async for signum in signals:
                    log.info("node_stopping", signal=signal.Signals(signum).name)
                    break
                core.close()
                with trio.CancelScope(shield=True):
                    await orderer.drain()
            finally:
                with trio.CancelScope(shield=True):
                    core.release_waiters()
                    await trio.to_thread.run_sync(api.stop)
                nursery.cancel_scope.cancel()
    log.info("node_stopped", height=core.ledger.tip.height)


def run(config: NodeConfig) -> None:
    services = open_node(config)
    try:
        trio.run(serve, services)
    except BaseExceptionGroup as group:
        # A failed service ends the node; report its cause, not trio's wrapping.
        raise _first_cause(group) from None
    finally:
        services.store.close()


def _first_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_cause(first) if isinstance(first, BaseExceptionGroup) else first
