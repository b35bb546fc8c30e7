"""What each transaction of a round calls. A workload turns (client, index) into a call;
the client process signs them all before the timed window."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from perf.suite.config import Round

SUBMIT = 0  # a transaction: latency runs to its commit event
QUERY = 1  # a signed read-only Query: latency runs to its answer

REFERRAL_SKIPPED = (
    "the referral workload (create + accept with 2 KB encrypted payloads) is not in the "
    "suite yet: each create needs a patient record and a consent grant to the target "
    "institution first (contracts/referral.py, records.py, consent.py); round skipped"
)


class WorkloadUnavailable(Exception):
    """The workload cannot run on this build; the message says why (the round is skipped)."""


@dataclass(frozen=True)
class Call:
    kind: int  # SUBMIT or QUERY
    contract: str
    function: str
    args: dict[str, Any]


def preload_key(i: int) -> str:
    return f"q-{i:06d}"


def check_available(rnd: Round) -> None:
    if rnd.workload == "referral":
        raise WorkloadUnavailable(REFERRAL_SKIPPED)


def calls(rnd: Round, run_tag: str, client: int, count: int) -> list[Call]:
    check_available(rnd)
    if rnd.workload == "kv":
        return [_kv_put(f"{run_tag}-c{client}-{i}", i) for i in range(count)]
    return _query_mix(rnd, run_tag, client, count)


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
