"""Ordering through Raft (DESIGN §3.1 steps 3-4, §4): the trio shell around the pure core.

The leader cuts batches from the mempool and proposes each as one Raft entry
`Batch{txs, leader_time, proposer}`; it may propose the next before the previous is
applied (pipelining, bounded by `max_inflight_batches`). Every member applies committed
entries in order and derives the block when it applies a NORMAL entry; NOOP and CONFIG
entries make no block. The applied index is written in the block's own batch, so after a
crash committed-but-unapplied entries are applied again, never twice.

One loop owns the RawNode's Ready cycle: persist (synced when Raft says so), then send,
then hand the committed entries to the applier, then advance (STYLE 1); a leader's Ready
marked `async_save` is sent before its save instead (see node/consensus/rawnode.py).
The applier task executes them in order while the Ready loop goes on acknowledging and
replicating: executing a large block takes long enough that, done inside the Ready
cycle, followers stopped answering APPENDs, the leader took them for lost and sent the
same entries again (several times over, under load). At most `APPLY_QUEUE` Readies'
worth of committed entries wait for the applier; then the Ready loop waits too.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import structlog
import trio
from medledger.v1 import ledger_pb2

from node.clock import now_ms
from node.consensus import (
    ConfChangeRefused,
    Entry,
    EntryKind,
    Message,
    NotLeader,
    ProposalDropped,
    RawNode,
    Ready,
    Role,
)
from node.consensus.membership import decode_membership
from node.consensus.resident import ResidentStorage
from node.core import NodeCore
from node.mempool.mempool import PendingTx
from node.ops.metrics import Metrics
from node.ordering.cutter import BlockCutter
from node.ordering.reconfig import next_change

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("medledger.raft")

# Compact the Raft log once this many entries are applied beyond the last snapshot: the
# ledger itself is the state machine, so a snapshot carries no data of its own.
COMPACT_EVERY = 1000
COMPACT_KEEP = 2000
REFUSED_BACKOFF_S = 0.01  # after a refused or empty proposal, before looking again
# How long applying an entry waits for the signature pre-check of its transactions still
# under way (it finishes them itself after that).
PRECHECK_WAIT_S = 5.0
# At most this many bytes of entries pre-checked ahead of the applier: the work stays a
# fraction of what the parse and signature memos hold (node/tx.py), so what it verified
# is still there when the block executes; a follower catching up a long log verifies at
# apply time instead.
MAX_PRECHECK_BYTES = 2 * 1024 * 1024

# Readies' committed entries (each at most RaftConfig.max_committed_bytes_per_ready)
# queued for the applier before the Ready loop waits for it.
APPLY_QUEUE = 8

ROLE_NAMES = {
    Role.LEADER: "leader",
    Role.FOLLOWER: "follower",
    Role.CANDIDATE: "candidate",
    Role.PRE_CANDIDATE: "candidate",
}


class RaftOrderer:
    def __init__(
        self,
        core: NodeCore,
        cutter: BlockCutter,
        metrics: Metrics,
        raft: RawNode,
        storage: ResidentStorage,
        tick_s: float,
        send: Callable[[Sequence[Message]], None] = lambda messages: None,
        max_inflight_batches: int = 4,
    ) -> None:
        self.core = core
        self.cutter = cutter
        self.metrics = metrics
        self.raft = raft
        self.storage = storage
        self.tick_s = tick_s
        self.send = send
        self.max_inflight_batches = max_inflight_batches
        self.role = "follower"
        self.leader = ""
        self._proposed: dict[int, list[PendingTx]] = {}  # Raft index -> its batch (leader)
        # Where a block's time goes (medledger_block_stage_seconds, the block_committed
        # log): monotonic times of proposing (leader) and of learning the commit, by index.
        self._proposed_at: dict[int, float] = {}
        self._committed_at: dict[int, float] = {}
        # A follower verifies the signatures of an appended entry's transactions while the
        # entry waits for its commit (those that came by gossip are verified already); the
        # applier waits for the entry's pre-check instead of verifying them again.
        self._prechecks: dict[int, tuple[int, trio.Event]] = {}  # index -> (term, done)
        self._precheck_bytes = 0
        self._precheck_limiter = trio.CapacityLimiter(1)
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        self._ready_wake = trio.Event()
        self._applied_wake = trio.Event()
        self._cutting = trio.Lock()
        # Held while committed entries are applied; block sync takes it too when a
        # consenter catches up outside the log (Consenter._catch_up).
        self.apply_lock = trio.Lock()
        self._snapshot_index = storage.snapshot().meta.index
        # The newest Raft index whose effects are in the ledger (the applier's progress;
        # the core's own `applied` counts entries handed to the applier).
        self.applied = core.ledger.raft_applied()
        # Committed entries (or a snapshot index to catch up to) for the applier, in order.
        self._to_apply, self._apply_queue = trio.open_memory_channel[list[Entry] | int](APPLY_QUEUE)
        # Catches the ledger up (by block sync) to a snapshot the leader sent instead of
        # log entries it had compacted away.
        self.on_snapshot: Callable[[int], Awaitable[None]] | None = None
        # The consenter set in chain state; as leader, the Raft configuration is moved
        # towards it (node/ordering/reconfig.py). None: membership is never changed.
        self.desired_voters: Callable[[], frozenset[str]] | None = None

    # -- inputs ----------------------------------------------------------------------------

    def wake(self) -> None:
        """New transactions in the mempool (called on the trio thread)."""
        self._wake.set()

    def step(self, message: Message) -> None:
        """A Raft message from a peer (called on the trio thread by the transport)."""
        self.raft.step(message)
        self._ready_wake.set()

    # -- tasks -----------------------------------------------------------------------------

    async def run(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._ticker)
            nursery.start_soon(self._ready_loop)
            nursery.start_soon(self._applier)
            nursery.start_soon(self._proposer)
            if len(self.raft.status().membership.voters) == 1:
                # A group of one need not wait out an election timeout.
                self.raft.campaign()
                self._ready_wake.set()
            task_status.started()

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(self.tick_s)
            self.raft.tick()
            if self.role == "leader":
                self._reconcile()
            self._ready_wake.set()

    def _reconcile(self) -> None:
        """As leader: propose the next configuration change the chain state asks for."""
        if self.desired_voters is None:
            return
        status = self.raft.status()
        if self.applied < self.raft.config_index():
            return  # our chain state may predate the configuration in force
        change = next_change(
            self.desired_voters(), status.membership, self.raft.match_index, status.committed
        )
        if change is None:
            return
        try:
            index = self.raft.propose_conf_change(change)
        except (ConfChangeRefused, NotLeader, ProposalDropped) as exc:
            log.debug(
                "conf_change_deferred",
                change=change.type.value,
                node=change.node_id,
                reason=str(exc),
            )
            return
        log.info(
            "conf_change_proposed",
            change=change.type.value,
            node=change.node_id,
            raft_index=index,
            term=status.term,
        )

    async def _ready_loop(self) -> None:
        while True:
            await self._ready_wake.wait()
            self._ready_wake = trio.Event()
            while self.raft.has_ready():
                await self._handle(self.raft.ready())

    async def _handle(self, rd: Ready) -> None:
        if rd.entries and self.role != "leader":
            self._precheck(rd.entries)
        # Shielded: a Ready is persisted and sent as one step.
        with trio.CancelScope(shield=True):
            if rd.async_save and rd.messages:
                # A leader's entries may reach the followers while it writes them (Raft
                # thesis §10.2.1): it counts itself toward a commit only after advance().
                self.send(rd.messages)
            if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
                await trio.to_thread.run_sync(
                    self.storage.save,
                    rd.hard_state,
                    list(rd.entries),
                    rd.snapshot,
                    rd.must_sync,
                )
            if rd.messages and not rd.async_save:
                self.send(rd.messages)
            if rd.soft_state is not None:
                self._role_changed(
                    ROLE_NAMES.get(rd.soft_state.role, "follower"), rd.soft_state.leader or ""
                )
        # Not shielded: when the node stops, entries still queued are applied again
        # after its restart, from the applied index written with each block.
        if rd.snapshot is not None:
            await self._to_apply.send(rd.snapshot.index)
        if rd.committed_entries:
            committed_at = time.monotonic()
            for entry in rd.committed_entries:
                if entry.kind == EntryKind.NORMAL:
                    self._committed_at[entry.index] = committed_at
            await self._to_apply.send(list(rd.committed_entries))
        self.raft.advance(rd)
        status = self.raft.status()
        self.metrics.raft_term.set(status.term)
        self.metrics.raft_commit_index.set(status.committed)
        await self._maybe_compact(self.applied)

    async def _applier(self) -> None:
        """Executes committed entries in log order, apart from the Ready cycle."""
        async for item in self._apply_queue:
            # Shielded: an entry's block is written whole or not at all.
            with trio.CancelScope(shield=True):
                async with self.apply_lock:
                    if isinstance(item, int):
                        if self.on_snapshot is not None:
                            await self.on_snapshot(item)
                        # The log now starts at the snapshot: the blocks that caught the
                        # ledger up to it (written unsynced, decision 010) go to disk.
                        await trio.to_thread.run_sync(self.core.ledger.sync)
                        self.applied = max(self.applied, self.core.ledger.raft_applied())
                    else:
                        for entry in item:
                            await self._apply(entry)
                            self.applied = max(self.applied, entry.index)
            self._applied_wake.set()
            self._applied_wake = trio.Event()

    def _role_changed(self, role: str, leader: str) -> None:
        if role != self.role or leader != self.leader:
            log.info("raft_role", role=role, leader=leader, term=self.raft.status().term)
        was_leader = self.role == "leader"
        self.role, self.leader = role, leader
        self.metrics.set_role(role)
        if role == "leader" and not was_leader:
            self.wake()  # the proposer sleeps without a deadline while not leader
        if was_leader and role != "leader" and self._proposed:
            # Entries we proposed may never commit: their transactions go back to the
            # mempool (if one commits after all, execution marks the copy a duplicate).
            batches = list(self._proposed.values())
            self._proposed.clear()
            self._proposed_at.clear()
            for batch in batches:
                self.core.requeue(batch)
            self.wake()

    def _precheck(self, entries: Sequence[Entry]) -> None:
        nursery = self._nursery
        if nursery is None:
            return
        for entry in entries:
            if entry.kind != EntryKind.NORMAL:
                continue
            known = self._prechecks.get(entry.index)
            if known is not None and known[0] == entry.term:
                continue  # the same entry again
            if self._precheck_bytes + len(entry.data) > MAX_PRECHECK_BYTES:
                return
            done = trio.Event()
            # An entry of another term at this index replaced the one checked before.
            self._prechecks[entry.index] = (entry.term, done)
            self._precheck_bytes += len(entry.data)
            nursery.start_soon(self._precheck_entry, entry.data, done)

    async def _precheck_entry(self, data: bytes, done: trio.Event) -> None:
        try:
            await trio.to_thread.run_sync(self.core.precheck, data, limiter=self._precheck_limiter)
        except Exception as exc:  # an optimisation: execution checks everything again
            log.warning("precheck_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._precheck_bytes -= len(data)
            done.set()

    def _take_precheck(self, entry: Entry) -> trio.Event | None:
        """The pre-check of this very entry, if one was started; forgets it and any older
        ones (appended, then replaced by another leader's, or never applied here)."""
        known = self._prechecks.pop(entry.index, None)
        for stale in [i for i in self._prechecks if i < entry.index]:
            del self._prechecks[stale]
        return known[1] if known is not None and known[0] == entry.term else None

    async def _apply(self, entry: Entry) -> None:
        if entry.index <= self.core.ledger.raft_applied():
            # Its block is already in the ledger: it came by block sync while this node
            # could not follow the log (a consenter that was cut off or re-joins).
            self._take_precheck(entry)
            self._forget(entry.index)
            return
        if entry.kind == EntryKind.CONFIG:
            membership = decode_membership(entry.data)
            log.info(
                "raft_membership",
                voters=sorted(membership.voters),
                learners=sorted(membership.learners),
                raft_index=entry.index,
            )
        if entry.kind == EntryKind.NORMAL:
            batch = ledger_pb2.Batch.FromString(entry.data)
            started = time.monotonic()  # waiting for the pre-check counts as applying
            prechecked = self._take_precheck(entry)
            if prechecked is not None:
                with trio.move_on_after(PRECHECK_WAIT_S):
                    await prechecked.wait()
            write = await trio.to_thread.run_sync(
                self.core.apply_entry, batch, entry.term, entry.index, now_ms()
            )
            stages = self._stages(entry.index, batch, started, time.monotonic())
            self._forget(entry.index)
            log.info(
                "block_committed",
                height=write.height,
                txs=len(batch.txs),
                hash=write.block_hash.hex()[:16],
                raft_index=entry.index,
                **{f"{stage}_ms": round(seconds * 1000, 1) for stage, seconds in stages.items()},
            )
        else:
            await trio.to_thread.run_sync(self.core.record_applied, entry.index)

    def _forget(self, index: int) -> None:
        self._proposed.pop(index, None)
        self._proposed_at.pop(index, None)
        self._committed_at.pop(index, None)

    def _stages(
        self, index: int, batch: ledger_pb2.Batch, started: float, done: float
    ) -> dict[str, float]:
        """Seconds a block spent in each stage, observed into the stage histogram: `wait`
        (its oldest transaction in the leader's mempool until the cut) and `order` (the
        proposal until the commit) only where this node proposed it, `queue` (the commit
        until the applier took it) and `apply` (executing and writing it) everywhere."""
        stages: dict[str, float] = {}
        pending = self._proposed.get(index)
        proposed_at = self._proposed_at.get(index)
        committed_at = self._committed_at.get(index)
        if pending:
            oldest = min(tx.received_ms for tx in pending)
            stages["wait"] = max(0, batch.leader_time_ms - oldest) / 1000
        if proposed_at is not None and committed_at is not None:
            stages["order"] = committed_at - proposed_at
        if committed_at is not None:
            stages["queue"] = started - committed_at
        stages["apply"] = done - started
        observe = self.metrics.block_stage.labels
        for stage, seconds in stages.items():
            observe(stage).observe(seconds)
        self.metrics.block_latency.observe(done - started)
        return stages

    async def _maybe_compact(self, applied: int) -> None:
        # Keep the newest COMPACT_KEEP entries: a follower a little behind gets entries,
        # not a snapshot (which means a block sync).
        index = applied - COMPACT_KEEP
        if index - self._snapshot_index < COMPACT_EVERY:
            return
        snapshot = self.raft.make_snapshot(index, b"")
        # Blocks are written unsynced (decision 010): the entries compacted away must be
        # in the ledger on disk first, or a power loss would leave nothing to apply again.
        await trio.to_thread.run_sync(self.core.ledger.sync)
        await trio.to_thread.run_sync(self.storage.compact, snapshot)
        self._snapshot_index = index

    async def _proposer(self) -> None:
        while True:
            if self.role != "leader":
                deadline = None  # a follower's mempool waits for the leader, not a cut
            else:
                with self.core.lock:
                    oldest = self.core.mempool.oldest_received_ms()
                deadline = self.cutter.next_deadline_ms(oldest)
            if deadline is None:
                await self._wake.wait()
            else:
                with trio.move_on_after(max(0, deadline - now_ms()) / 1000):
                    await self._wake.wait()
            self._wake = trio.Event()
            while self.role == "leader" and self._due(now_ms()):
                if len(self._proposed) >= self.max_inflight_batches:
                    await self._applied_wake.wait()
                    continue
                if not self._propose_once():
                    # Nothing to take, or Raft refused (it stepped down, or a transfer is
                    # under way): give the Ready loop its turn to update `role`. Looping
                    # on without an await stalled the node (no ticks, no SIGTERM).
                    await trio.sleep(REFUSED_BACKOFF_S)
                    break

    def _due(self, now: int) -> bool:
        with self.core.lock:
            mp = self.core.mempool
            return self.cutter.should_cut(len(mp), mp.size_bytes, mp.oldest_received_ms(), now)

    def _propose_once(self) -> bool:
        c = self.cutter.config
        now = now_ms()
        batch = self.core.take_batch(now, c.max_block_txs, c.max_block_bytes)
        if not batch:
            return False
        data = ledger_pb2.Batch(
            txs=[tx.raw for tx in batch], leader_time_ms=now, proposer=self.core.name
        ).SerializeToString()
        try:
            index = self.raft.propose([data])
        except (NotLeader, ProposalDropped) as exc:
            self.core.requeue(batch)
            log.info("proposal_refused", reason=str(exc))
            return False
        self._proposed[index] = batch
        self._proposed_at[index] = time.monotonic()
        self._ready_wake.set()
        return True

    async def transfer_leader(self, target: str | None, timeout_s: float) -> dict[str, object]:
        """Hand leadership to `target` (default: the voter with the most of the log) and
        wait until it leads; for maintenance (restart the leader's machine without an
        election gap) and to place the leader. Proposals pause while it happens."""
        status = self.raft.status()
        if self.role != "leader":
            return {
                "ok": False,
                "error": f"{self.core.name} is not the leader; the leader is "
                f"{self.leader or 'unknown (an election is under way)'}: ask it",
                "leader": self.leader,
            }
        voters = sorted(status.membership.voters - {self.core.name})
        if target is None:
            match = self.raft.match_indexes()
            if not voters:
                return {"ok": False, "error": "there is no other voter to hand leadership to"}
            target = max(voters, key=lambda node: (match.get(node, 0), node))
        if target == self.core.name:
            return {"ok": True, "leader": target, "term": status.term, "moved": False}
        if target not in voters:
            return {
                "ok": False,
                "error": f"{target!r} is not a voter; voters: {', '.join(voters) or 'none'}",
            }
        try:
            self.raft.transfer_leader(target)
        except (NotLeader, ConfChangeRefused) as exc:
            return {"ok": False, "error": f"transfer refused: {exc}"}
        log.info("leader_transfer", to=target, term=status.term)
        self._ready_wake.set()
        failure = f"{target} did not take over within {timeout_s:g} s"
        with trio.move_on_after(timeout_s):
            while self.leader != target:
                await trio.sleep(self.tick_s)
                if self.role == "leader" and self.raft.transferring_to() != target:
                    failure = f"{target} did not take over within an election timeout"
                    break
                if self.role != "leader" and self.leader not in ("", target):
                    failure = f"{self.leader} was elected instead of {target}"
                    break
            else:
                return {
                    "ok": True,
                    "leader": target,
                    "term": self.raft.status().term,
                    "moved": True,
                }
        return {
            "ok": False,
            "error": f"{failure} (the leader is now {self.leader or 'unknown'})",
            "leader": self.leader,
        }

    async def drain(self, timeout_s: float = 30.0) -> None:
        """At shutdown: propose what is admitted and wait until our proposals applied."""
        with trio.move_on_after(timeout_s):
            while self.role == "leader":
                with self.core.lock:
                    pending = len(self.core.mempool)
                if pending and len(self._proposed) < self.max_inflight_batches:
                    if not self._propose_once():
                        await trio.sleep(REFUSED_BACKOFF_S)
                    continue
                if not pending and not self._proposed:
                    return
                await self._applied_wake.wait()
