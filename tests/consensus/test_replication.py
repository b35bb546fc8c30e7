"""Scripted replication scenarios, after the MIT 6.5840 Raft lab tests and Raft Figure 8."""

from __future__ import annotations

import contextlib
import random

from node.consensus import CommitNotice, Entry, Message, MessageType, Mutation, RaftError, Role
from node.consensus.sim.scripted import ScriptedNet

THREE = ["n1", "n2", "n3"]
FIVE = ["n1", "n2", "n3", "n4", "n5"]


def tick_until_leader(net: ScriptedNet, limit: int = 200) -> str:
    for _ in range(limit):
        net.tick()
        lead = net.leader()
        if lead is not None:
            return lead
    raise AssertionError("no leader elected")


def committed_everywhere(net: ScriptedNet, index: int) -> bool:
    return all(m.raft.log.committed >= index for m in net.members.values() if m.up)


def test_basic_agreement() -> None:
    net = ScriptedNet(THREE, seed=1)
    net.elect("n1")
    for i in range(10):
        index = net.propose("n1", b"cmd%d" % i)
        net.tick(n=1)
        assert committed_everywhere(net, index)
    for m in net.members.values():
        assert m.payloads() == [b"cmd%d" % i for i in range(10)]


def test_no_commit_without_majority() -> None:
    net = ScriptedNet(FIVE, seed=2)
    net.elect("n1")
    for i in ("n3", "n4", "n5"):
        net.crash(i)
    index = net.propose("n1", b"lonely")
    net.tick(["n1", "n2"], n=5)
    assert net["n1"].raft.log.committed < index
    assert net["n1"].payloads() == []
    for i in ("n3", "n4", "n5"):
        net.restart(i)
    net.tick(n=3)
    assert committed_everywhere(net, index)
    net.assert_consistent()


def test_stale_leader_rejoins() -> None:
    net = ScriptedNet(THREE, seed=3)
    net.elect("n1")
    net.propose("n1", b"a")
    net.isolate("n1")
    for i in range(3):  # accepted by the cut-off leader, never committed
        net["n1"].node.propose([b"lost%d" % i])
    net.stabilize()
    net.tick(["n2", "n3"], n=25)
    lead = net.leader()
    assert lead in ("n2", "n3")
    net.propose(lead, b"b")
    net.isolate(lead)
    net.heal()
    net.isolate(lead)  # the new leader is now cut off; the old one comes back
    others = [i for i in THREE if i != lead]
    for _ in range(100):
        net.tick(others)
        if any(net[i].raft.role is Role.LEADER for i in others):
            break
    net.heal()
    net.tick(n=20)
    lead = net.leader()
    assert lead is not None
    net.propose(lead, b"c")
    net.tick(n=2)
    net.assert_consistent()
    for m in net.members.values():
        assert m.payloads() == [b"a", b"b", b"c"]


def test_backup_with_fifty_uncommitted_entries_on_each_side() -> None:
    net = ScriptedNet(FIVE, seed=4, max_entries_per_msg=64)
    net.elect("n1")
    net.propose("n1", b"start")
    # Leader and one follower cut off: 50 entries that never commit.
    net.partition(["n1", "n2"], ["n3", "n4", "n5"])
    for i in range(50):
        net["n1"].node.propose([b"x%d" % i])
    net.stabilize()
    net.tick(["n3", "n4", "n5"], n=40)
    lead = net.leader()
    assert lead in ("n3", "n4", "n5")
    for i in range(50):
        net.propose(lead, b"y%d" % i)
    # The new leader and one follower are cut off in turn: 50 more uncommitted.
    other = next(i for i in ("n3", "n4", "n5") if i != lead)
    rest = [i for i in FIVE if i not in (lead, other)]
    net.heal()
    net.partition([lead, other], rest)
    for i in range(50):
        net[lead].node.propose([b"z%d" % i])
    net.stabilize()
    net.tick(rest, n=40)
    lead2 = net.leader()
    assert lead2 in rest
    for i in range(50):
        net.propose(lead2, b"w%d" % i)
    net.heal()
    before = len(net.sent)
    net.tick(n=10)
    lead3 = net.leader()
    assert lead3 is not None
    net.propose(lead3, b"end")
    net.tick(n=2)
    net.assert_consistent()
    payloads = net[lead3].payloads()
    assert payloads[-1] == b"end"
    assert not any(p.startswith((b"x", b"z")) for p in payloads)
    # Fast back-off: a rejection skips a whole term, not one entry.
    rejects = sum(1 for m in net.sent[before:] if m.type is MessageType.APPEND_RESP and m.reject)
    assert rejects <= 10


def campaign_until_leader(net: ScriptedNet, node_id: str) -> None:
    """Campaign again after losing a term in which the voters had already voted."""
    for _ in range(3):
        net[node_id].node.campaign()
        net.stabilize()
        if net[node_id].raft.role is Role.LEADER:
            return
    raise AssertionError(f"{node_id} did not win")


def figure8_history(mutations: frozenset[Mutation]) -> ScriptedNet:
    """Raft paper Figure 8, step by step (5 nodes, entries sent one per message)."""
    net = ScriptedNet(
        ["s1", "s2", "s3", "s4", "s5"],
        seed=5,
        max_entries_per_msg=1,
        pre_vote=False,
        check_quorum=False,
        mutations=mutations,
    )
    net.elect("s1")  # term 1; no-op at index 1 everywhere
    # (a) s1 replicates index 2 only to s2.
    net.partition(["s1", "s2"], ["s3", "s4", "s5"])
    net.propose("s1", b"from-term-1")
    # (b) s1 crashes; s5 wins term 2 with s3, s4 but its no-op stays on its disk.
    net.crash("s1")
    net.heal()
    net.filter = lambda m: not (m.sender == "s5" and m.type is MessageType.APPEND)
    net.elect("s5")
    net.crash("s5")

    # (c) s1 restarts and wins term 3; index 2 reaches s3, its term-3 no-op does not.
    def no_noop_once_index2_is_there(m: Message) -> bool:
        if m.type is MessageType.APPEND and any(e.index >= 3 for e in m.entries):
            return net[m.to].raft.log.last_index() < 2
        return True

    net.filter = no_noop_once_index2_is_there
    net.restart("s1")
    net["s1"].node.campaign()  # term 2: s3 and s4 already voted for s5 there
    net.stabilize()
    net["s1"].node.campaign()  # term 3
    net.stabilize()
    assert net["s1"].raft.role is Role.LEADER
    assert net["s1"].raft.term == 3
    return net


def test_figure8_prior_term_entry_is_not_committed_by_counting() -> None:
    net = figure8_history(frozenset())
    assert [net[i].raft.log.term(2) for i in ("s1", "s2", "s3")] == [1, 1, 1]  # a majority...
    assert net["s1"].raft.log.committed == 1  # ...and still not committed
    # (d) s1 crashes; s5 may now win and overwrite index 2: allowed, it was never
    # committed. Then everything converges on s5's log.
    net.crash("s1")
    net.filter = None
    net.restart("s5")
    campaign_until_leader(net, "s5")
    net.restart("s1")
    net.tick(n=3)
    net.assert_consistent()
    assert all(m.raft.log.term(2) == 2 for m in net.members.values())


def test_figure8_mutation_loses_a_committed_entry() -> None:
    net = figure8_history(frozenset({Mutation.COMMIT_PRIOR_TERM_BY_COUNTING}))
    assert net["s1"].raft.log.committed == 2  # the broken rule commits index 2 (term 1)
    net.crash("s1")
    net.filter = None
    net.restart("s5")
    campaign_until_leader(net, "s5")
    assert net["s5"].raft.log.term(2) == 2  # the "committed" entry is gone


def run_figure8_churn(seed: int, unreliable: bool) -> None:
    """6.5840's Figure 8 tests: leaders crash at random moments while proposing."""
    net = ScriptedNet(FIVE, seed=seed)
    rng = random.Random(seed)
    if unreliable:
        net.reorder = rng
        net.duplicate = 0.05
        net.filter = lambda m: rng.random() > 0.1
    up = set(FIVE)
    for i in range(300):
        lead = net.leader()
        if lead is not None:
            with contextlib.suppress(RaftError):  # a transfer or a step-down: skip
                net[lead].node.propose([b"%d" % i])
        net.tick(n=rng.randrange(1, 8))
        lead = net.leader()
        if lead is not None and rng.random() < 0.5:
            net.crash(lead)
            up.discard(lead)
        if len(up) < 3:
            back = rng.choice(sorted(set(FIVE) - up))
            net.restart(back)
            up.add(back)
    for node_id in sorted(set(FIVE) - up):
        net.restart(node_id)
    net.filter = None
    net.reorder = None
    lead = tick_until_leader(net)
    index = net.propose(lead, b"final")
    net.tick(n=5)
    assert committed_everywhere(net, index)
    net.assert_consistent()


def test_figure8_reliable() -> None:
    run_figure8_churn(6, unreliable=False)


def test_figure8_unreliable() -> None:
    run_figure8_churn(7, unreliable=True)


def test_churn() -> None:
    net = ScriptedNet(FIVE, seed=8)
    rng = random.Random(8)
    proposed = 0
    for _ in range(200):
        action = rng.random()
        victim = rng.choice(FIVE)
        if action < 0.1 and net[victim].up:
            net.crash(victim)
        elif action < 0.3 and not net[victim].up:
            net.restart(victim)
        elif action < 0.4:
            net.isolate(victim)
        elif action < 0.5:
            net.heal()
        lead = net.leader()
        if lead is not None:
            with contextlib.suppress(RaftError):  # a transfer or a step-down: skip
                net[lead].node.propose([b"c%d" % proposed])
                proposed += 1
        net.tick(n=rng.randrange(1, 5))
    net.heal()
    for i in FIVE:
        if not net[i].up:
            net.restart(i)
    lead = tick_until_leader(net)
    index = net.propose(lead, b"end")
    net.tick(n=3)
    assert committed_everywhere(net, index)
    net.assert_consistent()
    assert len(net[lead].payloads()) > 20


def test_reordered_and_stale_messages_change_nothing() -> None:
    net = ScriptedNet(THREE, seed=9)
    net.elect("n1")
    for i in range(5):
        net.propose("n1", b"a%d" % i)
    old = list(net.sent)
    net.tick(n=25, node_ids=["n2", "n3"])  # n1 is ignored: n2 or n3 takes over
    net.isolate("n1")
    lead = tick_until_leader(net)
    net.heal()
    for i in range(5):
        net.propose(lead, b"b%d" % i)
    before = {i: (m.raft.log.committed, m.raft.log.last_index()) for i, m in net.members.items()}
    # Replay every old message, shuffled and twice over: duplicates, reordering and
    # messages from a stale term must not undo anything.
    rng = random.Random(9)
    replay = old + old
    rng.shuffle(replay)
    for msg in replay:
        net.deliver(msg)
        net.process(msg.to)
    net.stabilize()
    for node_id, member in net.members.items():
        assert member.raft.log.committed >= before[node_id][0]
    net.tick(n=3)
    net.assert_consistent()
    assert net[lead].payloads()[-5:] == [b"b%d" % i for i in range(5)]


def test_restart_of_all_nodes_keeps_everything() -> None:
    net = ScriptedNet(THREE, seed=10)
    net.elect("n1")
    for i in range(5):
        net.propose("n1", b"p%d" % i)
    state = {i: (m.raft.term, m.raft.vote, m.raft.log.last_index()) for i, m in net.members.items()}
    for node_id in THREE:
        net.crash(node_id)
    for node_id in THREE:
        net.restart(node_id)
    for node_id, m in net.members.items():
        assert (m.raft.term, m.raft.vote, m.raft.log.last_index()) == state[node_id]
    lead = tick_until_leader(net)
    net.propose(lead, b"after")
    net.tick(n=2)
    net.assert_consistent()
    for m in net.members.values():
        assert m.payloads() == [b"p%d" % i for i in range(5)] + [b"after"]


def test_restart_redelivers_committed_but_unapplied_entries() -> None:
    net = ScriptedNet(THREE, seed=11)
    net.elect("n1")
    for i in range(3):
        net.propose("n1", b"q%d" % i)
    net.tick(n=2)
    # The application of n2 durably applied only up to index 2 before it crashed.
    net.crash("n2")
    net["n2"].applied_index = 2
    net["n2"].applied = [e for e in net["n2"].applied if e.index <= 2]
    net.restart("n2")
    net.tick(n=2)
    assert net["n2"].payloads() == [b"q0", b"q1", b"q2"]


def test_restart_of_some_nodes_mid_replication() -> None:
    net = ScriptedNet(FIVE, seed=12)
    net.elect("n1")
    net.crash("n4")
    net.crash("n5")
    for i in range(10):
        net.propose("n1", b"r%d" % i)
    net.crash("n1")
    net.restart("n4")
    net.restart("n5")
    lead = tick_until_leader(net)
    assert lead != "n1"
    net.restart("n1")
    net.propose(lead, b"s")
    net.tick(n=3)
    net.assert_consistent()
    assert net["n4"].payloads() == [b"r%d" % i for i in range(10)] + [b"s"]


def test_message_budget_when_idle() -> None:
    net = ScriptedNet(THREE, seed=13)
    net.elect("n1")
    net.tick(n=5)
    before = len(net.sent)
    net.tick(n=100)
    idle = net.sent[before:]
    # One heartbeat and one answer per follower per tick, nothing else.
    assert len(idle) <= 2 * 2 * 100
    assert {m.type for m in idle} <= {MessageType.HEARTBEAT, MessageType.HEARTBEAT_RESP}


def test_pipelining_is_bounded_by_max_inflight() -> None:
    net = ScriptedNet(THREE, seed=14, max_inflight=2, max_entries_per_msg=1)
    net.elect("n1")
    net.tick(n=1)
    # n3 receives but its answers are lost: the leader may keep only 2 APPENDs in flight.
    net.filter = lambda m: not (m.sender == "n3" and m.type is MessageType.APPEND_RESP)
    before = len(net.sent)
    for i in range(10):
        net.propose("n1", b"p%d" % i)
    to_n3 = [
        m for m in net.sent[before:] if m.type is MessageType.APPEND and m.to == "n3" and m.entries
    ]
    assert len(to_n3) == 2  # (empty APPENDs that only carry the commit index do not count)
    # n2 acknowledges, so everything commits anyway, one entry per message.
    assert net["n1"].raft.log.committed == net["n1"].raft.log.last_index()
    # Once n3's answers get through again, it catches up.
    net.filter = None
    net.tick(n=10)
    assert net["n3"].payloads() == [b"p%d" % i for i in range(10)]


def test_malformed_messages_are_refused() -> None:
    net = ScriptedNet(THREE, seed=15)
    net.elect("n1")
    n2 = net["n2"].node
    last = net["n2"].raft.log.last_index()
    gap = Message(MessageType.APPEND, "n2", "n1", 1, 1, 1, (Entry(1, 3),), 1)
    future = Message(MessageType.APPEND, "n2", "n1", 1, 1, 1, (Entry(9, 2),), 1)
    empty_snapshot = Message(MessageType.SNAPSHOT, "n2", "n1", 1)
    elsewhere = Message(MessageType.HEARTBEAT, "n9", "n1", 1)
    for m in (gap, future, empty_snapshot, elsewhere):
        assert n2.step(m) is False
    assert net["n2"].raft.log.last_index() == last
    ok = Message(MessageType.APPEND, "n2", "n1", 1, 1, 1, (Entry(1, 2, data=b"d"),), 1)
    assert n2.step(ok) is True


class CommitRound:
    """n1 leads n2 and n3. A is stored by both followers; B goes out to both before
    n2's acknowledgement of A commits A. Records the empty APPENDs (commit notices) the
    leader sends at A's commit and at B's, and what each follower knows after each."""

    def __init__(self, notice: CommitNotice) -> None:
        self.net = net = ScriptedNet(THREE, seed=9, commit_notice=notice)
        net.elect("n1")
        leader = net["n1"]
        leader.node.propose([b"A"])
        net.process("n1")
        acks_a = self.exchange(self.take())
        self.a = leader.raft.log.last_index()
        leader.node.propose([b"B"])
        net.process("n1")
        appends_b = self.take()
        assert {m.to for m in appends_b} == {"n2", "n3"}
        self.b = leader.raft.log.last_index()
        net.deliver(next(m for m in acks_a if m.sender == "n2"))
        net.process("n1")
        assert leader.raft.log.committed == self.a
        self.notices_a = self.empty_appends(sent := self.take())
        acks_b = self.exchange(appends_b + sent)
        self.known_after_a = self.known()
        for m in acks_a + acks_b:
            if m.sender == "n3" or m.index == self.b:
                net.deliver(m)
        net.process("n1")
        assert leader.raft.log.committed == self.b
        self.notices_b = self.empty_appends(sent := self.take())
        self.exchange(sent)
        self.known_after_b = self.known()

    def take(self) -> list[Message]:
        out = list(self.net.queue)
        self.net.queue.clear()
        return out

    def exchange(self, msgs: list[Message]) -> list[Message]:
        """Deliver `msgs`; the recipients handle them; returns their answers."""
        for m in msgs:
            self.net.deliver(m)
        for to in sorted({m.to for m in msgs}):
            self.net.process(to)
        return self.take()

    @staticmethod
    def empty_appends(msgs: list[Message]) -> list[str]:
        return sorted(m.to for m in msgs if m.type is MessageType.APPEND and not m.entries)

    def known(self) -> dict[str, int]:
        return {f: self.net[f].raft.log.committed for f in ("n2", "n3")}


def test_every_commit_notice_tells_each_follower_at_each_advance() -> None:
    r = CommitRound(CommitNotice.EVERY)
    assert r.notices_a == ["n2", "n3"] and r.notices_b == ["n2", "n3"]
    assert r.known_after_a == {"n2": r.a, "n3": r.a}
    assert r.known_after_b == {"n2": r.b, "n3": r.b}


def test_settled_commit_notices_wait_for_the_entries_in_flight() -> None:
    # At A's commit both followers have B in flight: no notice, and they learn of A only
    # with the advance that commits B, which is sent to both (its cost: one more round).
    r = CommitRound(CommitNotice.SETTLED)
    assert r.notices_a == [] and r.notices_b == ["n2", "n3"]
    assert r.known_after_a == {"n2": r.a - 1, "n3": r.a - 1}
    assert r.known_after_b == {"n2": r.b, "n3": r.b}


def test_lazy_commit_notices_leave_it_to_appends_and_heartbeats() -> None:
    r = CommitRound(CommitNotice.LAZY)
    assert r.notices_a == [] and r.notices_b == []
    assert r.known_after_b == {"n2": r.a - 1, "n3": r.a - 1}
    r.net.tick(n=1)
    assert committed_everywhere(r.net, r.b)
    r.net.assert_consistent()


def pipelined_with_a_lost_ack(notice: CommitNotice) -> tuple[ScriptedNet, int, int]:
    """n3 is down, so B commits only on n2's acknowledgement; A and B go out together and
    n2's first acknowledgement of B is lost. Returns the net, B's index and the commit
    index once the network is quiet."""
    net = ScriptedNet(THREE, seed=9, commit_notice=notice)
    net.elect("n1")
    net.crash("n3")
    leader = net["n1"]
    leader.node.propose([b"A"])
    net.process("n1")
    leader.node.propose([b"B"])
    net.process("n1")
    b = leader.raft.log.last_index()
    lost: list[Message] = []

    def lose_first_ack_of_b(m: Message) -> bool:
        if m.type is MessageType.APPEND_RESP and m.index == b and not lost:
            lost.append(m)
            return False
        return True

    net.filter = lose_first_ack_of_b
    net.stabilize()
    assert lost
    return net, b, leader.raft.log.committed


def test_a_lost_acknowledgement_costs_settled_notices_a_heartbeat() -> None:
    # EVERY's notice at A's commit makes n2 answer again, which commits B; SETTLED sends
    # none (B is in flight), so B waits for the next heartbeat's answer.
    _, b, committed = pipelined_with_a_lost_ack(CommitNotice.EVERY)
    assert committed == b
    net, b, committed = pipelined_with_a_lost_ack(CommitNotice.SETTLED)
    assert committed == b - 1
    net.tick(["n1", "n2"], n=1)  # heartbeat_tick is 1
    assert net["n1"].raft.log.committed == b and net["n2"].raft.log.committed == b
