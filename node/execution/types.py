"""What a contract engine is given and what it gives back.

Every engine (the in-process one of the foundation, the sandboxed one) implements
`ContractEngine`, so the block executor does not care which one runs the code.

State keys seen by a contract are `str`; stored keys are `<contract>/<key>` in UTF-8.
State values are canonical JSON (see `canonical_json`), so that every node writes the
same bytes for the same value.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from node.codes import TxCode

JSONValue = Any


def canonical_json(value: JSONValue) -> bytes:
    """The one byte encoding of a JSON value: sorted keys, no spaces, UTF-8.

    Raises ValueError (with a message naming the problem) for values JSON cannot hold
    exactly: NaN/Infinity, non-str keys, sets, bytes, objects.
    """
    try:
        return json.dumps(
            value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"value is not JSON-serialisable: {exc}") from exc


def state_key(contract: str, key: str) -> bytes:
    return f"{contract}/{key}".encode()


class StateReader(Protocol):
    """Committed state (plus the writes of earlier transactions of the same block)."""

    def get(self, key: bytes) -> bytes | None: ...

    def range(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Keys starting with `prefix`, in byte order, with their values, read as the
        caller iterates (a caller that wants the first few reads only those)."""
        ...


def overlay_range(
    base: Iterator[tuple[bytes, bytes]], writes: Mapping[bytes, bytes | None], prefix: bytes
) -> Iterator[tuple[bytes, bytes]]:
    """`base` (keys under `prefix` in byte order) with `writes` on top (None = deleted),
    merged lazily: the base is read only as far as the caller iterates."""
    mine = sorted((k, v) for k, v in writes.items() if k.startswith(prefix))
    i = 0
    for key, value in base:
        while i < len(mine) and mine[i][0] <= key:
            written_key, written = mine[i]
            i += 1
            if written is not None:
                yield written_key, written
            if written_key == key:
                break
        else:
            yield key, value
    for written_key, written in mine[i:]:
        if written is not None:
            yield written_key, written


@dataclass(frozen=True)
class Caller:
    identity: str  # hex SHA-256 of the certificate DER
    name: str  # certificate CN, e.g. "hosp1-doctor1"
    role: str  # certificate OU: leader | institution | doctor | patient | regulator | node
    institution: str  # certificate O, e.g. "hosp1"


@dataclass(frozen=True)
class Invocation:
    tx_id: bytes
    contract: str
    function: str
    args: Mapping[str, JSONValue]
    caller: Caller
    block_time_ms: int
    height: int
    gas_limit: int
    read_only: bool = False


@dataclass(frozen=True)
class ContractEvent:
    name: str
    data: bytes  # canonical JSON


@dataclass(frozen=True)
class Outcome:
    code: TxCode
    message: str = ""
    result: bytes = b"null"  # canonical JSON
    writes: Mapping[bytes, bytes | None] = field(default_factory=dict)  # None = delete
    reads: frozenset[bytes] = frozenset()
    events: Sequence[ContractEvent] = ()
    gas_used: int = 0


@dataclass(frozen=True)
class ContractModule:
    name: str
    source: str
    code_hash: bytes
    engine_version: int
    dependencies: tuple[str, ...] = ()


class ContractEngine(Protocol):
    def load(self, module: ContractModule) -> None:
        """Prepare a module for execution; raises ContractRejected for code it refuses."""
        ...

    def execute(self, invocation: Invocation, state: StateReader) -> Outcome:
        """Run one call. Never raises for anything the contract does: every failure is an
        Outcome with a non-VALID code and no writes."""
        ...

    def execute_batch(self, invocations: Sequence[Invocation], state: StateReader) -> list[Outcome]:
        """Run a block's calls in order: `state` is the state before the first; each call
        sees the writes of the earlier VALID ones."""
        ...


class ContractRejected(Exception):
    """A module refused at load/deploy time; the message names line and rule."""
