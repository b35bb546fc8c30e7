"""Read-ahead: learned read templates remove round trips and never change outcomes."""

from __future__ import annotations

from node.codes import TxCode
from node.execution.sandbox.host import SandboxEngine
from node.execution.sandbox.launcher import Zygote
from node.execution.sandbox.readahead import ReadAhead
from node.execution.types import Invocation
from tests.sandbox.sandbox_support import MemoryState, invocation, module

REFERRAL = """
DEPENDENCIES = ("consent",)

def create(ctx, referral, patient):
    grant = ctx.get_from("consent", "grant/" + patient)
    me = ctx.get_from("consent", "doctor/" + ctx.caller.identity)
    if grant is None or me is None:
        raise PermissionDenied("no consent")
    count = ctx.get("count/" + patient) or 0
    ctx.put("count/" + patient, count + 1)
    ctx.put(referral, {"patient": patient, "n": count + 1, "flag": ctx.get("config")})
    return count + 1
"""


def _state() -> MemoryState:
    data = {b"referral/config": b'"on"'}
    for i in range(20):
        data[f"consent/grant/p{i % 5}".encode()] = b"true"
    data[b"consent/doctor/" + ("ab" * 32).encode()] = b"true"
    return MemoryState(data)


def _batch(start: int) -> list[Invocation]:
    return [
        invocation("referral", "create", {"referral": f"r{i}", "patient": f"p{i % 5}"}, tx=i)
        for i in range(start, start + 20)
    ]


def test_templates_are_learned_from_reads() -> None:
    read_ahead = ReadAhead()
    call = invocation("referral", "create", {"referral": "r1", "patient": "p1"})
    assert read_ahead.predict(call) == ["referral/r1", "referral/p1"]
    read_ahead.learn(
        call,
        [b"consent/grant/p1", b"consent/doctor/" + ("ab" * 32).encode(), b"referral/config"],
    )
    other = invocation("referral", "create", {"referral": "r2", "patient": "p7"})
    assert read_ahead.predict(other) == [
        "referral/r2",
        "referral/p7",
        "consent/grant/p7",
        "consent/doctor/" + "ab" * 32,
        "referral/config",
    ]


def test_read_ahead_removes_round_trips_and_changes_nothing(zygote: Zygote) -> None:
    results = {}
    for prefetch in (False, True):
        with SandboxEngine(zygote, prefetch=prefetch) as engine:
            engine.load(module("referral", REFERRAL, ("consent",)))
            state = _state()
            outcomes = []
            requests = []
            for start in (0, 20, 40):
                before = engine.state_requests
                batch = engine.execute_batch(_batch(start), state)
                requests.append(engine.state_requests - before)
                for outcome in batch:
                    assert outcome.code == TxCode.VALID, outcome.message
                    state.apply(outcome)
                outcomes.extend(batch)
            results[prefetch] = outcomes
            if prefetch:
                assert requests[1:] == [0, 0]  # learned after the first batch
            else:
                assert min(requests) > 0
    assert results[False] == results[True]
