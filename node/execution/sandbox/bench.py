"""Micro-benchmark: the sandbox against plain in-process execution, in one run.

    python -m node.execution.sandbox.bench --json [--batch 500] [--batches 20]

Measures (medians over batches, so one noisy batch does not decide):
- `kv.put` transactions per second in block-sized batches: through the sandbox, through
  the metered engine in process (instrumentation cost alone), and calling the same module
  uninstrumented in process with a plain dict-backed ctx (the floor);
- the cost of one `ctx.get` that misses the worker's cache (a worker → host round trip);
- a referral-shaped transaction: 4 reads of its own state, 3 reads of declared
  dependencies, 3 writes, one event; with read-ahead off (every read not named by an
  argument is a round trip) and on (templates learned from earlier batches, readahead.py).
Time on shared machines is noisy: compare the numbers of one run, as ratios.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from node.execution.sandbox.host import SandboxEngine
from node.execution.sandbox.inprocess import InProcessMeteredEngine
from node.execution.sandbox.launcher import Zygote
from node.execution.sandbox.version import ENGINE_VERSION
from node.execution.types import (
    Caller,
    ContractModule,
    Invocation,
    canonical_json,
)

KV = """
MAX_KEY_LENGTH = 256

def _check_key(key):
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise ValueError("key must be a non-empty string of at most 256 characters")

def put(ctx, key, value):
    _check_key(key)
    previous = ctx.get(key)
    ctx.put(key, value)
    ctx.emit("put", {"key": key})
    return {"key": key, "created": previous is None}

def reads(ctx, n):
    found = 0
    for i in range(n):
        if ctx.get("r" + str(i)) is not None:
            found = found + 1
    return found
"""

REFERRAL = """
DEPENDENCIES = ("consortium", "consent")

def create(ctx, referral, patient, target):
    me = ctx.get_from("consortium", "identity/" + ctx.caller.identity)
    dept = ctx.get_from("consortium", "department/" + target)
    grant = ctx.get_from("consent", "grant/" + patient)
    if me is None or dept is None or grant is None:
        raise PermissionDenied("not registered or no consent")
    if ctx.get(referral) is not None:
        raise ValueError("referral exists")
    count = ctx.get("count/" + patient) or 0
    history = ctx.get("history/" + patient) or []
    quota = ctx.get("quota/" + target) or {"used": 0}
    ctx.put(referral, {"patient": patient, "target": target, "status": "requested",
                       "from": ctx.caller.institution, "at": ctx.block_time})
    ctx.put("count/" + patient, count + 1)
    ctx.put("history/" + patient, (history + [referral])[-20:])
    ctx.emit("referral.created", {"id": referral, "target": target})
    return {"id": referral, "quota": quota["used"]}
"""

CALLER = Caller(identity="ab" * 32, name="hosp1-doctor1", role="doctor", institution="hosp1")


class DictState:
    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def range(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return iter(sorted((k, v) for k, v in self.data.items() if k.startswith(prefix)))


class PlainContext:
    """The least an in-process engine must do per call: namespaced JSON get/put/emit."""

    def __init__(self, contract: str, state: DictState, caller: Caller) -> None:
        self._prefix = contract + "/"
        self._state = state
        self.writes: dict[bytes, bytes | None] = {}
        self.events: list[tuple[str, bytes]] = []
        self.caller = caller
        self.block_time = 0

    def get(self, key: str) -> Any:
        stored = (self._prefix + key).encode()
        raw = self.writes[stored] if stored in self.writes else self._state.get(stored)
        return None if raw is None else json.loads(raw)

    def get_from(self, contract: str, key: str) -> Any:
        raw = self._state.get(f"{contract}/{key}".encode())
        return None if raw is None else json.loads(raw)

    def put(self, key: str, value: Any) -> None:
        self.writes[(self._prefix + key).encode()] = canonical_json(value)

    def emit(self, event: str, data: Any) -> None:
        self.events.append((event, canonical_json(data)))


class PermissionDenied(Exception):
    pass


def _module(name: str, source: str) -> ContractModule:
    digest = hashlib.sha256(source.encode()).digest()
    return ContractModule(name, source, digest, ENGINE_VERSION)


def _plain_functions(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"PermissionDenied": PermissionDenied}
    exec(compile(source, "<bench>", "exec"), namespace)
    return namespace


def _invocation(contract: str, function: str, args: dict[str, Any], n: int) -> Invocation:
    return Invocation(n.to_bytes(32, "big"), contract, function, args, CALLER, 0, 1, 1_000_000)


def _median_seconds(run: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def _referral_state(batch: int) -> DictState:
    data: dict[bytes, bytes] = {f"consortium/identity/{'ab' * 32}".encode(): b'{"role":"doctor"}'}
    for i in range(batch):
        data[f"consortium/department/d{i}".encode()] = b'{"institution":"hosp2"}'
        data[f"consent/grant/p{i}".encode()] = b'{"granted":true}'
        data[f"referral/quota/d{i}".encode()] = b'{"used":3}'
        data[f"referral/history/p{i}".encode()] = b'["r-old"]'
    return DictState(data)


def run(batch: int, batches: int) -> dict[str, Any]:
    kv_calls = [
        _invocation("kv", "put", {"key": f"key-{i}", "value": {"n": i, "s": "v" * 20}}, i)
        for i in range(batch)
    ]
    referral_calls = [
        _invocation(
            "referral", "create", {"referral": f"r{i}", "patient": f"p{i}", "target": f"d{i}"}, i
        )
        for i in range(batch)
    ]
    kv_state = DictState({})
    referral_state = _referral_state(batch)
    read_n = 2000
    read_state = DictState({f"kv/r{i}".encode(): b"1" for i in range(read_n)})
    read_call = [_invocation("kv", "reads", {"n": read_n}, 0)]

    plain_kv = _plain_functions(KV)
    plain_referral = _plain_functions(REFERRAL)

    def plain_batch(functions: dict[str, Any], calls: list[Invocation], state: DictState) -> None:
        for call in calls:
            ctx = PlainContext(call.contract, state, call.caller)
            canonical_json(functions[call.function](ctx, **call.args))

    local = InProcessMeteredEngine()
    local.load(_module("kv", KV))
    local.load(_module("referral", REFERRAL))
    results: dict[str, Any] = {"batch_size": batch, "batches": batches}
    with (
        Zygote.start() as zygote,
        SandboxEngine(zygote) as sandbox,
        SandboxEngine(zygote, prefetch=False) as no_read_ahead,
    ):
        for engine in (sandbox, no_read_ahead):
            engine.load(_module("kv", KV))
            engine.load(_module("referral", REFERRAL))
        for _ in range(3):  # warm up caches and the worker
            sandbox.execute_batch(kv_calls, kv_state)

        def per_tx_us(seconds: float) -> float:
            return round(seconds / batch * 1e6, 2)

        plain = _median_seconds(lambda: plain_batch(plain_kv, kv_calls, kv_state), batches)
        metered = _median_seconds(lambda: local.execute_batch(kv_calls, kv_state), batches)
        sandboxed = _median_seconds(lambda: sandbox.execute_batch(kv_calls, kv_state), batches)
        results["kv_put"] = {
            "in_process_plain_tx_per_s": round(batch / plain),
            "in_process_metered_tx_per_s": round(batch / metered),
            "sandbox_tx_per_s": round(batch / sandboxed),
            "in_process_plain_us_per_tx": per_tx_us(plain),
            "sandbox_us_per_tx": per_tx_us(sandboxed),
            "sandbox_overhead_us_per_tx": per_tx_us(sandboxed - plain),
        }
        cold = _median_seconds(lambda: no_read_ahead.execute_batch(read_call, read_state), batches)
        local_reads = _median_seconds(lambda: local.execute_batch(read_call, read_state), batches)
        results["ctx_get_round_trip_us"] = round((cold - local_reads) / read_n * 1e6, 2)
        results["ctx_get_sandbox_total_us"] = round(cold / read_n * 1e6, 2)

        plain = _median_seconds(
            lambda: plain_batch(plain_referral, referral_calls, referral_state), batches
        )
        no_hints = _median_seconds(
            lambda: no_read_ahead.execute_batch(referral_calls, referral_state), batches
        )
        sandbox.execute_batch(referral_calls, referral_state)  # learn the read templates
        sandboxed = _median_seconds(
            lambda: sandbox.execute_batch(referral_calls, referral_state), batches
        )
        outcome = sandbox.execute_batch(referral_calls[:1], referral_state)[0]
        results["referral_7_reads_3_writes"] = {
            "in_process_plain_tx_per_s": round(batch / plain),
            "sandbox_read_ahead_tx_per_s": round(batch / sandboxed),
            "sandbox_no_read_ahead_tx_per_s": round(batch / no_hints),
            "in_process_plain_us_per_tx": per_tx_us(plain),
            "sandbox_read_ahead_us_per_tx": per_tx_us(sandboxed),
            "sandbox_no_read_ahead_us_per_tx": per_tx_us(no_hints),
            "sandbox_overhead_us_per_tx": per_tx_us(sandboxed - plain),
            "outcome_code": outcome.code.name,
            "gas_used": outcome.gas_used,
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.execution.sandbox.bench")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--batch", type=int, default=500, help="invocations per batch")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per case")
    args = parser.parse_args(argv)
    results = run(args.batch, args.batches)
    if args.json:
        print(json.dumps(results, sort_keys=True))
    else:
        for key, value in results.items():
            print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
