"""Messages the Raft cores exchange: one small frozen dataclass, one enum of types.

The fields are plain (str, int, bool, bytes, tuples of entries) so that a later wire
codec can map them one-to-one onto a protobuf message. Which fields matter depends on
`type`; the others keep their defaults.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from node.consensus.entry import Entry, Snapshot


class MessageType(enum.IntEnum):
    APPEND = 1  # index/log_term: the entry before `entries`; commit: leader's commit
    APPEND_RESP = 2  # index: last matching index; on reject, reject_hint/hint_term
    VOTE = 3  # index/log_term: candidate's last entry
    VOTE_RESP = 4
    PRE_VOTE = 5  # term is the term the candidate *would* campaign in
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7  # commit: min(follower's match, leader commit); context: ReadIndex round
    HEARTBEAT_RESP = 8
    SNAPSHOT = 9  # InstallSnapshot: snapshot is set
    TIMEOUT_NOW = 10  # leader transfer: campaign now, skipping PreVote and leases
    READ_INDEX = 11  # follower asks the leader for a read index; context identifies it
    READ_INDEX_RESP = 12  # index: the read index; reject: the leader could not serve it


# Vote requests whose context is this come from a leader transfer and may override the
# leader lease that CheckQuorum gives followers (etcd calls this campaignTransfer).
TRANSFER_CONTEXT = b"transfer"


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    to: str
    sender: str
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0  # rejected APPEND: first index of hint_term at the follower
    hint_term: int = 0  # rejected APPEND: follower's term at `index` (0: log too short)
    snapshot: Snapshot | None = None
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the state machine has applied `index`."""

    index: int
    context: bytes


def well_formed(m: Message) -> bool:
    """Cheap structural checks on a message from the network, so that a buggy or
    corrupted peer cannot make the core write a log with gaps or crash on a missing
    field. (Raft trusts its peers' honesty, not their bytes.)"""
    if m.term < 0 or m.index < 0 or m.commit < 0:
        return False
    if m.type is MessageType.SNAPSHOT:
        return m.snapshot is not None
    if m.entries:
        if m.type is not MessageType.APPEND:
            return False
        expected = m.index + 1
        for e in m.entries:
            if e.index != expected or e.term > m.term:
                return False
            expected += 1
    return True
