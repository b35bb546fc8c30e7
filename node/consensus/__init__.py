"""Raft consensus for MedLedger: a sans-IO core (rawnode.py, raft.py), its storage
(storage.py, leveldb_storage.py) and a deterministic simulator (sim/)."""

from node.consensus.config import CommitNotice, Mutation, RaftConfig
from node.consensus.entry import Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from node.consensus.errors import (
    CompactedError,
    ConfChangeRefused,
    NotLeader,
    ProposalDropped,
    RaftError,
    StorageCorrupted,
    UnavailableError,
)
from node.consensus.membership import ConfChange, ConfChangeType, Membership
from node.consensus.messages import Message, MessageType, ReadState
from node.consensus.rawnode import RawNode, Ready, SoftState, Status
from node.consensus.role import Role
from node.consensus.storage import MemoryStorage, Storage

__all__ = [
    "CommitNotice",
    "CompactedError",
    "ConfChange",
    "ConfChangeRefused",
    "ConfChangeType",
    "Entry",
    "EntryKind",
    "HardState",
    "Membership",
    "MemoryStorage",
    "Message",
    "MessageType",
    "Mutation",
    "NotLeader",
    "ProposalDropped",
    "RaftConfig",
    "RaftError",
    "RawNode",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "Status",
    "Storage",
    "StorageCorrupted",
    "UnavailableError",
]
