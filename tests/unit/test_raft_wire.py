"""The Raft wire codec round-trips every field and refuses malformed or forged frames."""

from __future__ import annotations

import pytest

from node.consensus import Entry, EntryKind, Membership, Message, MessageType, Snapshot
from node.consensus.entry import SnapshotMeta
from node.ordering.raft_wire import WireError, decode, encode


def test_round_trip_of_every_field() -> None:
    snap = Snapshot(SnapshotMeta(7, 2, Membership.of(["a", "b"], ["c"])), b"app")
    messages = [
        Message(
            MessageType.APPEND,
            "b",
            "a",
            3,
            log_term=2,
            index=5,
            entries=(Entry(3, 6, EntryKind.NORMAL, b"x"), Entry(3, 7, EntryKind.NOOP)),
            commit=4,
            context=b"ctx",
        ),
        Message(
            MessageType.APPEND_RESP, "b", "a", 3, index=5, reject=True, reject_hint=2, hint_term=1
        ),
        Message(MessageType.SNAPSHOT, "c", "a", 3, snapshot=snap),
    ]
    assert decode(encode(messages), "a") == messages


def test_forged_sender_and_garbage_are_refused() -> None:
    frame = encode([Message(MessageType.VOTE, "b", "a", 1)])
    with pytest.raises(WireError, match="claims sender"):
        decode(frame, "mallory")
    with pytest.raises(WireError):
        decode(b"\xff\xff\xff garbage", "a")
    with pytest.raises(WireError):
        decode(
            encode([Message(MessageType.VOTE, "b", "a", 1)]).replace(b"\x08\x03", b"\x08\x63"), "a"
        )
