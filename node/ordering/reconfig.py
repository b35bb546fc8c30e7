"""From the consenter set in chain state to Raft configuration entries (DESIGN §4), sans-IO.

A governance transaction decides the set (node/execution/consenter_gov.py); the Raft
leader then moves the Raft configuration towards it one single-server change at a time:

1. a node in the set that Raft does not know is added as a learner (it receives the log
   but does not count for quorums, so a slow catch-up costs no availability);
2. a learner in the set is promoted once it holds the log up to the commit index (less
   `promote_lag` entries, so that a steady load does not keep it a learner forever);
3. a member that is no longer in the set is removed.

The plan is a pure function of (chain set, Raft membership, replication progress), so it
is idempotent and crash-safe: whichever node leads next recomputes it and carries on
where its predecessor stopped. The leader asks only when it has applied its log at
least up to the configuration in force (otherwise its chain state may predate the
change that configuration made, and it would undo it), and the Raft core refuses a
change while another is uncommitted or before the leader's no-op commits.
"""

from __future__ import annotations

from collections.abc import Callable

from node.consensus import ConfChange, ConfChangeType, Membership

PROMOTE_LAG = 32


def next_change(
    desired: frozenset[str],
    membership: Membership,
    match: Callable[[str], int | None],
    committed: int,
    promote_lag: int = PROMOTE_LAG,
) -> ConfChange | None:
    """The next configuration change towards `desired`, or None when there is nothing
    to do now. `match(node)` is the leader's replication progress for a member."""
    for node in sorted(desired - membership.members):
        return ConfChange(ConfChangeType.ADD_LEARNER, node)
    for node in sorted(desired & membership.learners):
        matched = match(node)
        if matched is not None and matched > 0 and matched + promote_lag >= committed:
            return ConfChange(ConfChangeType.PROMOTE_LEARNER, node)
    for node in sorted(membership.members - desired):
        if membership.voters == {node}:
            continue  # never the last voter (governance refuses this too)
        return ConfChange(ConfChangeType.REMOVE_NODE, node)
    return None
