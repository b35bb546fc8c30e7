"""Rate controllers as send schedules: each client gets the offsets (seconds from the
round's start) at which its pre-signed transactions are due. Open loop: the offsets do
not depend on answers; only the `max` controller is bounded by a window of transactions
in flight."""

from __future__ import annotations

from dataclasses import dataclass

from perf.suite.config import Round


@dataclass(frozen=True)
class Schedule:
    offsets: list[float]  # non-decreasing, seconds after t0
    window: int  # at most this many sent but unfinished; 0: unbounded (open loop)
    deadline_s: float  # nothing is sent after t0 + deadline_s


def client_schedule(rnd: Round, client: int) -> Schedule:
    """This client's share of the round: the total rate split evenly over the clients,
    each client's sends spread so that the clients interleave."""
    share = rnd.target_tps() / rnd.clients
    if rnd.workload == "referral":
        share /= 3  # the schedule is of chains: create, then receive and accept on commit
    count = max(1, round(share * rnd.duration_s))
    if rnd.rate.controller == "max":
        window = max(1, rnd.rate.in_flight // rnd.clients)
        return Schedule([0.0] * count, window, rnd.duration_s)
    interval = 1.0 / share
    phase = interval * client / rnd.clients
    return Schedule([phase + i * interval for i in range(count)], 0, rnd.duration_s)
