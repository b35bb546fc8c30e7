"""The node's replication role, switched when chain state says so (DESIGN §3.1, §4).

A node is a consenter when the consenter set in chain state names it
(node/ordering/consenter_set.py), at start and at run time:

- an observer that syncs the block which adds it stops syncing right after that block
  and becomes a consenter: its Raft log starts at that block's entry, and the leader
  adds it as a learner, then promotes it once it caught up (status role `learner`, then
  `follower`);
- a consenter that chain state no longer names goes back to observing once the Raft
  configuration dropped it (or once it has heard no leader for a while: the leader does
  not talk to a removed member) and keeps serving block sync and its API.

The switch cancels the old role's tasks and starts the new one's; the network handlers
are re-registered by the new role's services.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog
import trio

from node.consensus.wal_storage import SEGMENT_BYTES
from node.core import NodeCore
from node.crypto import keys
from node.genesis import Genesis
from node.ledger.kvstore import LevelDBKV
from node.net import PeerNetwork
from node.ops.metrics import Metrics
from node.ordering.certificates import Diverged
from node.ordering.consenter_set import ConsenterHistory
from node.replication.roles import LEADERLESS_SYNC_S, Consenter, Observer

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("medledger.replication")

CHECK_S = 0.2


class RoleSwitch:
    def __init__(
        self,
        core: NodeCore,
        genesis: Genesis,
        store: LevelDBKV,
        network: PeerNetwork,
        metrics: Metrics,
        node_key: Callable[[], keys.PrivateKey],
        on_diverged: Callable[[Diverged], None],
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.core = core
        self.segment_bytes = segment_bytes
        self.genesis = genesis
        self.store = store
        self.network = network
        self.metrics = metrics
        self.node_key = node_key
        self.on_diverged = on_diverged
        self.history = ConsenterHistory.from_ledger(core.ledger, genesis)
        core.commit_listeners.insert(0, self.history.observe)
        # How a consenter also tells gossip that a block is certified (set by the node).
        self._announce: Callable[[bytes], None] | None = None
        self.switches = 0
        self.current: Consenter | Observer = self._make(self.named())

    def named(self) -> bool:
        """Chain state counts this node among the consenters."""
        return self.core.name in self.history.current()

    def _make(self, consenter: bool) -> Consenter | Observer:
        if consenter:
            return Consenter(
                self.core,
                self.genesis,
                self.store,
                self.network,
                self.metrics,
                self.node_key(),
                self.on_diverged,
                os.urandom(16),
                self.history,
                self.segment_bytes,
            )
        return Observer(self.core, self.genesis, self.network, self.history, self.named)

    # -- what the node and its API see ------------------------------------------------------

    @property
    def role(self) -> str:
        return self.current.role

    @property
    def leader(self) -> str:
        return self.current.leader

    @property
    def term(self) -> int:
        return self.current.term

    def wake(self) -> None:
        self.current.wake()

    def announced(self, height: int) -> None:
        """A block announcement from gossip."""
        if isinstance(self.current, Observer):
            self.current.syncer.announced(height)

    async def drain(self) -> None:
        await self.current.drain()

    async def transfer_leader(self, target: str | None, timeout_s: float) -> dict[str, object]:
        return await self.current.transfer_leader(target, timeout_s)

    def announce_with(self, announce: Callable[[bytes], None]) -> None:
        """Certified blocks are also announced with `announce` (gossip), by any role that
        certifies them, now and after a switch."""
        self._announce = announce
        if isinstance(self.current, Consenter):
            self.current.voter.announce = announce

    # -- switching --------------------------------------------------------------------------

    def due(self) -> bool:
        """Whether the role must change now."""
        role = self.current
        if isinstance(role, Observer):
            return self.named()
        if self.named():
            return False
        return not role.in_raft() or role.leaderless_s >= LEADERLESS_SYNC_S

    async def run(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._run(task_status)
        finally:
            # Every task of the role has ended here: the Raft log is closed in one piece.
            if isinstance(self.current, Consenter):
                self.current.storage.close()

    async def _run(self, task_status: TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            first = True
            while True:
                role = self.current
                stopped = trio.Event()
                scope = await nursery.start(_run_role, role, stopped)
                if isinstance(role, Consenter) and self._announce is not None:
                    role.voter.announce = self._announce
                if first:
                    task_status.started()
                    first = False
                while not self.due():
                    await trio.sleep(CHECK_S)
                scope.cancel()
                await stopped.wait()
                if isinstance(role, Consenter):
                    role.retire(self.network, self.core)
                self.current = self._make(isinstance(role, Observer))
                self.switches += 1
                log.info(
                    "replication_role_switched",
                    node=self.core.name,
                    became="consenter" if isinstance(self.current, Consenter) else "observer",
                    height=self.core.ledger.tip.height,
                    raft_applied=self.core.ledger.raft_applied(),
                )


async def _run_role(
    role: Consenter | Observer,
    stopped: trio.Event,
    task_status: TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Runs `role` until its scope (handed back once the role serves) is cancelled;
    `stopped` is set when every task of the role has ended (an apply in a worker thread
    is waited for)."""
    try:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(role.run)
                task_status.started(scope)
    finally:
        stopped.set()
