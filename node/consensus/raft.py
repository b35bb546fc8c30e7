"""The Raft state machine of one consensus member: roles, elections, the follower side.

Sans-IO, in the shape of etcd raft: `step(message)` and `tick()` change state and queue
outgoing messages in `msgs`; the wrapper in rawnode.py hands those out in a `Ready`
together with what must be persisted first. Nothing here does IO, reads a clock or
draws randomness other than from the injected `random.Random`.

The leader's half (replication, commit, ReadIndex, transfer) is in leader.py, mixed in;
between them the two files hold every state transition.

Rules beyond the Raft paper that this core follows (all as in the Raft thesis):
- PreVote (§9.6): a would-be candidate first asks whether it could win, without
  raising its term, so a node cut off from the cluster does not inflate terms.
- CheckQuorum (§6.2): a leader that has not heard from a quorum within an election
  timeout steps down, and followers that heard from a leader within one ignore votes
  (a leader lease), so a node rejoining after a partition cannot depose a live leader.
- A new leader appends a no-op entry of its term; entries of older terms commit only
  through it (§5.4.2, Figure 8). Membership changes and ReadIndex wait for it too.
- Configuration entries take effect when appended, one uncommitted at a time (§4.1).
"""

from __future__ import annotations

import random

from node.consensus.config import Mutation, RaftConfig
from node.consensus.confighistory import ConfigHistory
from node.consensus.entry import Entry, EntryKind, HardState
from node.consensus.leader import LeaderMixin
from node.consensus.log import RaftLog
from node.consensus.membership import Membership, decode_membership
from node.consensus.messages import TRANSFER_CONTEXT, Message, MessageType, ReadState
from node.consensus.progress import Progress
from node.consensus.readindex import ReadIndexQueue
from node.consensus.role import Role
from node.consensus.storage import Storage

MT = MessageType


class Raft(LeaderMixin):
    def __init__(self, config: RaftConfig, storage: Storage, rng: random.Random) -> None:
        self.id = config.id
        self.cfg = config
        self.rng = rng
        self.log = RaftLog(storage, config.applied)
        hs = storage.initial_state()
        self.term = hs.term
        self.vote: str | None = hs.vote
        self.lead: str | None = None
        self.role = Role.FOLLOWER
        self.configs = ConfigHistory.from_storage(storage)
        self.membership: Membership = self.configs.current()
        self.progress: dict[str, Progress] = {}
        self.votes: dict[str, bool] = {}
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.reads = ReadIndexQueue()
        self.reads_waiting_for_term_commit: list[tuple[str, bytes]] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = config.election_tick
        self.lead_transferee: str | None = None
        self.noop_index = 0
        self.pending_bcast = False
        self.pending_commit = False
        self.ticks = 0  # ticks seen by this incarnation; only differences matter
        self.stall_ticks = max(2 * config.heartbeat_tick, config.election_tick // 2)
        muts = config.mutations
        self.mut_commit_prior = Mutation.COMMIT_PRIOR_TERM_BY_COUNTING in muts
        self.mut_stale_vote = Mutation.VOTE_FOR_STALE_LOG in muts
        self.mut_accept_stale = Mutation.ACCEPT_STALE_LEADER in muts
        self.mut_read_no_quorum = Mutation.READ_WITHOUT_QUORUM in muts
        self.mut_count_unsaved = Mutation.COUNT_LEADER_BEFORE_PERSIST in muts
        self.become_follower(self.term, None)

    # ---- small queries ---------------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def promotable(self) -> bool:
        return self.id in self.membership.voters

    # ---- role changes ----------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.lead = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self.rng.randrange(
            self.cfg.election_tick, 2 * self.cfg.election_tick
        )
        self.lead_transferee = None
        self.votes = {}
        self.progress = {}
        self.reads.clear()
        self.reads_waiting_for_term_commit = []
        self.pending_bcast = False
        self.pending_commit = False

    def become_follower(self, term: int, lead: str | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.lead = lead

    def _become_pre_candidate(self) -> None:
        # Deliberately leaves term and vote alone: that is the point of PreVote.
        self.role = Role.PRE_CANDIDATE
        self.votes = {}
        self.lead = None
        self.election_elapsed = 0
        self.randomized_timeout = self.rng.randrange(
            self.cfg.election_tick, 2 * self.cfg.election_tick
        )

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.lead = self.id
        last = self.log.last_index()
        for node in sorted(self.membership.members):
            self.progress[node] = Progress(
                last + 1, self.cfg.max_inflight, node in self.membership.learners
            )
        own = self.progress.get(self.id)
        if own is not None:
            # Only what is durable here counts toward commits (see on_persisted).
            own.match = last if self.mut_count_unsaved else self.log.stable_index()
            own.become_replicate()
        self.noop_index = last + 1
        self._append([Entry(self.term, last + 1, EntryKind.NOOP)])
        self.pending_bcast = True

    # ---- time ------------------------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        self.election_elapsed += 1
        if self.role is not Role.LEADER:
            if self.election_elapsed >= self.randomized_timeout and self.promotable():
                self.campaign()
            return
        self.heartbeat_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                self.become_follower(self.term, None)
                return
            self.lead_transferee = None  # a transfer that took a whole timeout failed
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(self.reads.last_context())

    def _quorum_active(self) -> bool:
        active = 0
        for node in self.membership.voters:
            pr = self.progress.get(node)
            if node == self.id or (pr is not None and pr.recent_active):
                active += 1
        for node, pr in self.progress.items():
            pr.recent_active = node == self.id
        return active >= self.membership.quorum()

    # ---- elections -------------------------------------------------------------------

    def campaign(self, transfer: bool = False) -> None:
        """Start an election: PreVote first, unless this is a leadership transfer."""
        self._campaign(self.cfg.pre_vote and not transfer, transfer)

    def _campaign(self, pre_vote: bool, transfer: bool) -> None:
        if self.role is Role.LEADER or not self.promotable():
            return
        if pre_vote:
            self._become_pre_candidate()
            vote_type, vote_term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, vote_term = MT.VOTE, self.term
        if self._record_vote(self.id, True):
            return
        ctx = TRANSFER_CONTEXT if transfer else b""
        last, last_term = self.log.last_index(), self.log.last_term()
        for node in sorted(self.membership.voters):
            if node != self.id:
                self._send(
                    Message(vote_type, node, self.id, vote_term, last_term, last, context=ctx)
                )

    def _record_vote(self, node: str, granted: bool) -> bool:
        """Tally a vote; on a decision act on it and return True."""
        self.votes.setdefault(node, granted)
        voters = self.membership.voters
        yes = sum(1 for n, g in self.votes.items() if g and n in voters)
        no = sum(1 for n, g in self.votes.items() if not g and n in voters)
        quorum = self.membership.quorum()
        if yes >= quorum:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign(pre_vote=False, transfer=False)  # PreVote won: now for real
            else:
                self._become_leader()
            return True
        if no > len(voters) - quorum:
            self.become_follower(self.term, None)
            return True
        return False

    def _handle_vote(self, m: Message) -> None:
        pre = m.type is MT.PRE_VOTE
        can_vote = (
            self.vote == m.sender
            or (self.vote is None and self.lead is None)
            or (pre and m.term > self.term)
        )
        resp = MT.PRE_VOTE_RESP if pre else MT.VOTE_RESP
        if can_vote and (self.mut_stale_vote or self.log.is_up_to_date(m.index, m.log_term)):
            # A granted PreVote answers in the candidate's future term so that it counts.
            self._send(Message(resp, m.sender, self.id, m.term))
            if not pre:
                self.election_elapsed = 0
                self.vote = m.sender
        else:
            self._send(Message(resp, m.sender, self.id, self.term, reject=True))

    # ---- the message entry point -----------------------------------------------------

    def step(self, m: Message) -> None:
        if m.term > self.term:
            if m.type is MT.VOTE or m.type is MT.PRE_VOTE:
                in_lease = (
                    self.cfg.check_quorum
                    and self.lead is not None
                    and self.election_elapsed < self.cfg.election_tick
                )
                if in_lease and m.context != TRANSFER_CONTEXT:
                    return  # we heard from a live leader recently: ignore the disruptor
            if m.type is MT.PRE_VOTE or (m.type is MT.PRE_VOTE_RESP and not m.reject):
                pass  # PreVote never moves terms
            elif m.type in (MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT):
                self.become_follower(m.term, m.sender)
            else:
                self.become_follower(m.term, None)
        elif m.term < self.term:
            if m.type is MT.APPEND and self.mut_accept_stale:
                self._handle_append(m)
            elif m.type is MT.APPEND or m.type is MT.HEARTBEAT:
                # A stale leader (or we inflated our term while cut off, and CheckQuorum
                # keeps the cluster from adopting it): answering with our term makes
                # whichever is behind catch up.
                self._send(Message(MT.APPEND_RESP, m.sender, self.id, self.term))
            elif m.type is MT.PRE_VOTE:
                self._send(Message(MT.PRE_VOTE_RESP, m.sender, self.id, self.term, reject=True))
            return

        if m.type is MT.VOTE or m.type is MT.PRE_VOTE:
            self._handle_vote(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t is MT.APPEND or t is MT.HEARTBEAT or t is MT.SNAPSHOT:
            self.election_elapsed = 0
            self.lead = m.sender
            if t is MT.APPEND:
                self._handle_append(m)
            elif t is MT.HEARTBEAT:
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot(m)
        elif t is MT.TIMEOUT_NOW:
            self.campaign(transfer=True)
        elif t is MT.READ_INDEX_RESP:
            if not m.reject:
                self.read_states.append(ReadState(m.index, m.context))
        elif t is MT.READ_INDEX:  # the sender thinks we lead; we do not
            self._send(
                Message(
                    MT.READ_INDEX_RESP, m.sender, self.id, self.term, reject=True, context=m.context
                )
            )

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t is MT.APPEND or t is MT.HEARTBEAT or t is MT.SNAPSHOT:
            # Someone won this term (or a later one): follow them.
            self.become_follower(m.term, m.sender)
            self._step_follower(m)
        elif (t is MT.PRE_VOTE_RESP and self.role is Role.PRE_CANDIDATE) or (
            t is MT.VOTE_RESP and self.role is Role.CANDIDATE
        ):
            self._record_vote(m.sender, not m.reject)

    # ---- follower side of replication ------------------------------------------------

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._send(Message(MT.APPEND_RESP, m.sender, self.id, self.term, index=log.committed))
            return
        res = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if res is not None:
            last_new, appended = res
            if appended:
                self._track_configs(appended)
            self._send(Message(MT.APPEND_RESP, m.sender, self.id, self.term, index=last_new))
            return
        # Reject with a hint so that the leader skips a whole term per round trip instead
        # of one entry: our term at m.index and the first index we hold of that term.
        last = log.last_index()
        if m.index > last:
            hint_term, hint = 0, last + 1
        else:
            hint_term = log.term(m.index) or 0
            hint = log.first_index_of_term(m.index)
        self._send(
            Message(
                MT.APPEND_RESP,
                m.sender,
                self.id,
                self.term,
                index=m.index,
                reject=True,
                reject_hint=hint,
                hint_term=hint_term,
            )
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self._send(Message(MT.HEARTBEAT_RESP, m.sender, self.id, self.term, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        assert snap is not None
        log = self.log
        if snap.index <= log.committed:
            pass  # old news
        elif log.match_term(snap.index, snap.term):
            log.commit_to(snap.index)  # we hold the entries already: just commit them
        else:
            log.restore(snap)
            self.configs.restore(snap.meta.index, snap.meta.membership)
            self._set_membership(snap.meta.membership)
        self._send(Message(MT.APPEND_RESP, m.sender, self.id, self.term, index=log.committed))

    # ---- membership --------------------------------------------------------------------

    def _track_configs(self, appended: list[Entry]) -> None:
        """Appended entries (which replaced everything from appended[0].index on) may drop
        or add configuration entries; the latest one in the log is in force."""
        changed = self.configs.truncate_from(appended[0].index)
        for e in appended:
            if e.kind is EntryKind.CONFIG:
                self.configs.add(e.index, decode_membership(e.data))
                changed = True
        if changed:
            self._set_membership(self.configs.current())

    def _set_membership(self, m: Membership) -> None:
        self.membership = m
        if self.role is Role.LEADER:
            last = self.log.last_index()
            for node in sorted(m.members):
                pr = self.progress.get(node)
                if pr is None:
                    self.progress[node] = Progress(last + 1, self.cfg.max_inflight, False)
                    pr = self.progress[node]
                pr.is_learner = node in m.learners
            for node in list(self.progress):
                if node not in m.members:
                    del self.progress[node]
            if self.lead_transferee is not None and self.lead_transferee not in m.voters:
                self.lead_transferee = None
            # A smaller quorum may commit more right away.
            if self._maybe_commit():
                self.pending_bcast = True
        elif self.role is not Role.FOLLOWER and self.id not in m.voters:
            self.become_follower(self.term, None)
