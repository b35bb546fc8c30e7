"""The leader's half of the Raft state machine: proposals, replication with flow
control, commit, ReadIndex and leadership transfer. Mixed into `Raft` (raft.py), which
owns the state; the attributes declared here are the ones this half uses.
"""

from __future__ import annotations

from node.consensus.config import CommitNotice, RaftConfig
from node.consensus.confighistory import ConfigHistory
from node.consensus.entry import Entry, EntryKind
from node.consensus.errors import ConfChangeRefused, NotLeader, ProposalDropped
from node.consensus.log import RaftLog
from node.consensus.membership import ConfChange, Membership, apply_conf_change, encode_membership
from node.consensus.messages import Message, MessageType, ReadState
from node.consensus.progress import Progress, ProgressState
from node.consensus.readindex import ReadIndexQueue
from node.consensus.role import Role

MT = MessageType


class LeaderMixin:
    id: str
    cfg: RaftConfig
    term: int
    lead: str | None
    role: Role
    log: RaftLog
    configs: ConfigHistory
    membership: Membership
    progress: dict[str, Progress]
    msgs: list[Message]
    read_states: list[ReadState]
    reads: ReadIndexQueue
    reads_waiting_for_term_commit: list[tuple[str, bytes]]
    lead_transferee: str | None
    noop_index: int
    pending_bcast: bool
    pending_commit: bool
    ticks: int
    stall_ticks: int
    mut_commit_prior: bool
    mut_read_no_quorum: bool
    mut_count_unsaved: bool

    def become_follower(self, term: int, lead: str | None) -> None:
        raise NotImplementedError  # in Raft

    def _track_configs(self, appended: list[Entry]) -> None:
        raise NotImplementedError  # in Raft

    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    # ---- proposals ---------------------------------------------------------------------

    def _append(self, entries: list[Entry]) -> None:
        self.log.append(entries)
        self._track_configs(entries)
        if self.mut_count_unsaved:
            own = self.progress.get(self.id)
            if own is not None:
                own.maybe_update(self.log.last_index())
            self._maybe_commit()
        # Otherwise the leader counts itself only once these are saved (on_persisted):
        # they may go out to the followers before that (thesis §10.2.1).

    def on_persisted(self) -> None:
        """The application saved more of the log: the leader's own match follows its
        durable log, never its last index, so that a committed entry is durable on a
        majority even if the leader crashes before its own write finishes."""
        if self.role is not Role.LEADER:
            return
        own = self.progress.get(self.id)
        if own is not None and own.maybe_update(self.log.stable_index()) and self._maybe_commit():
            self._commit_moved()

    def propose(self, payloads: list[bytes]) -> int:
        """Append NORMAL entries; returns the index of the last one."""
        self._check_can_propose()
        last = self.log.last_index()
        limit = self.cfg.max_uncommitted_entries
        if limit and last - self.log.committed + len(payloads) > limit:
            raise ProposalDropped(f"more than {limit} entries uncommitted; retry later")
        term = self.term
        self._append(
            [Entry(term, last + 1 + n, EntryKind.NORMAL, d) for n, d in enumerate(payloads)]
        )
        self.pending_bcast = True
        return self.log.last_index()

    def propose_conf_change(self, change: ConfChange) -> int:
        self._check_can_propose()
        if self.log.committed < self.noop_index:
            raise ConfChangeRefused("the leader has not committed an entry of its term yet")
        if self.configs.last_index() > self.log.committed:
            raise ConfChangeRefused("a previous membership change is not committed yet")
        new = apply_conf_change(self.membership, change)
        index = self.log.last_index() + 1
        self._append([Entry(self.term, index, EntryKind.CONFIG, encode_membership(new))])
        self.pending_bcast = True
        return index

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead)
        if self.lead_transferee is not None:
            raise ProposalDropped(f"leadership is moving to {self.lead_transferee}")

    def _maybe_commit(self) -> bool:
        voters = self.membership.voters
        if not voters:
            return False
        matches = sorted(
            (pr.match if (pr := self.progress.get(v)) is not None else 0 for v in voters),
            reverse=True,
        )
        index = matches[len(voters) // 2]
        log = self.log
        if index <= log.committed:
            return False
        # Figure 8: counting replicas only commits entries of the leader's own term.
        if log.term(index) != self.term and not self.mut_commit_prior:
            return False
        log.commit_to(index)
        self._on_leader_commit()
        return True

    def _on_leader_commit(self) -> None:
        log = self.log
        if self.reads_waiting_for_term_commit and log.term(log.committed) == self.term:
            waiting, self.reads_waiting_for_term_commit = self.reads_waiting_for_term_commit, []
            for requester, ctx in waiting:
                self._leader_read(requester, ctx)
        if self.id not in self.membership.voters and self.configs.last_index() <= log.committed:
            # Our own removal is committed: hand over by stepping down (thesis §4.2.2).
            self.become_follower(self.term, None)

    def flush(self) -> None:
        """Send what proposals and commits since the last Ready made sendable."""
        if not (self.pending_bcast or self.pending_commit):
            return
        everyone = self.pending_bcast or self.cfg.commit_notice is CommitNotice.EVERY
        self.pending_bcast = self.pending_commit = False
        if self.role is not Role.LEADER:
            return
        committed = self.log.committed
        for node, pr in self.progress.items():
            # SETTLED: a follower whose last sent entry is not committed yet hears of
            # this advance with its next APPEND or with the advance that commits that
            # entry (or, if an APPEND or its answer was lost, at the next heartbeat).
            if node != self.id and (everyone or pr.next - 1 <= committed):
                self._send_append(node, True)
                while self._send_append(node, False):
                    pass

    def _commit_moved(self) -> bool:
        """The commit index moved: notices go out at the next flush, unless they are
        LAZY. Returns whether they do."""
        if self.cfg.commit_notice is CommitNotice.LAZY:
            return False
        self.pending_commit = True
        return True

    def _send_append(self, to: str, send_if_empty: bool) -> bool:
        pr = self.progress[to]
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None or prev < log.first_index() - 1:
            return self._send_snapshot(to, pr)
        last = log.last_index()
        hi = min(last + 1, pr.next + self.cfg.max_entries_per_msg)
        entries = log.slice(pr.next, hi, self.cfg.max_bytes_per_msg)
        if not entries and not send_if_empty:
            return False
        self._send(
            Message(
                MT.APPEND, to, self.id, self.term, prev_term, prev, tuple(entries), log.committed
            )
        )
        if entries:
            pr.sent_entries(entries[-1].index, self.ticks)
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: str, pr: Progress) -> bool:
        snap = self.log.storage.snapshot()
        pr.become_snapshot(snap.index)
        self._send(Message(MT.SNAPSHOT, to, self.id, self.term, snapshot=snap))
        return True

    def _bcast_heartbeat(self, ctx: bytes) -> None:
        committed = self.log.committed
        for node, pr in self.progress.items():
            if node != self.id:
                self._send(
                    Message(
                        MT.HEARTBEAT,
                        node,
                        self.id,
                        self.term,
                        commit=min(pr.match, committed),
                        context=ctx,
                    )
                )

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.sender)
        t = m.type
        if t is MT.READ_INDEX:
            self._leader_read(m.sender, m.context)
            return
        if pr is None:
            return
        if t is MT.APPEND_RESP:
            pr.recent_active = True
            if m.reject:
                self._handle_reject(m, pr)
            else:
                self._handle_append_ack(m, pr)
        elif t is MT.HEARTBEAT_RESP:
            pr.recent_active = True
            self._handle_heartbeat_ack(m, pr)

    def _handle_reject(self, m: Message, pr: Progress) -> None:
        if m.hint_term == 0:
            next_index = m.reject_hint
        else:
            j = self.log.last_index_of_term(m.hint_term, m.index)
            next_index = j + 1 if j is not None else m.reject_hint
        if pr.maybe_decr_to(m.index, next_index):
            self._send_append(m.sender, True)

    def _handle_append_ack(self, m: Message, pr: Progress) -> None:
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        pr.stall_since = self.ticks
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT:
            if pr.match >= pr.pending_snapshot:
                pr.become_replicate()
        else:
            pr.free_inflight_to(m.index)
        # A notice tells this follower too (SETTLED: if its last sent entry is committed;
        # otherwise the advance that commits that entry will).
        told = self._maybe_commit() and self._commit_moved()
        if self.role is not Role.LEADER:
            return  # the commit removed us
        if was_paused and not told:
            # It may have missed a commit index while paused: one APPEND even if empty.
            self._send_append(m.sender, True)
        while self._send_append(m.sender, False):
            pass
        if m.sender == self.lead_transferee and pr.match == self.log.last_index():
            self._send(Message(MT.TIMEOUT_NOW, m.sender, self.id, self.term))

    def _handle_heartbeat_ack(self, m: Message, pr: Progress) -> None:
        if pr.state is ProgressState.REPLICATE:
            # The follower answers heartbeats but has acknowledged none of the APPENDs in
            # flight for a while: they were lost. Probe from its match again.
            if pr.inflight and self.ticks - pr.stall_since >= self.stall_ticks:
                pr.become_probe()
        elif pr.state is ProgressState.SNAPSHOT:
            pr.snapshot_wait += 1
            if pr.snapshot_wait * self.cfg.heartbeat_tick >= self.cfg.election_tick:
                pr.become_probe()  # the snapshot was probably lost: find out again
        else:
            pr.probe_sent = False
        if pr.match < self.log.last_index():
            self._send_append(m.sender, True)
        if m.context:
            voters = self.membership.voters
            for ctx, req in self.reads.ack(m.context, m.sender, voters, self.membership.quorum()):
                self._answer_read(req.requester, req.index, ctx)

    # ---- ReadIndex ---------------------------------------------------------------------

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read index; the answer comes as a ReadState in a
        later Ready (at this node), identified by `context`, which must be unique."""
        if self.role is Role.LEADER:
            self._leader_read(self.id, context)
        elif self.lead is not None:
            self._send(Message(MT.READ_INDEX, self.lead, self.id, self.term, context=context))
        else:
            raise NotLeader(None)

    def _leader_read(self, requester: str, ctx: bytes) -> None:
        log = self.log
        if log.term(log.committed) != self.term:
            # Until an entry of our term commits we may not know the latest commit index.
            self.reads_waiting_for_term_commit.append((requester, ctx))
            return
        if self.membership.voters <= {self.id} or self.mut_read_no_quorum:
            self._answer_read(requester, log.committed, ctx)
            return
        self.reads.add(ctx, log.committed, requester, self.id)
        self._bcast_heartbeat(ctx)

    def _answer_read(self, requester: str, index: int, ctx: bytes) -> None:
        if requester == self.id:
            self.read_states.append(ReadState(index, ctx))
        else:
            self._send(
                Message(MT.READ_INDEX_RESP, requester, self.id, self.term, index=index, context=ctx)
            )

    # ---- leadership transfer -----------------------------------------------------------

    def transfer_leader(self, target: str) -> None:
        """Hand leadership to `target` once its log is complete (thesis §3.10).
        Proposals are refused until it happens or an election timeout passes."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.lead)
        if target == self.id or target == self.lead_transferee:
            return
        if target not in self.membership.voters:
            raise ConfChangeRefused(f"{target} is not a voter")
        self.lead_transferee = target
        self.election_elapsed = 0
        pr = self.progress[target]
        if pr.match == self.log.last_index():
            self._send(Message(MT.TIMEOUT_NOW, target, self.id, self.term))
        else:
            self._send_append(target, True)

    # ---- feedback from the transport ---------------------------------------------------

    def report_unreachable(self, node: str) -> None:
        pr = self.progress.get(node)
        if pr is not None and pr.state is ProgressState.REPLICATE:
            pr.become_probe()

    def report_snapshot(self, node: str, ok: bool) -> None:
        pr = self.progress.get(node)
        if pr is not None and pr.state is ProgressState.SNAPSHOT:
            if not ok:
                pr.pending_snapshot = 0
            pr.become_probe()
            pr.probe_sent = True  # wait for the follower's answer or the next heartbeat
