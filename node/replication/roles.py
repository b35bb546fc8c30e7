"""The two ways a node follows the chain (DESIGN §3.1):

- a consenter runs Raft: it orders (as leader) or follows the log, votes on every block
  hash and keeps the certificates, forwards what it admitted to the leader, and serves
  block sync;
- an observer (a hospital that is not a consenter, or the regulator) pulls certified
  blocks by block sync, re-executes them, forwards what it admitted to the leader, and
  serves block sync to others.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from node.consensus import Membership, RaftConfig, RawNode
from node.consensus.leveldb_storage import LevelDBStorage
from node.core import NodeCore
from node.crypto import keys
from node.genesis import Genesis
from node.ledger.kvstore import LevelDBKV
from node.net import PeerNetwork
from node.ops.metrics import Metrics
from node.ordering.certificates import ConsenterKeys, Diverged
from node.ordering.cutter import BlockCutter, CutterConfig
from node.ordering.raft_orderer import RaftOrderer
from node.replication.blocksync import BlockSyncer, BlockSyncServer
from node.replication.forwarder import Forwarder
from node.replication.raft_transport import RaftTransport
from node.replication.votes import CommitVoter

if TYPE_CHECKING:
    from trio_typing import TaskStatus


def consenter_keys(genesis: Genesis) -> ConsenterKeys:
    return ConsenterKeys({n.name: n.certificate for n in genesis.config.nodes if n.consenter})


def open_raft(
    store: LevelDBKV, genesis: Genesis, name: str, applied: int, seed: bytes
) -> tuple[RawNode, LevelDBStorage]:
    """The node's Raft member, on the ledger's own LevelDB under `raft/`."""
    db = store.prefixed(b"raft/")
    if store.is_empty(b"raft/"):
        voters = [n.name for n in genesis.config.nodes if n.consenter]
        storage = LevelDBStorage.initialize(db, Membership.of(voters))
    else:
        storage = LevelDBStorage(db)
    params = genesis.config.params
    config = RaftConfig(
        id=name,
        election_tick=max(2, params.election_ticks),
        heartbeat_tick=max(1, params.heartbeat_ticks),
        applied=applied,
    )
    # Election timeouts are randomised; the seed only needs to differ between nodes.
    return RawNode(config, storage, random.Random(seed)), storage


class Consenter:
    def __init__(
        self,
        core: NodeCore,
        genesis: Genesis,
        store: LevelDBKV,
        network: PeerNetwork,
        metrics: Metrics,
        node_key: keys.PrivateKey,
        on_diverged: Callable[[Diverged], None],
        seed: bytes,
    ) -> None:
        params = genesis.config.params
        raft, storage = open_raft(store, genesis, core.name, core.ledger.raft_applied(), seed)
        self.orderer = RaftOrderer(
            core,
            BlockCutter(
                CutterConfig(params.batch_timeout_ms, params.max_block_txs, params.max_block_bytes)
            ),
            metrics,
            raft,
            storage,
            tick_s=max(1, params.election_tick_ms) / 1000,
        )
        keys_ = consenter_keys(genesis)
        observers = [n.name for n in genesis.config.nodes if not n.consenter]
        self.transport = RaftTransport(network, self.orderer)
        self.forwarder = Forwarder(core, network, lambda: self.orderer.leader)
        self.voter = CommitVoter(core, network, node_key, keys_, observers, on_diverged)
        self.sync_server = BlockSyncServer(core, network, lambda: self.orderer.leader)
        self.syncer = BlockSyncer(core, network, keys_, [n for n in keys_.keys if n != core.name])
        self.orderer.on_snapshot = self.syncer.sync_until

    @property
    def role(self) -> str:
        return self.orderer.role

    @property
    def leader(self) -> str:
        return self.orderer.leader

    @property
    def term(self) -> int:
        return self.orderer.raft.status().term

    def wake(self) -> None:
        self.orderer.wake()

    async def run(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.voter.run)
            await nursery.start(self.orderer.run)
            await nursery.start(self.forwarder.run)
            task_status.started()

    async def drain(self) -> None:
        await self.orderer.drain()


class Observer:
    def __init__(self, core: NodeCore, genesis: Genesis, network: PeerNetwork) -> None:
        keys_ = consenter_keys(genesis)
        others = [n.name for n in genesis.config.nodes if n.name != core.name]
        # Consenters first: they hold certificates as soon as blocks form.
        sources = [n for n in others if n in keys_.keys] + [
            n for n in others if n not in keys_.keys
        ]
        self.syncer = BlockSyncer(core, network, keys_, sources, interval_s=0.5)
        self.forwarder = Forwarder(core, network, lambda: self.syncer.leader)
        self.sync_server = BlockSyncServer(core, network, lambda: self.syncer.leader)

    role = "observer"
    term = 0

    @property
    def leader(self) -> str:
        return self.syncer.leader

    def wake(self) -> None:
        pass  # forwarding runs on its own period

    async def run(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.syncer.run)
            await nursery.start(self.forwarder.run)
            task_status.started()

    async def drain(self) -> None:
        pass  # an observer orders nothing; what it admitted was forwarded
