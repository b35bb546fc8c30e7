"""The leader's asynchronous save (Raft thesis §10.2.1): it sends its entries before
they are durable here, and counts itself toward a commit only once they are."""

from __future__ import annotations

import random

import pytest

from node.consensus import Entry, MemoryStorage, MessageType, RaftConfig, RawNode, Ready
from node.consensus.log import RaftLog
from node.consensus.membership import Membership
from node.consensus.sim.scripted import ScriptedNet

THREE = ["n1", "n2", "n3"]


def send_async(net: ScriptedNet, node_id: str) -> Ready:
    """Handle one Ready of `node_id` the asynchronous way: send and apply, save later."""
    m = net[node_id]
    rd = m.node.ready()
    assert rd.async_save
    net.queue.extend(rd.messages)
    m.node.advance_async(rd)
    return rd


def deliver_to(net: ScriptedNet, node_id: str) -> None:
    """Deliver the queued messages addressed to `node_id` (followers answer at once);
    keep the others queued."""
    keep = [msg for msg in net.queue if msg.to != node_id]
    mine = [msg for msg in net.queue if msg.to == node_id]
    net.queue.clear()
    net.queue.extend(keep)
    for msg in mine:
        net.deliver(msg)
    if node_id != "n1":
        net.process(node_id)


def save(net: ScriptedNet, node_id: str, rd: Ready) -> None:
    m = net[node_id]
    m.storage.save(rd.hard_state, rd.entries, rd.snapshot, rd.must_sync)
    m.node.persisted(rd.entries[-1].index, rd.entries[-1].term)


def test_leader_counts_itself_only_once_its_save_is_reported() -> None:
    net = ScriptedNet(THREE, seed=0)
    net.elect("n1")
    lead = net["n1"]
    index = lead.node.propose([b"x"])
    rd = send_async(net, "n1")
    assert [e.index for e in rd.entries] == [index]
    assert any(m.type is MessageType.APPEND and m.entries for m in rd.messages)
    deliver_to(net, "n2")  # n2 saves and acknowledges
    deliver_to(net, "n1")
    # n2 alone holds the entry durably: not a majority of three.
    assert lead.raft.log.committed < index
    assert lead.node.match_index("n1") == index - 1
    save(net, "n1", rd)
    assert lead.raft.log.committed == index
    follow_up = lead.node.ready()
    assert [e.index for e in follow_up.committed_entries] == [index]
    assert any(m.commit == index for m in follow_up.messages)


def test_followers_majority_commits_but_leader_applies_only_what_it_saved() -> None:
    net = ScriptedNet(THREE, seed=0)
    net.elect("n1")
    lead = net["n1"]
    index = lead.node.propose([b"x"])
    rd = send_async(net, "n1")
    deliver_to(net, "n2")
    deliver_to(net, "n3")
    deliver_to(net, "n1")
    assert lead.raft.log.committed == index  # two durable copies out of three
    commit_rd = lead.node.ready()
    assert commit_rd.committed_entries == ()  # not durable here yet: not applied
    lead.node.advance_async(commit_rd)
    assert not lead.node.has_ready()  # nothing to do until the save lands
    save(net, "n1", rd)
    assert lead.node.has_ready()
    assert [e.index for e in lead.node.ready().committed_entries] == [index]


def test_readys_that_change_term_or_vote_are_never_asynchronous() -> None:
    storage = MemoryStorage.bootstrap(Membership.of(["solo"]))
    node = RawNode(RaftConfig("solo"), storage, random.Random(1))
    node.campaign()  # a group of one wins at once: term, vote and no-op in one Ready
    rd = node.ready()
    assert rd.hard_state is not None and rd.entries
    assert not rd.async_save
    with pytest.raises(ValueError):
        node.advance_async(rd)
    storage.save(rd.hard_state, rd.entries, rd.snapshot, rd.must_sync)
    node.advance(rd)
    assert node.ready().committed_entries  # the no-op, counted once saved


def test_follower_readys_are_never_asynchronous() -> None:
    net = ScriptedNet(THREE, seed=0)
    net.elect("n1")
    net["n1"].node.propose([b"x"])
    send_async(net, "n1")
    for msg in [m for m in net.queue if m.to == "n2"]:
        net.deliver(msg)
    rd = net["n2"].node.ready()
    assert rd.entries and not rd.async_save


def test_a_save_of_overwritten_entries_does_not_count() -> None:
    storage = MemoryStorage.bootstrap(Membership.of(THREE))
    log = RaftLog(storage, 0)
    log.append([Entry(1, 1), Entry(1, 2), Entry(1, 3)])
    log.saving_to(3)
    assert not log.has_unsaved()
    log.append([Entry(2, 2)])  # a new leader replaced 2..3 while the save ran
    assert [(e.index, e.term) for e in log.unsaved()] == [(2, 2)]
    log.stable_to(3, 1)  # the old save finishes: entry 3 is gone, nothing is stable
    assert log.stable_index() == 0
    storage.save(None, [Entry(1, 1), Entry(2, 2)], None)
    log.stable_to(2, 2)
    assert log.stable_index() == 2 and not log.has_unsaved()
