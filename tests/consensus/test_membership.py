"""Membership changes, learners, snapshots and InstallSnapshot."""

from __future__ import annotations

import pytest

from node.consensus import (
    ConfChange,
    ConfChangeRefused,
    ConfChangeType,
    MessageType,
    Role,
)
from node.consensus.sim.scripted import ScriptedNet

THREE = ["n1", "n2", "n3"]


def change(net: ScriptedNet, leader: str, kind: ConfChangeType, node: str) -> int:
    index = net[leader].node.propose_conf_change(ConfChange(kind, node))
    net.stabilize()
    return index


def test_add_learner_catch_up_and_promote() -> None:
    net = ScriptedNet(THREE, seed=1)
    net.elect("n1")
    for i in range(5):
        net.propose("n1", b"a%d" % i)
    net.add_member("n4")
    change(net, "n1", ConfChangeType.ADD_LEARNER, "n4")
    net.tick(n=2)
    n4 = net["n4"]
    assert n4.raft.membership.learners == {"n4"}
    assert n4.payloads() == [b"a%d" % i for i in range(5)]  # caught up
    # A learner never campaigns, whatever its timer says...
    net.isolate("n4")
    net.tick(["n4"], n=100)
    assert n4.raft.role is Role.FOLLOWER
    assert n4.raft.term == net["n1"].raft.term
    net.heal()
    # ...and does not count for a quorum: with two voters down nothing commits.
    net.crash("n2")
    net.crash("n3")
    index = net.propose("n1", b"needs-a-voter")
    assert n4.raft.log.last_index() >= index
    assert net["n1"].raft.log.committed < index
    net.restart("n2")
    net.restart("n3")
    net.tick(n=2)
    assert net["n1"].raft.log.committed >= index
    # Promotion: now a voter, so the quorum is 3 of 4.
    change(net, "n1", ConfChangeType.PROMOTE_LEARNER, "n4")
    net.tick(n=1)
    for m in net.members.values():
        assert m.raft.membership.voters == {"n1", "n2", "n3", "n4"}
    net.crash("n2")
    net.crash("n3")
    index = net.propose("n1", b"two-of-four")
    net.tick(["n1", "n4"], n=2)
    assert net["n1"].raft.log.committed < index
    net.restart("n2")
    net.tick(n=3)
    assert net["n1"].raft.log.committed >= index
    net.assert_consistent()


def test_remove_a_follower_then_the_leader() -> None:
    net = ScriptedNet(THREE, seed=2)
    net.elect("n1")
    net.propose("n1", b"x")
    change(net, "n1", ConfChangeType.REMOVE_NODE, "n3")
    net.tick(n=1)
    assert net["n1"].raft.membership.voters == {"n1", "n2"}
    net.crash("n3")
    index = net.propose("n1", b"two-voters")
    assert net["n2"].raft.log.committed >= index or net["n1"].raft.log.committed >= index
    # Removing the leader: it keeps leading until the change commits, then steps down.
    change(net, "n1", ConfChangeType.REMOVE_NODE, "n1")
    net.tick(["n1", "n2"], n=1)
    assert net["n1"].raft.role is Role.FOLLOWER
    for _ in range(50):
        net.tick(["n1", "n2"])
        if net["n2"].raft.role is Role.LEADER:
            break
    assert net["n2"].raft.role is Role.LEADER
    assert net["n2"].raft.membership.voters == {"n2"}
    index = net.propose("n2", b"alone")
    assert net["n2"].raft.log.committed == index  # a single voter commits on its own


def test_conf_changes_wait_for_the_noop_and_for_each_other() -> None:
    net = ScriptedNet(THREE, seed=3)
    net["n1"].node.campaign()
    # Deliver the votes but hold back APPENDs: the leader's no-op is not committed.
    net.filter = lambda m: m.type is not MessageType.APPEND
    net.stabilize()
    assert net["n1"].raft.role is Role.LEADER
    with pytest.raises(ConfChangeRefused, match="term"):
        net["n1"].node.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "n4"))
    net.filter = None
    net.tick(n=2)
    net.filter = lambda m: m.type is not MessageType.APPEND
    net["n1"].node.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "n4"))
    net.stabilize()
    with pytest.raises(ConfChangeRefused, match="not committed"):
        net["n1"].node.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, "n5"))
    with pytest.raises(ConfChangeRefused):
        net["n1"].node.propose_conf_change(ConfChange(ConfChangeType.PROMOTE_LEARNER, "n2"))


def test_overwritten_config_entry_is_no_longer_in_force() -> None:
    net = ScriptedNet(THREE, seed=4)
    net.elect("n1")
    net.tick(n=1)
    # n1, cut off, appends a configuration entry: in force at n1 as soon as appended.
    net.isolate("n1")
    change(net, "n1", ConfChangeType.ADD_LEARNER, "n4")
    assert net["n1"].raft.membership.learners == {"n4"}
    for _ in range(100):
        net.tick(["n2", "n3"])
        if net.leader() in ("n2", "n3"):
            break
    lead = net.leader()
    assert lead in ("n2", "n3")
    net.propose(lead, b"other-history")
    net.heal()
    net.tick(n=25)
    # The new leader's log replaced n1's entry, and with it that configuration.
    assert net["n1"].raft.membership.learners == frozenset()
    assert net["n1"].raft.membership.voters == set(THREE)
    net.assert_consistent()


def test_snapshot_install_to_a_lagging_follower() -> None:
    net = ScriptedNet(THREE, seed=5)
    net.elect("n1")
    net.isolate("n3")
    for i in range(20):
        net.propose("n1", b"s%d" % i)
    leader = net["n1"]
    snap = leader.node.make_snapshot(leader.applied_index, b"app-state@%d" % leader.applied_index)
    leader.storage.compact(snap)
    assert leader.storage.first_index() == snap.index + 1
    net.heal()
    net.tick(n=3)
    n3 = net["n3"]
    assert net.count(MessageType.SNAPSHOT) == 1
    assert n3.snapshot_data == b"app-state@%d" % snap.index
    assert n3.storage.snapshot().meta.membership.voters == set(THREE)
    assert n3.raft.log.committed == leader.raft.log.committed
    net.propose("n1", b"after")
    net.tick(n=1)
    assert n3.payloads() == [b"after"]  # applied on top of the snapshot
    net.assert_consistent()


def test_restart_from_a_compacted_log() -> None:
    net = ScriptedNet(THREE, seed=6)
    net.elect("n1")
    for i in range(10):
        net.propose("n1", b"t%d" % i)
    net.tick(n=1)
    n2 = net["n2"]
    n2.storage.compact(n2.node.make_snapshot(8, b"state@8"))
    net.crash("n2")
    net.restart("n2")
    assert n2.raft.log.first_index() == 9 or net["n2"].raft.log.first_index() == 9
    assert net["n2"].raft.membership.voters == set(THREE)
    net.propose("n1", b"more")
    net.tick(n=1)
    assert net["n2"].payloads()[-1] == b"more"
