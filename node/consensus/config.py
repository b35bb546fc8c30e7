"""Configuration of one Raft core, including the test-only mutation switches."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class CommitNotice(enum.Enum):
    """How a leader tells followers that the commit index moved (they apply only what
    they know is committed, so this decides when a follower's clients hear back)."""

    # An APPEND (empty if need be) to every follower at each advance. Its answer also
    # repairs a lost APPEND or acknowledgement at once. Costs a message each way and a
    # follower Ready and write per follower per advance. The node's choice.
    EVERY = "every"
    # The same, but only to followers whose last sent entry is committed (none
    # uncommitted in flight); the others hear of the advance with their next APPEND or
    # with the advance that commits their last sent entry. Without pipelining this is
    # EVERY. Under pipelined load it drops most commit-only APPENDs (perf/raft: ~17 %
    # fewer follower Readies), and a follower learns a commit up to one commit round
    # later; a lost APPEND or acknowledgement then waits for the next heartbeat.
    SETTLED = "settled"
    # Never: followers learn commits from the next APPEND or heartbeat (when idle, up to
    # a heartbeat interval later).
    LAZY = "lazy"


class Mutation(enum.Enum):
    """Deliberately broken rules, for mutation tests of the simulator only.

    Each names the rule it breaks. Production code never sets one; the core reads the
    set into plain booleans once, so the normal path pays one attribute test at most.
    """

    # Commit an entry of an earlier term because a majority holds it (Raft Figure 8).
    COMMIT_PRIOR_TERM_BY_COUNTING = "commit_prior_term_by_counting"
    # Grant (pre-)votes without checking that the candidate's log is up to date (§5.4.1).
    VOTE_FOR_STALE_LOG = "vote_for_stale_log"
    # Tell the application that nothing in a Ready needs an fsync, so messages that
    # depend on new entries and votes leave before those are durable.
    SEND_BEFORE_PERSIST = "send_before_persist"
    # Count the leader's own entries toward the commit quorum as soon as it appends
    # them, before its (asynchronous) save made them durable: a "committed" entry may
    # then exist on a minority of disks (thesis §10.2.1 counts the leader once saved).
    COUNT_LEADER_BEFORE_PERSIST = "count_leader_before_persist"
    # Accept APPEND from a leader of an older term (stale leaders overwrite logs).
    ACCEPT_STALE_LEADER = "accept_stale_leader"
    # Answer ReadIndex from the leader's commit index without confirming leadership
    # with a heartbeat quorum (a deposed leader serves stale reads).
    READ_WITHOUT_QUORUM = "read_without_quorum"


@dataclass(frozen=True, slots=True)
class RaftConfig:
    id: str
    # Ticks without hearing from a leader before campaigning; the actual timeout is drawn
    # from [election_tick, 2 * election_tick) so that split votes resolve (§5.2).
    election_tick: int = 10
    heartbeat_tick: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    # Replication flow control: at most this many entries / bytes per APPEND, and at most
    # `max_inflight` APPENDs outstanding per follower while pipelining.
    max_entries_per_msg: int = 64
    max_bytes_per_msg: int = 1 << 20
    max_inflight: int = 32
    # The leader refuses proposals while this many entries are uncommitted (0: no
    # limit), so that a leader cut off from its quorum does not pile up a log that its
    # successor must ship before anything new commits.
    max_uncommitted_entries: int = 0
    # When followers hear that the commit index moved (see CommitNotice).
    commit_notice: CommitNotice = CommitNotice.EVERY
    # Bound on the bytes of committed entries handed out in one Ready.
    max_committed_bytes_per_ready: int = 8 << 20
    # The application's durable applied index at start-up: committed entries above it
    # are handed out again (they were committed but their effects may be lost).
    applied: int = 0
    mutations: frozenset[Mutation] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.heartbeat_tick <= 0 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 0 < heartbeat_tick < election_tick")
        if self.max_inflight <= 0 or self.max_entries_per_msg <= 0:
            raise ValueError("max_inflight and max_entries_per_msg must be positive")
