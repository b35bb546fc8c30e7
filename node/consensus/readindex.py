"""The leader's queue of ReadIndex requests waiting for a heartbeat quorum (thesis §6.4).

A request records the commit index when it arrived. Once a quorum of voters has
answered a heartbeat that carried its context, the leader knows it was still leader
when the request arrived, so reading at that index is linearizable. Requests are
confirmed in arrival order: an acknowledgement of a later context also confirms every
earlier one, because those heartbeats went out before it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class PendingRead:
    index: int
    requester: str
    acks: set[str] = field(default_factory=set)


class ReadIndexQueue:
    def __init__(self) -> None:
        # dicts keep insertion order, which is the confirmation order.
        self._pending: dict[bytes, PendingRead] = {}

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, context: bytes, index: int, requester: str, leader: str) -> None:
        if context in self._pending:
            return  # a retry of a request we already hold
        self._pending[context] = PendingRead(index, requester, {leader})

    def last_context(self) -> bytes:
        return next(reversed(self._pending)) if self._pending else b""

    def ack(
        self, context: bytes, voter: str, voters: frozenset[str], quorum: int
    ) -> list[tuple[bytes, PendingRead]]:
        """Record `voter`'s answer; return the requests now confirmed, oldest first."""
        req = self._pending.get(context)
        if req is None:
            return []
        req.acks.add(voter)
        if len(req.acks & voters) < quorum:
            return []
        done: list[tuple[bytes, PendingRead]] = []
        for ctx in list(self._pending):
            done.append((ctx, self._pending.pop(ctx)))
            if ctx == context:
                break
        return done

    def clear(self) -> None:
        self._pending.clear()
