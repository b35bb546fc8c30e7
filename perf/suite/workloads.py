"""What each transaction of a round calls. A workload turns (client, index) into a call;
the client process signs them all before the timed window."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from perf.suite import referral
from perf.suite.config import Round

SUBMIT = 0  # a transaction: latency runs to its commit event
QUERY = 1  # a signed read-only Query: latency runs to its answer


class WorkloadUnavailable(Exception):
    """The workload cannot run on this build; the message says why (the round is skipped)."""


@dataclass(frozen=True)
class Call:
    kind: int  # SUBMIT or QUERY
    contract: str
    function: str
    args: dict[str, Any]
    signer: str = ""  # an identity folder name; "" = the client's own identity


def preload_key(i: int) -> str:
    return f"q-{i:06d}"


def check_available(rnd: Round) -> None:
    """Every workload runs on this build (the referral one since the suite enrolls the
    demo consortium and makes consent grants itself, perf/suite/referral.py)."""


def calls(
    rnd: Round, run_tag: str, client: int, count: int, setup: referral.Setup | None = None
) -> list[Call]:
    """`count` scheduled calls; for the referral workload `count` chains, whose 3 * count
    calls are the creates, then the receives, then the accepts (referral.Chains)."""
    check_available(rnd)
    if rnd.workload == "kv":
        return [_kv_put(f"{run_tag}-c{client}-{i}", i) for i in range(count)]
    if rnd.workload == "referral":
        return _referrals(run_tag, client, rnd.clients, count, setup)
    return _query_mix(rnd, run_tag, client, count)


def _referrals(
    run_tag: str, client: int, clients: int, count: int, setup: referral.Setup | None
) -> list[Call]:
    if setup is None or not setup.routes:
        raise WorkloadUnavailable("the referral workload needs the consortium's setup")
    routes = setup.routes
    # Each client starts at another route, so that together they spread evenly.
    first = (client * len(routes)) // max(1, clients)
    steps: list[list[Call]] = [[], [], []]
    for i in range(count):
        route = routes[(first + i) % len(routes)]
        rid = referral.referral_id(run_tag, client, i)
        for step, (signer, fn, args) in enumerate(referral.chain_calls(route, rid)):
            steps[step].append(Call(SUBMIT, "referral", fn, args, signer))
    return steps[0] + steps[1] + steps[2]


def _kv_put(key: str, i: int) -> Call:
    # A 64-character value: a small record, as in Caliper's simple-asset benchmark.
    return Call(SUBMIT, "kv", "put", {"key": key, "value": f"{i:064x}"})


def _query_mix(rnd: Round, run_tag: str, client: int, count: int) -> list[Call]:
    """Reads of preloaded keys, short range scans and a few writes, in the configured
    proportions, in a seeded order (the same for every run)."""
    rng = random.Random(f"{run_tag}-{client}")
    names = list(rnd.query_mix)
    weights = [rnd.query_mix[n] for n in names]
    out = []
    for i, name in enumerate(rng.choices(names, weights, k=count)):
        if name == "get":
            key = preload_key(rng.randrange(max(1, rnd.preload_keys)))
            out.append(Call(QUERY, "kv", "get", {"key": key}))
        elif name == "list_keys":
            prefix = preload_key(rng.randrange(max(1, rnd.preload_keys)))[:-2]
            out.append(Call(QUERY, "kv", "list_keys", {"prefix": prefix, "limit": 20}))
        elif name == "put":
            out.append(_kv_put(f"{run_tag}-c{client}-w{i}", i))
        else:
            raise ValueError(f"query_mix: unknown operation {name!r} (get, list_keys, put)")
    return out
