"""RawNode: the application's handle on one Raft core, and the Ready it hands out.

The loop around it (a trio task in the node, a plain loop in the simulator) is:

    node.tick()                       # every tick interval
    node.step(message)                # for every message that arrives
    node.propose([...]) / ...         # at the leader
    if node.has_ready():
        rd = node.ready()
        storage.save(rd.hard_state, rd.entries, rd.snapshot, sync=rd.must_sync)  # 1. persist
        send(rd.messages)                                                     # 2. send
        restore(rd.snapshot); apply(rd.committed_entries)                     # 3. apply
        node.advance(rd)

Persisting before sending is what makes votes and acknowledgements mean something;
applying may happen after sending because committed entries are durable on a quorum.

A leader need not wait for its own disk (Raft thesis §10.2.1, etcd's asynchronous
storage writes). When `rd.async_save` is set (only at a leader whose term and vote are
already durable), the application may instead

        send(rd.messages); apply(rd.committed_entries)   # all durable here already
        node.advance_async(rd)                           # the save is still running
        ... in the background, in Ready order: storage.save(...); then, on the loop,
        node.persisted(rd.entries[-1].index, rd.entries[-1].term)

and take the next Ready before the save finishes. The leader counts itself toward a
commit only for entries reported persisted, so an entry is committed only once a
majority holds it durably; followers still persist before they acknowledge. Before
handling a Ready without `async_save`, wait for every save still running.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from node.consensus.config import Mutation, RaftConfig
from node.consensus.entry import Entry, HardState, Snapshot, SnapshotMeta
from node.consensus.errors import CompactedError
from node.consensus.membership import ConfChange, Membership
from node.consensus.messages import Message, ReadState, well_formed
from node.consensus.raft import Raft
from node.consensus.role import Role
from node.consensus.storage import Storage


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting (status, metrics); never persisted."""

    leader: str | None
    role: Role


@dataclass(frozen=True, slots=True)
class Ready:
    soft_state: SoftState | None  # None: unchanged since the last Ready
    hard_state: HardState | None  # None: unchanged; else save it
    entries: tuple[Entry, ...]  # save these (they may overwrite stored ones)
    snapshot: Snapshot | None  # save and restore this snapshot (from the leader)
    committed_entries: tuple[Entry, ...]  # apply these in order, after the snapshot
    messages: tuple[Message, ...]  # send these only after saving (unless async_save)
    read_states: tuple[ReadState, ...]  # linearizable reads that may proceed
    must_sync: bool  # whether the save must be durable before sending
    # A leader's Ready whose messages may leave, and whose committed entries (durable
    # here already) may be applied, while its save still runs: see advance_async.
    async_save: bool = False


@dataclass(frozen=True, slots=True)
class Status:
    id: str
    term: int
    role: Role
    leader: str | None
    committed: int
    applied: int
    last_index: int
    membership: Membership


class RawNode:
    def __init__(self, config: RaftConfig, storage: Storage, rng: random.Random) -> None:
        """Create or restart a member from `storage`. A founding member's storage comes
        from `MemoryStorage.bootstrap(...)` or `LevelDBStorage.initialize(...)`; a member
        that joins later starts empty and learns everything from the leader. Pass the
        application's durable applied index as `config.applied`."""
        self.raft = Raft(config, storage, rng)
        self._prev_hard = self.raft.hard_state()
        self._prev_soft = SoftState(self.raft.lead, self.raft.role)
        self._unsynced = Mutation.SEND_BEFORE_PERSIST in config.mutations

    # ---- inputs ------------------------------------------------------------------------

    def tick(self) -> None:
        self.raft.tick()

    def step(self, message: Message) -> bool:
        """Feed a message from a peer. Returns False (and changes nothing) for a message
        addressed to another node or one that is not well formed."""
        if message.to != self.raft.id or not well_formed(message):
            return False
        self.raft.step(message)
        return True

    def campaign(self) -> None:
        """Start an election now instead of waiting for the timeout."""
        self.raft.campaign()

    def propose(self, payloads: list[bytes]) -> int:
        """Append NORMAL entries at the leader; returns the last one's index. Raises
        NotLeader (with a hint) or ProposalDropped. Entries are sent at the next Ready,
        so proposals between two Ready calls travel in one batch."""
        return self.raft.propose(payloads)

    def propose_conf_change(self, change: ConfChange) -> int:
        """Append a configuration entry at the leader; returns its index. Raises
        NotLeader, ProposalDropped or ConfChangeRefused."""
        return self.raft.propose_conf_change(change)

    def transfer_leader(self, target: str) -> None:
        """At the leader: hand leadership to `target` (a voter) once its log is complete.
        Raises NotLeader or ConfChangeRefused."""
        self.raft.transfer_leader(target)

    def transferring_to(self) -> str | None:
        """At the leader: the member leadership is being handed to, until it takes over
        or the transfer is abandoned (after an election timeout)."""
        return self.raft.lead_transferee

    def match_indexes(self) -> dict[str, int]:
        """At the leader: the last index known replicated to each other member."""
        r = self.raft
        if r.role is not Role.LEADER:
            return {}
        return {node: pr.match for node, pr in r.progress.items() if node != r.id}

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read; see Raft.read_index. Raises NotLeader when no
        leader is known."""
        self.raft.read_index(context)

    def report_unreachable(self, node: str) -> None:
        """The transport failed to deliver to `node`: stop pipelining to it."""
        self.raft.report_unreachable(node)

    def report_snapshot(self, node: str, ok: bool) -> None:
        """The transport finished (ok) or gave up (not ok) sending a snapshot."""
        self.raft.report_snapshot(node, ok)

    # ---- outputs -----------------------------------------------------------------------

    def _async_ok(self) -> bool:
        """May this node's next Ready go out before its save? Only a leader's whose
        term and vote are durable already: then its messages depend on its log entries
        alone, which followers may hold before the leader does (thesis §10.2.1)."""
        r = self.raft
        prev = self._prev_hard
        return (
            r.role is Role.LEADER
            and r.term == prev.term
            and r.vote == prev.vote
            and r.log.unstable_snapshot is None
        )

    def _apply_limit(self) -> int:
        # An asynchronous Ready is applied before its own save: hand out only entries
        # durable here. Otherwise the save comes first and covers the rest.
        log = self.raft.log
        return log.stable_index() if self._async_ok() else log.committed

    def has_ready(self) -> bool:
        r = self.raft
        log = r.log
        return bool(
            r.msgs
            or r.pending_bcast
            or r.pending_commit
            or log.has_unsaved()
            or log.unstable_snapshot is not None
            or r.read_states
            or log.has_next_committed(self._apply_limit())
            or r.term != self._prev_hard.term
            or r.vote != self._prev_hard.vote
            or log.committed != self._prev_hard.commit
            or r.lead != self._prev_soft.leader
            or r.role is not self._prev_soft.role
        )

    def ready(self) -> Ready:
        """What to persist, send and apply now. Call `advance(rd)` before the next
        `ready()`: until then the same entries would be handed out again."""
        r = self.raft
        r.flush()
        log = r.log
        hard = r.hard_state()
        hard_changed = hard != self._prev_hard
        soft = SoftState(r.lead, r.role)
        async_ok = self._async_ok()
        entries = tuple(log.unsaved())
        # Only term, vote and entries need an fsync: a lost commit index is learned again.
        must_sync = (
            bool(entries)
            or log.unstable_snapshot is not None
            or (hard.term != self._prev_hard.term or hard.vote != self._prev_hard.vote)
        )
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard_changed else None,
            entries=entries,
            snapshot=log.unstable_snapshot,
            committed_entries=tuple(
                log.next_committed(r.cfg.max_committed_bytes_per_ready, self._apply_limit())
            ),
            messages=tuple(r.msgs),
            read_states=tuple(r.read_states),
            must_sync=must_sync and not self._unsynced,
            async_save=async_ok,
        )
        r.msgs = []
        r.read_states = []
        return rd

    def advance(self, rd: Ready) -> None:
        """The application saved, sent and applied everything in `rd`. Saves of earlier
        asynchronous Readys must be finished (and are taken as persisted)."""
        log = self.raft.log
        self._advance(rd)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.snapshot is not None:
            log.stable_snapshot_to(rd.snapshot.index)
            log.applied_to(rd.snapshot.index)
        self.raft.on_persisted()

    def advance_async(self, rd: Ready) -> None:
        """For a Ready with `async_save`: its messages are sent and its committed entries
        applied, but its save is still running. Report it with `persisted` when done;
        saves must finish in the order of their Readys."""
        if not rd.async_save:
            raise ValueError("this Ready must be saved before advance(rd)")
        self._advance(rd)
        if rd.entries:
            self.raft.log.saving_to(rd.entries[-1].index)

    def persisted(self, index: int, term: int) -> None:
        """The save of entries up to (index, term), from a Ready handled with
        `advance_async`, is durable. A report about entries overwritten since is
        ignored."""
        self.raft.log.stable_to(index, term)
        self.raft.on_persisted()

    def _advance(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.committed_entries:
            self.raft.log.applied_to(rd.committed_entries[-1].index)

    # ---- snapshots and status ----------------------------------------------------------

    def make_snapshot(self, index: int, data: bytes) -> Snapshot:
        """A snapshot of the state machine at applied `index`, with the membership and
        term Raft knows for it; the application then calls `storage.compact(snap)`."""
        r = self.raft
        if index > r.log.applied:
            raise ValueError(f"snapshot index {index} is beyond applied {r.log.applied}")
        term = r.log.term(index)
        if term is None:
            raise CompactedError(f"index {index} is already compacted")
        membership = r.configs.at(index)
        r.configs.compact_to(index)
        return Snapshot(SnapshotMeta(index, term, membership), data)

    def config_index(self) -> int:
        """Index of the configuration entry in force (the snapshot's index if none
        since); it may not be committed yet."""
        return self.raft.configs.last_index()

    def match_index(self, node: str) -> int | None:
        """At the leader: the highest index known to be replicated on `node` (None when
        this node does not lead or `node` is not a member)."""
        pr = self.raft.progress.get(node) if self.raft.role is Role.LEADER else None
        return None if pr is None else pr.match

    def status(self) -> Status:
        r = self.raft
        return Status(
            id=r.id,
            term=r.term,
            role=r.role,
            leader=r.lead,
            committed=r.log.committed,
            applied=r.log.applied,
            last_index=r.log.last_index(),
            membership=r.membership,
        )
