"""The roles a Raft member can be in."""

from __future__ import annotations

import enum


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"  # asking whether it could win, term unchanged (PreVote)
    CANDIDATE = "candidate"
    LEADER = "leader"
