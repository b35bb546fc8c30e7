"""A scripted, synchronous in-memory network of Raft cores for scenario tests.

Unlike the randomized simulator (sim/run.py) nothing here happens by chance: the test
says which node ticks, which links are cut and when messages flow, and `stabilize()`
delivers messages until the network is quiet. Elections still use each core's seeded
randomized timeout, so tests that depend on who times out first tick nodes explicitly.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from node.consensus.config import RaftConfig
from node.consensus.entry import Entry, EntryKind
from node.consensus.membership import Membership
from node.consensus.messages import Message, MessageType, ReadState
from node.consensus.raft import Raft
from node.consensus.rawnode import RawNode
from node.consensus.role import Role
from node.consensus.storage import MemoryStorage


@dataclass
class ScriptedMember:
    id: str
    storage: MemoryStorage
    node: RawNode
    applied: list[Entry] = field(default_factory=list)  # NORMAL entries, in apply order
    applied_index: int = 0
    snapshot_data: bytes = b""
    read_states: list[ReadState] = field(default_factory=list)
    up: bool = True

    @property
    def raft(self) -> Raft:
        return self.node.raft

    def payloads(self) -> list[bytes]:
        return [e.data for e in self.applied]


class ScriptedNet:
    def __init__(
        self,
        ids: Iterable[str],
        *,
        learners: Iterable[str] = (),
        seed: int = 0,
        **config: object,
    ) -> None:
        ids = list(ids)
        learners = list(learners)
        self.seed = seed
        self.config = config
        self.membership = Membership.of(ids, learners)
        self.members: dict[str, ScriptedMember] = {}
        self.queue: deque[Message] = deque()
        self.cut: set[frozenset[str]] = set()
        # Return False to drop a message; tests use this to script losses.
        self.filter: Callable[[Message], bool] | None = None
        self.sent: list[Message] = []  # every message handed to the network
        # When set, stabilize() delivers queued messages in random order, and duplicates
        # some: the "unreliable network" of the scenario tests.
        self.reorder: random.Random | None = None
        self.duplicate = 0.0
        for node_id in [*ids, *learners]:
            self._start(node_id, MemoryStorage.bootstrap(self.membership), 0)

    def _make_config(self, node_id: str, applied: int) -> RaftConfig:
        cfg = RaftConfig(node_id, applied=applied)
        return replace(cfg, **self.config)  # type: ignore[arg-type]

    def _start(self, node_id: str, storage: MemoryStorage, applied: int) -> ScriptedMember:
        rng = random.Random(f"{self.seed}/{node_id}/{len(self.sent)}")
        node = RawNode(self._make_config(node_id, applied), storage, rng)
        old = self.members.get(node_id)
        member = ScriptedMember(node_id, storage, node, applied_index=applied)
        if old is not None:
            member.applied = [e for e in old.applied if e.index <= applied]
            member.snapshot_data = old.snapshot_data
        self.members[node_id] = member
        return member

    def __getitem__(self, node_id: str) -> ScriptedMember:
        return self.members[node_id]

    # ---- topology ----------------------------------------------------------------------

    def isolate(self, node_id: str) -> None:
        for other in self.members:
            if other != node_id:
                self.cut.add(frozenset((node_id, other)))

    def partition(self, *groups: Iterable[str]) -> None:
        sets = [set(g) for g in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1 :]:
                for x in a:
                    for y in b:
                        self.cut.add(frozenset((x, y)))

    def heal(self) -> None:
        self.cut.clear()

    def add_member(self, node_id: str) -> ScriptedMember:
        """A brand-new node with an empty log (to be added by a configuration change)."""
        return self._start(node_id, MemoryStorage(), 0)

    def crash(self, node_id: str) -> None:
        """Stop a node; MemoryStorage here is always in sync, so nothing saved is lost."""
        self.members[node_id].up = False

    def restart(self, node_id: str) -> ScriptedMember:
        old = self.members[node_id]
        return self._start(node_id, old.storage, old.applied_index)

    # ---- driving -----------------------------------------------------------------------

    def process(self, node_id: str) -> None:
        """Handle one node's Ready in the required order: persist, send, apply."""
        m = self.members.get(node_id)
        while m is not None and m.up and m.node.has_ready():
            rd = m.node.ready()
            m.storage.save(rd.hard_state, rd.entries, rd.snapshot, rd.must_sync)
            for msg in rd.messages:
                self.sent.append(msg)
                self.queue.append(msg)
            if rd.snapshot is not None:
                m.snapshot_data = rd.snapshot.data
                m.applied = []
                m.applied_index = rd.snapshot.index
            for e in rd.committed_entries:
                if e.kind is EntryKind.NORMAL:
                    m.applied.append(e)
                m.applied_index = e.index
            m.read_states.extend(rd.read_states)
            m.node.advance(rd)

    def deliver(self, msg: Message) -> None:
        dst = self.members.get(msg.to)
        if dst is None or not dst.up or frozenset((msg.sender, msg.to)) in self.cut:
            return
        if self.filter is not None and not self.filter(msg):
            return
        dst.node.step(msg)

    def stabilize(self, max_messages: int = 100_000) -> None:
        for node_id in self.members:
            self.process(node_id)
        n = 0
        while self.queue:
            rng = self.reorder
            if rng is not None and len(self.queue) > 1:
                self.queue.rotate(-rng.randrange(len(self.queue)))
            msg = self.queue.popleft()
            self.deliver(msg)
            if rng is not None and self.duplicate and rng.random() < self.duplicate:
                self.deliver(msg)
            self.process(msg.to)
            n += 1
            if n > max_messages:
                raise RuntimeError("network did not settle")

    def tick(self, node_ids: Iterable[str] | None = None, n: int = 1) -> None:
        ids = list(self.members) if node_ids is None else list(node_ids)
        for _ in range(n):
            for node_id in ids:
                if self.members[node_id].up:
                    self.members[node_id].node.tick()
            self.stabilize()

    def elect(self, node_id: str) -> None:
        self.members[node_id].node.campaign()
        self.stabilize()
        assert self.members[node_id].raft.role is Role.LEADER, f"{node_id} did not win"

    def propose(self, node_id: str, *payloads: bytes) -> int:
        index = self.members[node_id].node.propose(list(payloads))
        self.stabilize()
        return index

    # ---- queries -----------------------------------------------------------------------

    def leaders(self) -> list[str]:
        return [i for i, m in self.members.items() if m.up and m.raft.role is Role.LEADER]

    def leader(self) -> str | None:
        """The leader with the highest term among live nodes, if any."""
        best: ScriptedMember | None = None
        for m in self.members.values():
            if (
                m.up
                and m.raft.role is Role.LEADER
                and (best is None or m.raft.term > best.raft.term)
            ):
                best = m
        return best.id if best else None

    def assert_consistent(self) -> None:
        """Committed prefixes agree everywhere and applied payloads are prefixes of
        one another (the state machine safety property)."""
        nodes = list(self.members.values())
        for a in nodes:
            for b in nodes:
                la, lb = a.raft.log, b.raft.log
                top = min(la.committed, lb.committed)
                lo = max(la.first_index(), lb.first_index())
                for i in range(lo, top + 1):
                    assert la.term(i) == lb.term(i), f"{a.id} and {b.id} differ at {i}"
                pa, pb = a.payloads(), b.payloads()
                if not a.snapshot_data and not b.snapshot_data:
                    n = min(len(pa), len(pb))
                    assert pa[:n] == pb[:n], f"{a.id} and {b.id} applied different entries"

    def count(self, kind: MessageType) -> int:
        return sum(1 for m in self.sent if m.type is kind)
