"""ReadIndex: linearizable reads without a log entry (Raft thesis §6.4)."""

from __future__ import annotations

import pytest

from node.consensus import MessageType, NotLeader, ReadState
from node.consensus.sim.scripted import ScriptedNet

THREE = ["n1", "n2", "n3"]


def test_leader_serves_a_read_after_a_heartbeat_round() -> None:
    net = ScriptedNet(THREE, seed=1)
    net.elect("n1")
    index = net.propose("n1", b"w")
    # Hold heartbeat answers back: no quorum confirmation, no read state.
    net.filter = lambda m: m.type is not MessageType.HEARTBEAT_RESP
    net["n1"].node.read_index(b"r1")
    net.stabilize()
    assert net["n1"].read_states == []
    net.filter = None
    net.tick(["n1"], n=1)  # the next heartbeat carries the pending context again
    assert net["n1"].read_states == [ReadState(index, b"r1")]


def test_follower_read_is_forwarded_to_the_leader() -> None:
    net = ScriptedNet(THREE, seed=2)
    net.elect("n1")
    index = net.propose("n1", b"w")
    net["n2"].node.read_index(b"f1")
    net.stabilize()
    assert net["n2"].read_states == [ReadState(index, b"f1")]


def test_read_without_known_leader_is_refused() -> None:
    net = ScriptedNet(THREE, seed=3)
    with pytest.raises(NotLeader):
        net["n1"].node.read_index(b"x")


def test_read_waits_for_the_new_leaders_first_commit() -> None:
    net = ScriptedNet(THREE, seed=4, pre_vote=False, check_quorum=False)
    net.elect("n1")
    net.propose("n1", b"a")
    net.isolate("n1")
    net["n2"].node.campaign()
    # n2 wins but its no-op does not get out yet: it cannot know the commit index.
    net.filter = lambda m: m.type is not MessageType.APPEND
    net.stabilize()
    assert net.leader() == "n2"
    net["n2"].node.read_index(b"early")
    net.tick(["n2"], n=2)
    assert net["n2"].read_states == []
    net.filter = None
    net.tick(["n2", "n3"], n=2)
    [rs] = net["n2"].read_states
    assert rs.context == b"early"
    assert rs.index >= net["n2"].raft.noop_index


def test_stale_leader_never_serves_a_read() -> None:
    net = ScriptedNet(THREE, seed=5)
    net.elect("n1")
    net.propose("n1", b"a")
    net.isolate("n1")
    for _ in range(100):
        net.tick(["n2", "n3"])
        if net.leader() in ("n2", "n3"):
            break
    lead = net.leader()
    assert lead in ("n2", "n3")
    net.propose(lead, b"newer")
    # n1 still believes it leads (until CheckQuorum), but it cannot confirm that.
    net["n1"].node.read_index(b"stale")
    for _ in range(30):
        net.tick(["n1"])
    assert net["n1"].read_states == []
    # Reads at the real leader see the newer write.
    net[lead].node.read_index(b"fresh")
    net.stabilize()
    [rs] = net[lead].read_states
    assert rs.index >= net[lead].raft.log.committed
