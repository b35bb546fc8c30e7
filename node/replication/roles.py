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
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import trio

from node.consensus import HardState, Membership, RaftConfig, RawNode, Snapshot, SnapshotMeta
from node.consensus.leveldb_storage import LevelDBStorage
from node.consensus.wal_storage import SEGMENT_BYTES, WalStorage
from node.core import NodeCore
from node.crypto import keys
from node.execution.consenter_gov import genesis_consenters
from node.genesis import Genesis
from node.ledger.kvstore import LevelDBKV
from node.ledger.ledger import Ledger, decode_block
from node.net import RAFT, VOTE, PeerNetwork
from node.ops.metrics import Metrics
from node.ordering.certificates import ConsenterKeys, Diverged
from node.ordering.consenter_set import ConsenterHistory
from node.ordering.cutter import BlockCutter, CutterConfig
from node.ordering.raft_orderer import RaftOrderer
from node.replication.blocksync import BlockSyncer, BlockSyncServer
from node.replication.forwarder import Forwarder
from node.replication.raft_transport import RaftTransport
from node.replication.votes import CommitVoter

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("medledger.replication")

CATCH_UP_CHECK_S = 0.5
# Longer than an election takes in a healthy cluster (a few election timeouts).
LEADERLESS_SYNC_S = 2.0


def consenter_keys(genesis: Genesis, history: ConsenterHistory | None = None) -> ConsenterKeys:
    """Every genesis node's key; who counts at a height comes from `history` (chain
    state), or from the genesis `consenter` flags when it is not given."""
    if history is None:
        return ConsenterKeys({n.name: n.certificate for n in genesis.config.nodes if n.consenter})
    return ConsenterKeys({n.name: n.certificate for n in genesis.config.nodes}, history.at)


def open_raft(
    store: LevelDBKV,
    genesis: Genesis,
    ledger: Ledger,
    name: str,
    consenters: frozenset[str],
    seed: bytes,
    segment_bytes: int = SEGMENT_BYTES,
) -> tuple[RawNode, WalStorage]:
    """The node's Raft member, with its log in `raft/` beside the ledger's LevelDB.

    A founding consenter with an empty ledger starts from the genesis membership. A node
    that becomes a consenter later (or again) holds the ledger up to some block already:
    its log starts after that block's Raft entry, so nothing is applied twice and the
    leader sends only what follows. A node that kept its log in the ledger's LevelDB
    (under `raft/`, as earlier builds did) has it moved into the write-ahead log once."""
    # Blocks are written unsynced (decision 010), and a log started below may begin at
    # the ledger's newest block: what it starts after must be on disk first, or after a
    # power loss the ledger would be behind the log's start.
    ledger.sync()
    directory = store.path.parent / "raft"
    old = store.prefixed(b"raft/")
    tip_index, tip_term = _tip_raft_position(ledger)
    if WalStorage.exists(directory):
        storage = WalStorage(directory, segment_bytes=segment_bytes)
        if not store.is_empty(b"raft/"):
            LevelDBStorage.clear(old)  # a migration that stopped before this step
    elif not store.is_empty(b"raft/"):
        storage = WalStorage.migrate(directory, LevelDBStorage(old), segment_bytes)
        LevelDBStorage.clear(old)
        log.info("raft_log_migrated", node=name, last_index=storage.last_index())
    else:
        founding = ledger.tip.height == 0 and ledger.raft_applied() == 0
        if founding and name in genesis_consenters(genesis.config):
            storage = WalStorage.initialize(
                directory,
                Membership.of(genesis_consenters(genesis.config)),
                segment_bytes=segment_bytes,
            )
        else:
            storage = _join(
                directory, name, consenters, tip_index, tip_term, HardState(), segment_bytes
            )
    if storage.snapshot().index > ledger.raft_applied():
        # The log was compacted past what the ledger holds: the ledger was restored from
        # an older backup beside a newer log. The entries in between are gone from the
        # log; the log starts again at the ledger's newest block (the leader or block
        # sync sends what follows), in the configuration the log last knew.
        hard, known = storage.initial_state(), storage.last_membership()
        log.warning(
            "raft_log_ahead_of_ledger",
            node=name,
            raft_snapshot=storage.snapshot().index,
            raft_applied=ledger.raft_applied(),
        )
        storage.close()
        storage = _join(
            directory, name, consenters, tip_index, tip_term, hard, segment_bytes, known
        )
    elif storage.last_index() < tip_index:
        hard = storage.initial_state()
        storage.close()
        storage = _join(directory, name, consenters, tip_index, tip_term, hard, segment_bytes)
    params = genesis.config.params
    config = RaftConfig(
        id=name,
        election_tick=max(2, params.election_ticks),
        heartbeat_tick=max(1, params.heartbeat_ticks),
        applied=ledger.raft_applied(),
    )
    # Election timeouts are randomised; the seed only needs to differ between nodes.
    return RawNode(config, storage, random.Random(seed)), storage


def _tip_raft_position(ledger: Ledger) -> tuple[int, int]:
    """(Raft index, term) of the entry that made the ledger's newest block."""
    data = ledger.block_bytes(ledger.tip.height)
    if data is None or ledger.tip.height == 0:
        return 0, 0
    _, header = decode_block(data)
    return int(header.raft_index), int(header.raft_term)


def _join(
    directory: Path,
    name: str,
    consenters: frozenset[str],
    index: int,
    term: int,
    old: HardState,
    segment_bytes: int,
    known: Membership | None = None,
) -> WalStorage:
    # Unless the configuration is `known`, until the leader's configuration entries
    # arrive this node takes itself for a learner: it never campaigns on a guess. The
    # entries that follow `index` (the leader adds it as a learner after the governance
    # block) carry the real membership.
    voters = (consenters - {name}) or frozenset({name})
    guess = known or Membership(voters, frozenset({name}) - voters)
    new_term = max(term, old.term)
    hard = HardState(new_term, old.vote if old.term == new_term else None, index)
    log.info("raft_log_starts_at", node=name, raft_index=index, raft_term=term)
    return WalStorage.initialize_at(
        directory, Snapshot(SnapshotMeta(index, term, guess)), hard, segment_bytes
    )


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
        history: ConsenterHistory | None = None,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        params = genesis.config.params
        self.name = core.name
        self.history = history or ConsenterHistory.from_ledger(core.ledger, genesis)
        raft, storage = open_raft(
            store, genesis, core.ledger, core.name, self.history.current(), seed, segment_bytes
        )
        self.storage = storage
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
        self.orderer.desired_voters = self.history.current
        keys_ = consenter_keys(genesis, self.history)
        everyone = [n.name for n in genesis.config.nodes]
        self.transport = RaftTransport(network, self.orderer)
        self.forwarder = Forwarder(core, network, lambda: self.orderer.leader)
        self.voter = CommitVoter(
            core,
            network,
            node_key,
            keys_,
            lambda: [n for n in everyone if n not in self.history.current()],
            on_diverged,
            voters=lambda: sorted(self.history.current()),
        )
        self.sync_server = BlockSyncServer(core, network, lambda: self.orderer.leader)
        self.syncer = BlockSyncer(core, network, keys_, [n for n in everyone if n != core.name])
        self.orderer.on_snapshot = self.syncer.sync_until
        self.leaderless_s = 0.0

    @property
    def role(self) -> str:
        role = self.orderer.role
        if role == "follower" and self.name not in self.orderer.raft.status().membership.voters:
            return "learner"
        return role

    @property
    def leader(self) -> str:
        return self.orderer.leader

    @property
    def term(self) -> int:
        return self.orderer.raft.status().term

    def in_raft(self) -> bool:
        """This node is in the Raft configuration its log holds."""
        return self.name in self.orderer.raft.status().membership.members

    def wake(self) -> None:
        self.orderer.wake()

    async def run(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.voter.run)
            await nursery.start(self.orderer.run)
            await nursery.start(self.forwarder.run)
            nursery.start_soon(self._catch_up)
            task_status.started()

    async def _catch_up(self) -> None:
        """A consenter that hears no leader for a while may have been removed from the
        Raft configuration while it was down (no leader sends it the log any more): it
        pulls certified blocks instead, which also tells it whether chain state still
        counts it as a consenter."""
        while True:
            await trio.sleep(CATCH_UP_CHECK_S)
            if self.orderer.leader:
                self.leaderless_s = 0.0
                continue
            self.leaderless_s += CATCH_UP_CHECK_S
            if self.leaderless_s >= LEADERLESS_SYNC_S:
                async with self.orderer.apply_lock:
                    await self.syncer.sync_once()

    async def drain(self) -> None:
        await self.orderer.drain()

    async def transfer_leader(self, target: str | None, timeout_s: float) -> dict[str, object]:
        return await self.orderer.transfer_leader(target, timeout_s)

    def retire(self, network: PeerNetwork, core: NodeCore) -> None:
        """After its tasks stopped: stop taking Raft frames and votes, stop voting, and
        close the Raft log (the next consenter role opens it again)."""
        self.storage.close()
        network.handle(RAFT, _ignore)
        network.handle(VOTE, _ignore)
        if self.voter.committed_listener in core.commit_listeners:
            core.commit_listeners.remove(self.voter.committed_listener)


async def _ignore(_peer: str, _payload: bytes) -> bytes | None:
    return None


class Observer:
    def __init__(
        self,
        core: NodeCore,
        genesis: Genesis,
        network: PeerNetwork,
        history: ConsenterHistory | None = None,
        stop_before: Callable[[], bool] = lambda: False,
    ) -> None:
        """`stop_before()`: checked before each synced block; True once this node is to
        become a consenter, so that its Raft log starts right after the block that made
        it one (the Raft leader adds it after that block)."""
        history = history or ConsenterHistory.from_ledger(core.ledger, genesis)
        keys_ = consenter_keys(genesis, history)
        others = [n.name for n in genesis.config.nodes if n.name != core.name]
        self.syncer = BlockSyncer(
            core, network, keys_, others, interval_s=0.5, stop_before=stop_before
        )
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

    async def transfer_leader(self, target: str | None, timeout_s: float) -> dict[str, object]:
        return {
            "ok": False,
            "error": "this node is an observer, not a consenter; the leader is "
            f"{self.leader or 'unknown'}: ask it",
            "leader": self.leader,
        }
