"""Cluster membership: who votes, who only learns, and how a change is encoded.

Changes are single-server (Raft thesis §4.1): one voter added or removed, one learner
added, or one learner promoted, per configuration entry. Any two majorities of
configurations that differ by one voter overlap, which is what keeps this safe without
joint consensus, provided only one change is uncommitted at a time.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass

from node.consensus.errors import ConfChangeRefused


@dataclass(frozen=True, slots=True)
class Membership:
    voters: frozenset[str]
    learners: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.voters & self.learners:
            raise ValueError(f"nodes both voter and learner: {sorted(self.voters & self.learners)}")

    @property
    def members(self) -> frozenset[str]:
        return self.voters | self.learners

    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    @staticmethod
    def of(voters: Iterable[str], learners: Iterable[str] = ()) -> Membership:
        return Membership(frozenset(voters), frozenset(learners))


class ConfChangeType(enum.Enum):
    ADD_VOTER = "add_voter"  # a brand-new voter (prefer ADD_LEARNER then PROMOTE_LEARNER)
    ADD_LEARNER = "add_learner"
    PROMOTE_LEARNER = "promote_learner"
    REMOVE_NODE = "remove_node"  # removes a voter or a learner


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    node_id: str


def apply_conf_change(current: Membership, change: ConfChange) -> Membership:
    """The membership after `change`; raises ConfChangeRefused for a change that does
    not make sense against `current` (so nothing is appended)."""
    node = change.node_id
    voters, learners = current.voters, current.learners
    match change.type:
        case ConfChangeType.ADD_VOTER:
            if node in voters:
                raise ConfChangeRefused(f"{node} is already a voter")
            if node in learners:
                raise ConfChangeRefused(f"{node} is a learner: use PROMOTE_LEARNER")
            return Membership(voters | {node}, learners)
        case ConfChangeType.ADD_LEARNER:
            if node in current.members:
                raise ConfChangeRefused(f"{node} is already a member")
            return Membership(voters, learners | {node})
        case ConfChangeType.PROMOTE_LEARNER:
            if node not in learners:
                raise ConfChangeRefused(f"{node} is not a learner")
            return Membership(voters | {node}, learners - {node})
        case ConfChangeType.REMOVE_NODE:
            if node not in current.members:
                raise ConfChangeRefused(f"{node} is not a member")
            if voters == {node}:
                raise ConfChangeRefused(f"{node} is the last voter")
            return Membership(voters - {node}, learners - {node})
    raise AssertionError(change.type)  # pragma: no cover


def encode_membership(m: Membership) -> bytes:
    # Sorted JSON: deterministic bytes, readable in a log dump, and never pickle.
    return json.dumps(
        {"voters": sorted(m.voters), "learners": sorted(m.learners)}, separators=(",", ":")
    ).encode()


def decode_membership(data: bytes) -> Membership:
    obj = json.loads(data)
    return Membership(frozenset(obj["voters"]), frozenset(obj["learners"]))
