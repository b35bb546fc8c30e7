"""Scripted election scenarios: who leads, when, and who may not."""

from __future__ import annotations

import random

import pytest

from node.consensus import ConfChangeRefused, MessageType, NotLeader, ProposalDropped, Role
from node.consensus.sim.scripted import ScriptedNet

THREE = ["n1", "n2", "n3"]


def terms(net: ScriptedNet) -> dict[str, int]:
    return {i: m.raft.term for i, m in net.members.items()}


def tick_until_leader(net: ScriptedNet, limit: int = 100, among: list[str] | None = None) -> str:
    for _ in range(limit):
        net.tick()
        lead = net.leader()
        if lead is not None and (among is None or lead in among):
            return lead
    raise AssertionError("no leader elected")


def test_initial_election() -> None:
    net = ScriptedNet(THREE, seed=1)
    lead = tick_until_leader(net)
    assert net.leaders() == [lead]
    assert set(terms(net).values()) == {1}
    assert all(m.raft.lead == lead for m in net.members.values())
    # The leader's no-op of term 1 is committed everywhere.
    net.tick(n=2)
    assert all(m.raft.log.committed == 1 for m in net.members.values())


def test_reelection_after_leader_is_cut_off_and_rejoins() -> None:
    net = ScriptedNet(THREE, seed=2)
    old = tick_until_leader(net)
    net.isolate(old)
    others = [i for i in THREE if i != old]
    new = tick_until_leader(net, among=others)
    assert net[new].raft.term > net[old].raft.term
    # CheckQuorum: the cut-off leader has stepped down on its own by now.
    net.tick(n=10)
    assert net[old].raft.role is Role.FOLLOWER
    net.heal()
    net.tick(n=5)
    assert net.leaders() == [new]
    assert net[old].raft.lead == new


def test_many_elections_with_seven_nodes() -> None:
    ids = [f"n{i}" for i in range(1, 8)]
    net = ScriptedNet(ids, seed=3)
    rng = random.Random(3)
    leader_of_term: dict[int, str] = {}
    tick_until_leader(net)
    for _ in range(10):
        down = rng.sample(ids, 3)  # a majority of 4 stays up
        for i in down:
            net.crash(i)
        up = [i for i in ids if i not in down]
        lead = tick_until_leader(net, limit=200, among=up)
        for i in up:
            r = net[i].raft
            if r.role is Role.LEADER:
                assert leader_of_term.setdefault(r.term, i) == i
        assert lead in up
        for i in down:
            net.restart(i)
    net.tick(n=5)
    net.assert_consistent()


def test_split_vote_resolves() -> None:
    net = ScriptedNet(["n1", "n2", "n3", "n4"], seed=4)
    net.partition(["n1", "n3"], ["n2", "n4"])
    net["n1"].node.campaign()
    net["n2"].node.campaign()
    net.stabilize()
    assert net.leaders() == []  # 2 of 4 is no quorum on either side
    net.heal()
    lead = tick_until_leader(net)
    net.tick(n=3)
    assert net.leaders() == [lead]


def test_prevote_stops_a_partitioned_node_inflating_its_term() -> None:
    net = ScriptedNet(THREE, seed=5)
    net.elect("n1")
    term = net["n1"].raft.term
    net.isolate("n3")
    net.tick(n=200)
    assert net["n3"].raft.term == term  # PreVote never won, so the term never moved
    assert net["n3"].raft.role is Role.PRE_CANDIDATE
    net.heal()
    net.tick(n=5)
    assert net.leaders() == ["n1"]
    assert net["n1"].raft.term == term  # the rejoining node disrupted nothing


def test_without_prevote_a_partitioned_node_inflates_its_term() -> None:
    # The contrast that shows what PreVote buys.
    net = ScriptedNet(THREE, seed=5, pre_vote=False)
    net.elect("n1")
    term = net["n1"].raft.term
    net.isolate("n3")
    net.tick(n=200)
    assert net["n3"].raft.term > term + 5


def test_check_quorum_makes_a_cut_off_leader_step_down() -> None:
    net = ScriptedNet(THREE, seed=6)
    net.elect("n1")
    net.isolate("n1")
    net.tick(["n1"], n=9)
    assert net.leaders() == ["n1"]
    # Activity is judged per election timeout, so within two it is gone.
    net.tick(["n1"], n=11)
    assert net["n1"].raft.role is Role.FOLLOWER
    with pytest.raises(NotLeader):
        net["n1"].node.propose([b"x"])


def test_followers_in_lease_ignore_vote_requests() -> None:
    net = ScriptedNet(THREE, seed=7, pre_vote=False)
    net.elect("n1")
    term = net["n1"].raft.term
    net["n3"].node.campaign()  # n3 forces an election while n1 is alive
    net.stabilize()
    assert net["n2"].raft.term == term  # n2 heard from n1 recently: ignored n3
    assert net["n1"].raft.role is Role.LEADER


def test_vote_restriction_rejects_candidates_with_stale_logs() -> None:
    net = ScriptedNet(THREE, seed=8)
    net.elect("n1")
    net.isolate("n3")
    for i in range(5):
        net.propose("n1", b"e%d" % i)
    assert net["n2"].raft.log.committed == net["n1"].raft.log.last_index()
    net.crash("n1")
    net.heal()
    net.tick(["n2", "n3"], n=12)  # leases expire
    net["n3"].node.campaign()
    net.stabilize()
    assert net["n3"].raft.role is not Role.LEADER
    # n2 holds every committed entry and wins instead.
    lead = tick_until_leader(net, among=["n2"])
    assert lead == "n2"
    assert net["n2"].raft.log.last_index() >= 6


def test_leader_transfer_to_an_up_to_date_follower() -> None:
    net = ScriptedNet(THREE, seed=9)
    net.elect("n1")
    net.propose("n1", b"a")
    term = net["n1"].raft.term
    net["n1"].node.transfer_leader("n2")
    net.stabilize()
    assert net.leaders() == ["n2"]
    assert net["n2"].raft.term == term + 1
    assert net.count(MessageType.TIMEOUT_NOW) == 1


def test_leader_transfer_waits_for_a_lagging_target_to_catch_up() -> None:
    net = ScriptedNet(THREE, seed=10)
    net.elect("n1")
    net.isolate("n3")
    for i in range(5):
        net.propose("n1", b"e%d" % i)
    net.heal()
    net["n1"].node.transfer_leader("n3")
    net.stabilize()
    assert net.leaders() == ["n3"]
    assert net["n3"].raft.log.committed >= 6


def test_leader_transfer_to_unreachable_target_times_out() -> None:
    net = ScriptedNet(THREE, seed=11)
    net.elect("n1")
    net.isolate("n3")
    net.propose("n1", b"a")
    net["n1"].node.transfer_leader("n3")
    net.stabilize()
    with pytest.raises(ProposalDropped):
        net["n1"].node.propose([b"b"])  # refused while the transfer is pending
    net.tick(["n1", "n2"], n=10)
    assert net.leaders() == ["n1"]
    net.propose("n1", b"b")  # accepted again once the transfer gave up
    with pytest.raises(ConfChangeRefused):
        net["n1"].node.transfer_leader("nobody")
