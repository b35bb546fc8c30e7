"""Raft messages on the wire: node.consensus.Message <-> medledger.v1.RaftMessage.

Decoding never trusts its input: a malformed frame raises WireError, and the transport
drops and penalises the peer that sent it.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import DecodeError
from medledger.v1 import p2p_pb2

from node.consensus import Entry, EntryKind, Membership, Message, MessageType, Snapshot
from node.consensus.entry import SnapshotMeta


class WireError(Exception):
    pass


def _entry_to_wire(e: Entry) -> p2p_pb2.RaftEntry:
    return p2p_pb2.RaftEntry(term=e.term, index=e.index, kind=int(e.kind), data=e.data)


def encode(messages: Sequence[Message]) -> bytes:
    frame = p2p_pb2.RaftFrame()
    for m in messages:
        wire = frame.messages.add()
        wire.type = int(m.type)
        wire.to = m.to
        wire.sender = m.sender
        wire.term = m.term
        wire.log_term = m.log_term
        wire.index = m.index
        wire.entries.extend(_entry_to_wire(e) for e in m.entries)
        wire.commit = m.commit
        wire.reject = m.reject
        wire.reject_hint = m.reject_hint
        wire.hint_term = m.hint_term
        wire.context = m.context
        if m.snapshot is not None:
            meta = m.snapshot.meta
            wire.has_snapshot = True
            wire.snapshot.CopyFrom(
                p2p_pb2.RaftSnapshot(
                    index=meta.index,
                    term=meta.term,
                    voters=sorted(meta.membership.voters),
                    learners=sorted(meta.membership.learners),
                    data=m.snapshot.data,
                )
            )
    return frame.SerializeToString()


def decode(data: bytes, sender: str) -> list[Message]:
    """Messages of one frame; every one must claim to come from `sender`, the peer the
    transport authenticated (a node cannot speak for another)."""
    try:
        frame = p2p_pb2.RaftFrame.FromString(data)
        out = []
        for w in frame.messages:
            if w.sender != sender:
                raise WireError(f"message claims sender {w.sender!r}, peer is {sender!r}")
            snapshot = None
            if w.has_snapshot:
                s = w.snapshot
                snapshot = Snapshot(
                    SnapshotMeta(s.index, s.term, Membership.of(s.voters, s.learners)), s.data
                )
            out.append(
                Message(
                    type=MessageType(w.type),
                    to=w.to,
                    sender=w.sender,
                    term=w.term,
                    log_term=w.log_term,
                    index=w.index,
                    entries=tuple(
                        Entry(e.term, e.index, EntryKind(e.kind), e.data) for e in w.entries
                    ),
                    commit=w.commit,
                    reject=w.reject,
                    reject_hint=w.reject_hint,
                    hint_term=w.hint_term,
                    snapshot=snapshot,
                    context=w.context,
                )
            )
        return out
    except (DecodeError, ValueError) as exc:
        raise WireError(f"malformed Raft frame: {exc}") from exc
