"""The leader's view of each follower's log, and the flow control of APPENDs to it.

A follower is in one of three states (the same scheme as etcd raft):
- PROBE: we do not know where its log ends; send one APPEND at a time and wait.
- REPLICATE: it acknowledged a match; stream APPENDs optimistically (pipelining),
  with at most `max_inflight` unacknowledged messages.
- SNAPSHOT: it needs entries we compacted; an InstallSnapshot is on its way.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "inflight",
        "is_learner",
        "match",
        "max_inflight",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "snapshot_wait",
        "stall_since",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False  # PROBE: one APPEND outstanding, wait for its answer
        self.pending_snapshot = 0
        self.snapshot_wait = 0  # heartbeat answers seen while waiting for a snapshot ack
        # Heard from in the current CheckQuorum window.
        self.recent_active = False
        self.is_learner = is_learner
        self.max_inflight = max_inflight
        self.inflight: deque[int] = deque()  # last index of each unacknowledged APPEND
        # Leader tick of the last acknowledgement, or of the first APPEND sent after all
        # earlier ones were acknowledged: how long the oldest in-flight one has waited.
        self.stall_since = 0

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            # Resume right after the snapshot if it got there; otherwise the probe will
            # be rejected and back off as usual.
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_snapshot(self, snapshot_index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.snapshot_wait = 0
        self.probe_sent = False
        self.inflight.clear()

    def maybe_update(self, index: int) -> bool:
        """A follower acknowledged entries up to `index`; False if that is old news."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def sent_entries(self, last_index: int, now: int) -> None:
        """Account for an APPEND carrying entries up to `last_index`."""
        if self.state is ProgressState.REPLICATE:
            if not self.inflight:
                self.stall_since = now
            self.next = last_index + 1
            self.inflight.append(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def free_inflight_to(self, index: int) -> None:
        inflight = self.inflight
        while inflight and inflight[0] <= index:
            inflight.popleft()

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def maybe_decr_to(self, rejected: int, next_index: int) -> bool:
        """A rejection of the APPEND after `rejected`; move `next` back to `next_index`.
        False if the rejection is stale (an older message) and must be ignored."""
        if self.state is ProgressState.SNAPSHOT:
            return False
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.become_probe()
            self.next = max(self.match + 1, min(next_index, rejected))
            return True
        if self.next - 1 != rejected:
            return False  # not an answer to our latest probe
        self.next = max(self.match + 1, min(next_index, rejected))
        self.probe_sent = False
        return True

    def __repr__(self) -> str:
        return (
            f"Progress({self.state.value}, match={self.match}, next={self.next}, "
            f"inflight={len(self.inflight)}, learner={self.is_learner})"
        )
