"""Errors raised by the Raft core and its storage. Each says what to do about it."""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every error in node.consensus."""


class NotLeader(RaftError):
    """The request must go to the leader; `leader` is our best guess (None: unknown)."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the leader; current leader: {leader or 'unknown'}")
        self.leader = leader


class ProposalDropped(RaftError):
    """The leader cannot take proposals right now (leadership transfer in progress,
    or it is being removed); retry shortly, possibly at another node."""


class ConfChangeRefused(RaftError):
    """A membership change was refused: one is still uncommitted, the leader has not
    committed an entry of its term yet, or the change does not fit the membership."""


class CompactedError(RaftError):
    """The requested index lies at or below the storage's snapshot; send a snapshot."""


class UnavailableError(RaftError):
    """The requested index is beyond the last stored entry."""


class StorageCorrupted(RaftError):
    """Stored Raft state cannot be decoded; the node must stop and be repaired."""
