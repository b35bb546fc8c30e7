"""Helpers for the sandbox tests: an in-memory state, a kv contract, invocations."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from node.execution.sandbox.version import ENGINE_VERSION
from node.execution.types import Caller, ContractModule, Invocation, Outcome

# Our own copy of the project's kv contract (tests must not depend on contracts/ changing).
KV_SOURCE = '''
"""kv: put/get/delete/list on the contract's own namespace."""

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


def get(ctx, key):
    _check_key(key)
    return ctx.get(key)


def delete(ctx, key):
    _check_key(key)
    if ctx.get(key) is None:
        raise ValueError("no such key: " + key)
    ctx.delete(key)
    return {"key": key}


def list_keys(ctx, prefix="", limit=100):
    keys = []
    for key, _value in ctx.range(prefix):
        if len(keys) >= limit:
            break
        keys.append(key)
    return keys
'''

CALLER = Caller(identity="ab" * 32, name="hosp1-doctor1", role="doctor", institution="hosp1")


class MemoryState:
    """StateReader over a dict, with `apply` for committing outcomes."""

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        self.data: dict[bytes, bytes] = dict(data or {})

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def range(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return iter(sorted((k, v) for k, v in self.data.items() if k.startswith(prefix)))

    def apply(self, outcome: Outcome) -> None:
        for key, value in outcome.writes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value


def module(name: str, source: str, dependencies: tuple[str, ...] = ()) -> ContractModule:
    return ContractModule(
        name=name,
        source=source,
        code_hash=hashlib.sha256(source.encode()).digest(),
        engine_version=ENGINE_VERSION,
        dependencies=dependencies,
    )


def invocation(
    contract: str,
    function: str,
    args: dict[str, Any] | None = None,
    *,
    gas: int = 100_000,
    tx: int = 1,
    read_only: bool = False,
) -> Invocation:
    return Invocation(
        tx_id=tx.to_bytes(32, "big"),
        contract=contract,
        function=function,
        args=args or {},
        caller=CALLER,
        block_time_ms=1_700_000_000_000,
        height=7,
        gas_limit=gas,
        read_only=read_only,
    )
