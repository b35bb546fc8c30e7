"""One seeded simulation run: N Raft cores, a faulty network, crashes, pauses, leader
transfers, membership changes and snapshots, with safety checked after every step.

Time is counted in ticks. Every tick: due messages are delivered (each node steps
them), every running node ticks, a client proposes at the leader, and every node
handles its Ready (persist, send, apply, compact). In most seeds a leader's Ready with
`async_save` is handled as the thesis (§10.2.1) allows: sent and applied at once, its
write finishing 1-3 ticks later (a crash before then loses it); other Readys wait for
those writes and then save before sending. The run alternates chaos phases, in
which faults are injected, with calm phases, in which the network is healed, every
node runs, and liveness is required: a leader and a new commit within
LIVENESS_TICKS.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field

from node.consensus.config import CommitNotice, Mutation, RaftConfig
from node.consensus.entry import Entry, HardState
from node.consensus.errors import RaftError
from node.consensus.membership import ConfChange, ConfChangeType, Membership, decode_membership
from node.consensus.raft import Raft
from node.consensus.rawnode import RawNode
from node.consensus.role import Role
from node.consensus.sim.checker import SafetyChecker
from node.consensus.sim.disk import SimDisk
from node.consensus.sim.faults import FaultInjector
from node.consensus.sim.network import SimNetwork

ELECTION_TICK = 10
HEARTBEAT_TICK = 2
# Once the network is healed and every member runs, a leader must exist and a new
# entry must commit within this many ticks (10 election timeouts).
LIVENESS_TICKS = 10 * ELECTION_TICK
MIN_COMMITS = 50
MIN_LEADER_CHANGES = 1
MIN_FAULTS = 20


@dataclass
class SeedResult:
    seed: int
    nodes: int
    mutation: str | None
    steps: int = 0
    commits: int = 0
    leader_changes: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    snapshots: int = 0
    compactions: int = 0
    membership_changes: int = 0
    transfers: int = 0
    messages: int = 0
    reads: int = 0
    reads_served: int = 0
    background_writes: int = 0  # leader saves that finished after their Ready was sent
    network: Counter[str] = field(default_factory=Counter)  # dropped/duplicated/cut
    max_recovery_ticks: int = 0
    violations: list[str] = field(default_factory=list)
    failure: str | None = None  # why the seed failed, if it did

    def replay_command(self) -> str:
        cmd = f"python -m node.consensus.sim --seeds 1 --seed {self.seed} --nodes {self.nodes}"
        return cmd + (f" --mutation {self.mutation}" if self.mutation else "")


class SimMember:
    """One node: its disk and state machine survive crashes, its Raft core does not."""

    def __init__(self, node_id: str, disk: SimDisk) -> None:
        self.id = node_id
        self.disk = disk
        self.core: RawNode | None = None
        self.raft: Raft | None = None
        self.paused_until = 0
        self.crash_before_send = 0  # crash at the first Ready from this tick on, unsent
        self.queued_reads: list[bytes] = []  # client reads that arrived while paused
        self.removed = False
        self.last_commit = 0
        # Asynchronous writes not on the disk yet, in order: (due tick, hard state,
        # entries, sync). A crash loses them.
        self.writes: list[tuple[int, HardState | None, tuple[Entry, ...], bool]] = []
        # The state machine: durable on its own (MedLedger keeps it in the block store).
        self.applied = 0
        self.digest = b""


class Simulation:
    def __init__(
        self, seed: int, nodes: int = 3, mutation: str | None = None, steps: int = 400
    ) -> None:
        self.seed = seed
        self.n = nodes
        self.steps = steps
        self.rng = random.Random(seed)
        self.mutations = frozenset({Mutation(mutation)}) if mutation else frozenset()
        self.net = SimNetwork(self.rng)
        self.check = SafetyChecker()
        self.result = SeedResult(seed, nodes, mutation)
        self.now = 0
        self.next_id = nodes + 1
        # Per-seed variety in flow control and compaction, so that pipelining windows,
        # split APPENDs and snapshot installs all get exercised.
        # (One entry per message with one in flight is too slow to meet the liveness
        # bound after a leader piled up its 32 uncommitted entries; it is left out.)
        self.max_entries, self.max_inflight = self.rng.choice(
            ((1, 2), (1, 4), (1, 8), (2, 1), (2, 4), (4, 1), (4, 2), (16, 1), (16, 8), (64, 2))
        )
        self.compact_every = self.rng.choice((8, 16, 32, 64))
        # Three seeds in four write asynchronously at the leader; the rest as a plain
        # persist-send-apply loop (what RaftOrderer and the scripted tests do).
        self.async_writes = seed % 4 != 0
        # Seeds take turns at the three ways a leader tells followers of commits.
        self.commit_notice = (CommitNotice.LAZY, CommitNotice.EVERY, CommitNotice.SETTLED)[seed % 3]
        self.disk_rng = random.Random(f"disk/{seed}")
        self.members: dict[str, SimMember] = {}
        founders = [f"n{i}" for i in range(1, nodes + 1)]
        membership = Membership.of(founders)
        for node_id in founders:
            m = SimMember(node_id, SimDisk(SimDisk.bootstrap(membership).snapshot()))
            self.members[node_id] = m
            self._boot(m)
        self.faults = FaultInjector(self)
        self.committed_membership = membership
        self.pending_learner: str | None = None
        self.payload_seq = 0
        self.reads: dict[bytes, int] = {}  # read context -> commit index it must see
        self.checked_top = 0

    # ---- node lifecycle ----------------------------------------------------------------

    def _boot(self, m: SimMember) -> None:
        if m.applied > m.disk.last_index():
            self.check.fail(
                self.now,
                f"{m.id} applied {m.applied} but its log ends at "
                f"{m.disk.last_index()}: applied entries were lost",
            )
        cfg = RaftConfig(
            m.id,
            election_tick=ELECTION_TICK,
            heartbeat_tick=HEARTBEAT_TICK,
            max_entries_per_msg=self.max_entries,
            max_inflight=self.max_inflight,
            max_uncommitted_entries=32,
            commit_notice=self.commit_notice,
            applied=m.applied,
            mutations=self.mutations,
        )
        rng = random.Random(self.rng.random())
        m.core = RawNode(cfg, m.disk, rng)
        m.raft = m.core.raft
        m.last_commit = m.raft.log.committed

    def crash(self, m: SimMember) -> None:
        m.core = m.raft = None
        m.queued_reads = []
        m.writes = []
        m.disk.crash()

    def _finish_writes(self, m: SimMember, everything: bool) -> None:
        """Land the member's asynchronous writes that are due (or all of them)."""
        while m.writes and (everything or m.writes[0][0] <= self.now):
            _due, hard_state, entries, sync = m.writes.pop(0)
            m.disk.save(hard_state, entries, None, sync)
            if entries and m.core is not None:
                m.core.persisted(entries[-1].index, entries[-1].term)

    def restart(self, m: SimMember) -> None:
        if m.core is None and not m.removed:
            self._boot(m)

    def running(self) -> list[SimMember]:
        return [m for m in self.members.values() if m.core is not None]

    def leader(self) -> SimMember | None:
        best: SimMember | None = None
        for m in self.members.values():
            r = m.raft
            if (
                r is not None
                and r.role is Role.LEADER
                and m.paused_until <= self.now
                and (best is None or r.term > best.raft.term)  # type: ignore[union-attr]
            ):
                best = m
        return best

    # ---- the step loop -----------------------------------------------------------------

    def run(self) -> SeedResult:
        res = self.result
        check = self.check
        try:
            while self.now < self.steps or not self._enough():
                if self.now >= 3 * self.steps:
                    break
                self.step()
                if check.violations:
                    break
        except Exception as exc:
            check.fail(self.now, f"core raised {type(exc).__name__}: {exc}")
        res.steps = self.now
        res.network = Counter(self.net.stats)
        res.commits = check.normal_commits
        res.leader_changes = max(0, check.leader_elections - 1)
        res.violations = list(check.violations)
        if res.violations:
            res.failure = "violation"
        elif not self._enough():
            res.failure = (
                f"too little happened: {res.commits} commits, {res.leader_changes} leader "
                f"changes, {sum(res.faults.values())} faults"
            )
        return res

    def _enough(self) -> bool:
        r = self.result
        return (
            self.check.normal_commits >= MIN_COMMITS
            and self.check.leader_elections - 1 >= MIN_LEADER_CHANGES
            and sum(r.faults.values()) >= MIN_FAULTS
            and self.faults.calm
        )

    def step(self) -> None:
        self.now += 1
        now = self.now
        self.faults.on_tick()
        check = self.check
        members = self.members
        for resumed in members.values():
            if resumed.queued_reads and resumed.paused_until <= now:
                # A resumed process serves the requests that queued up during its pause
                # before it reads the network backlog (the stale-read hazard of leases).
                for ctx in resumed.queued_reads:
                    self._issue_read(resumed, ctx)
                resumed.queued_reads = []
        for msg in self.net.due(now):
            m = members.get(msg.to)
            if m is None or m.core is None or not self.net.connected(msg.sender, msg.to):
                continue
            if m.paused_until > now:
                self.net.defer(msg, m.paused_until)
                continue
            self.result.messages += 1
            m.core.step(msg)
            r = m.raft
            assert r is not None
            if r.role is Role.LEADER and check.leader_of_term.get(r.term) != m.id:
                check.on_leader(now, m.id, r.term, r.log)
                self.faults.on_new_leader(m)
        for m in members.values():
            if m.core is not None and m.paused_until <= now:
                m.core.tick()
                r = m.raft
                assert r is not None
                if r.role is Role.LEADER and check.leader_of_term.get(r.term) != m.id:
                    check.on_leader(now, m.id, r.term, r.log)
                    self.faults.on_new_leader(m)
        self._client()
        for m in list(members.values()):
            if m.core is not None and m.paused_until <= now:
                self._handle_ready(m)
        self._membership_driver()
        if check.max_committed != self.checked_top:
            self.checked_top = check.max_committed
            self._check_electable()

    def _check_electable(self) -> None:
        top = self.check.max_committed
        logs: dict[str, tuple[int, int, int | None]] = {}
        for m in self.members.values():
            if m.removed:
                continue
            disk = m.disk  # what the node would have after a crash and restart
            last = disk.last_index()
            t: int | None
            try:
                t = disk.term(top) if top <= last else None
            except RaftError:
                t = None
            logs[m.id] = (last, disk.term(last), t)
        self.check.electable_without(self.now, self.committed_membership.voters, logs)

    def _client(self) -> None:
        if self.rng.random() < 0.4:
            return
        if self.rng.random() < 0.3:
            self._read()
        lead = self.leader()
        if lead is None or lead.core is None:
            return
        batch = []
        for _ in range(self.rng.randrange(1, 4)):
            self.payload_seq += 1
            batch.append(f"{self.seed}:{self.payload_seq}".encode())
        # A transfer in progress or a leader stepping down: the client retries later.
        with contextlib.suppress(RaftError):
            lead.core.propose(batch)

    def _read(self) -> None:
        """A linearizable read at a random node (followers forward it to the leader),
        half of the time at a node that believes it leads: clients that still talk to
        a deposed leader are where stale reads come from."""
        running = self.running()
        leaders = [m for m in running if m.raft is not None and m.raft.role is Role.LEADER]
        if leaders and self.rng.random() < 0.5:
            running = leaders
        if not running:
            return
        m = self.rng.choice(running)
        self.payload_seq += 1
        ctx = b"read-%d" % self.payload_seq
        self.result.reads += 1
        self.reads[ctx] = self.check.max_committed  # the read starts now
        if m.paused_until > self.now:
            m.queued_reads.append(ctx)  # taken when the process resumes
        else:
            self._issue_read(m, ctx)

    def _issue_read(self, m: SimMember, ctx: bytes) -> None:
        if m.core is not None:
            with contextlib.suppress(RaftError):
                m.core.read_index(ctx)

    def _handle_ready(self, m: SimMember) -> None:
        core, raft, disk = m.core, m.raft, m.disk
        assert core is not None and raft is not None
        check, now = self.check, self.now
        self._finish_writes(m, everything=False)
        while core.has_ready():
            rd = core.ready()
            if rd.entries:
                check.on_persist(now, m.id, rd.entries, raft.log)
            in_background = self.async_writes and rd.async_save
            if in_background:
                due = now + self.disk_rng.randrange(1, 4)
                m.writes.append((due, rd.hard_state, rd.entries, rd.must_sync))
                self.result.background_writes += bool(rd.entries)
            else:
                self._finish_writes(m, everything=True)
                disk.save(rd.hard_state, rd.entries, rd.snapshot, rd.must_sync)
            if disk.has_unsynced() and self.rng.random() < 0.1:
                disk.writeback()
            committed = raft.log.committed
            if committed != m.last_commit:
                # Counted once persisted: after a restart the node applies up to it.
                check.on_commit(now, m.id, m.last_commit, committed, raft.log)
                m.last_commit = committed
                if raft.role is Role.LEADER and self.faults.crash_after_commit():
                    # The leader decided a commit and dies before telling anyone.
                    self.crash(m)
                    self.faults.crashed(m, "crash_after_commit")
                    return
            if m.crash_before_send and now >= m.crash_before_send:
                # Persisted but never sent: a new leader's no-op exists only on its disk.
                m.crash_before_send = 0
                self._finish_writes(m, everything=True)
                self.crash(m)
                self.faults.crashed(m, "crash_new_leader")
                return
            for msg in rd.messages:
                self.net.send(msg, now)
            for rs in rd.read_states:
                required = self.reads.pop(rs.context, None)
                if required is not None:
                    check.on_read(now, m.id, rs.index, required)
                    self.result.reads_served += 1
            if rd.snapshot is not None:
                snap = rd.snapshot
                check.on_snapshot(now, m.id, snap.index, snap.term)
                m.applied = snap.index
                m.digest = snap.data
                check.on_applied(now, m.id, m.applied, m.digest)
                self.result.snapshots += 1
            for e in rd.committed_entries:
                m.digest = hashlib.blake2b(
                    m.digest + bytes((e.kind,)) + e.data, digest_size=8
                ).digest()
                m.applied = e.index
                check.on_applied(now, m.id, e.index, m.digest)
            if in_background:
                core.advance_async(rd)
            else:
                core.advance(rd)
        if m.applied - disk.first_index() >= self.compact_every and m.applied == raft.log.applied:
            disk.compact(core.make_snapshot(m.applied, m.digest))
            self.result.compactions += 1

    # ---- membership changes ------------------------------------------------------------

    def _membership_driver(self) -> None:
        """Cycle: add a learner, catch it up, promote it, remove a voter; then again."""
        check = self.check
        if check.committed_configs:
            top = max(check.committed_configs)
            cm = decode_membership(check.committed[top].data)
            if cm != self.committed_membership:
                self.committed_membership = cm
                self.result.membership_changes += 1
                for m in self.members.values():
                    if m.id not in cm.members and m.id != self.pending_learner:
                        self._retire(m)
                if self.pending_learner in cm.members:
                    self.pending_learner = None
        if self.now % 7 or not self.faults.allow_membership_change():
            return
        lead = self.leader()
        if lead is None or lead.core is None or lead.raft is None:
            return
        r = lead.raft
        mem = r.membership
        change: ConfChange | None = None
        if self.pending_learner is not None and self.pending_learner not in mem.members:
            # Its ADD_LEARNER entry was lost with a leader change: give up on it.
            self._retire(self.members[self.pending_learner])
            self.pending_learner = None
        if mem.learners:
            learner = min(mem.learners)
            pr = r.progress.get(learner)
            if pr is not None and pr.match >= r.log.committed:
                change = ConfChange(ConfChangeType.PROMOTE_LEARNER, learner)
        elif len(mem.voters) > self.n:
            voters = sorted(mem.voters)
            change = ConfChange(ConfChangeType.REMOVE_NODE, self.rng.choice(voters))
        elif self.rng.random() < 0.3:
            new_id = f"n{self.next_id}"
            change = ConfChange(ConfChangeType.ADD_LEARNER, new_id)
        if change is None:
            return
        try:
            lead.core.propose_conf_change(change)
        except RaftError:
            return
        if change.type is ConfChangeType.ADD_LEARNER:
            self.next_id += 1
            joiner = SimMember(change.node_id, SimDisk())
            self.members[joiner.id] = joiner
            self.pending_learner = joiner.id
            self._boot(joiner)

    def _retire(self, m: SimMember) -> None:
        """A node whose removal is committed is shut down for good (as an operator would)."""
        if not m.removed:
            m.removed = True
            m.core = m.raft = None
            m.writes = []


def run_seed(seed: int, nodes: int = 3, mutation: str | None = None) -> SeedResult:
    return Simulation(seed, nodes, mutation).run()
