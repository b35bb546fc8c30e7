"""Safety properties, checked incrementally after every simulated step.

- Election safety: at most one leader per term.
- Log matching: two logs with an entry of the same index and term hold the same entry
  there and agree on the term before it (so, by induction, on the whole prefix).
- Leader completeness: a new leader holds the latest entry committed anywhere so far;
  and, checked ahead of any election, no node that lacks that entry has a log that a
  quorum of voters would consider up to date (or it could be elected and erase it).
- State machine safety: every node commits (and applies) the same entry at an index;
  a committed entry never changes; snapshots agree with what was applied.
- Linearizable reads: a ReadIndex answer is at least the highest index committed
  anywhere when the read was requested.
- Commit monotonicity: a node's commit index never decreases while it runs, and after a
  restart it is at least what its state machine durably applied.
"""

from __future__ import annotations

from node.consensus.entry import Entry, EntryKind
from node.consensus.log import RaftLog

_Key = tuple[int, int]


class SafetyChecker:
    def __init__(self, max_violations: int = 20) -> None:
        self.violations: list[str] = []
        self.max_violations = max_violations
        self.leader_of_term: dict[int, str] = {}
        self.leader_elections = 0
        # (index, term) -> (kind, data, term of the entry before it), for log matching.
        self.seen: dict[_Key, tuple[int, bytes, int]] = {}
        self.committed: dict[int, Entry] = {}
        self.max_committed = 0
        self.normal_commits = 0
        self.committed_configs: list[int] = []  # indexes of committed CONFIG entries
        self.app_state: dict[int, bytes] = {}  # applied index -> state machine digest

    def fail(self, now: int, text: str) -> None:
        if len(self.violations) < self.max_violations:
            self.violations.append(f"tick {now}: {text}")

    def on_leader(self, now: int, node: str, term: int, log: RaftLog) -> None:
        holder = self.leader_of_term.get(term)
        if holder is not None:
            if holder != node:
                self.fail(now, f"two leaders in term {term}: {holder} and {node}")
            return
        self.leader_of_term[term] = node
        self.leader_elections += 1
        top = self.max_committed
        if top == 0:
            return
        if top > log.last_index():
            self.fail(now, f"leader {node} (term {term}) lacks committed index {top}")
            return
        t = log.term(top)
        if t is not None and t != self.committed[top].term:
            self.fail(now, f"leader {node} (term {term}) has term {t} at committed {top}")

    def on_persist(self, now: int, node: str, entries: tuple[Entry, ...], log: RaftLog) -> None:
        prev_term = log.term(entries[0].index - 1)
        seen = self.seen
        for e in entries:
            key = (e.index, e.term)
            if prev_term is not None:
                # prev_term is None only right after a snapshot boundary: skip that link.
                got = seen.get(key)
                if got is None:
                    seen[key] = (e.kind, e.data, prev_term)
                elif got != (e.kind, e.data, prev_term):
                    self.fail(now, f"log matching broken at {key} on {node}")
            prev_term = e.term

    def on_commit(self, now: int, node: str, old: int, new: int, log: RaftLog) -> None:
        if new < old:
            self.fail(now, f"{node} commit index went back from {old} to {new}")
            return
        lo = max(old + 1, log.first_index())
        if lo <= new:
            for e in log.slice(lo, new + 1):
                self._commit_entry(now, node, e)

    def _commit_entry(self, now: int, node: str, e: Entry) -> None:
        have = self.committed.get(e.index)
        if have is None:
            self.committed[e.index] = e
            if e.index > self.max_committed:
                self.max_committed = e.index
            if e.kind is EntryKind.NORMAL:
                self.normal_commits += 1
            elif e.kind is EntryKind.CONFIG:
                self.committed_configs.append(e.index)
        elif have != e:
            self.fail(
                now,
                f"{node} committed {e.term}/{e.kind.name} at {e.index}, "
                f"others committed term {have.term}",
            )

    def electable_without(
        self,
        now: int,
        voters: frozenset[str],
        logs: dict[str, tuple[int, int, int | None]],
    ) -> None:
        """`logs` maps each live node to (last index, last term, term at the latest
        committed index or None if compacted). Fails if a node lacking the latest
        committed entry would get the votes of a quorum by the log comparison."""
        top = self.max_committed
        if top == 0:
            return
        want = self.committed[top].term
        quorum = len(voters) // 2 + 1
        for node, (last, last_term, t) in logs.items():
            if last >= top and (t is None or t == want):
                continue  # it holds the entry (or a snapshot past it)
            grants = 0
            for v in voters:
                vlog = logs.get(v)
                if vlog is None:
                    continue
                if last_term > vlog[1] or (last_term == vlog[1] and last >= vlog[0]):
                    grants += 1
            if grants >= quorum:
                self.fail(
                    now,
                    f"{node} lacks committed index {top} (term {want}) but the "
                    f"logs of {grants} of {len(voters)} voters would elect it",
                )
                return

    def on_read(self, now: int, node: str, index: int, required: int) -> None:
        if index < required:
            self.fail(
                now,
                f"{node} got read index {index}, but {required} was committed "
                f"before the read was requested: stale read",
            )

    def on_snapshot(self, now: int, node: str, index: int, term: int) -> None:
        have = self.committed.get(index)
        if have is not None and have.term != term:
            self.fail(
                now,
                f"{node} installed a snapshot at {index} of term {term}, "
                f"committed there is term {have.term}",
            )

    def on_applied(self, now: int, node: str, index: int, digest: bytes) -> None:
        have = self.app_state.setdefault(index, digest)
        if have != digest:
            self.fail(now, f"{node} state machine differs after applying index {index}")
