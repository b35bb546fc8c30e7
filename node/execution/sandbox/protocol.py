"""The host ↔ worker wire: length-prefixed JSON frames and the checks on what comes back.

No pickle, ever: once contract code has run in a worker, everything it sends is untrusted
input. A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON.

Messages (host → worker):
  {"op": "load", "name", "source", "deps"}        → {"ok": true} | {"ok": false, "error"}
  {"op": "run", "calls": [call, ...], "known": {stored_key: text | null}}
                                                   → state requests and
                                                     {"op": "part", "outcomes": [...]}
                                                     in call order, then
                                                     {"op": "done", "outcomes": [...]}
  {"op": "ping"}                                   → {"op": "pong"}
State requests during a run (worker → host), each answered before the worker goes on:
  {"op": "get", "i": index, "k": stored_key}       → {"v": text | null} | {"deny": msg}
  {"op": "range", "i": index, "p": stored_prefix, "n": limit (optional)}
                                                   → {"items": [[k, text], ...]} | {"deny"}
                                                     (in key order, the first `n` only)

`call` and `outcome` shapes are made and checked by the functions below.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

from node.codes import TxCode
from node.execution.types import ContractEvent, Invocation, Outcome

MAX_FRAME = 256 << 20
_CODES = {int(code): code for code in TxCode}
_LENGTH = struct.Struct(">I")


class ProtocolViolation(Exception):
    """A frame or outcome that an honest worker never sends."""


# One encoder for every frame: json.dumps with options builds a new one per call.
_FRAME_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode_frame(message: Any) -> bytes:
    body = _FRAME_ENCODER.encode(message).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise ProtocolViolation(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _LENGTH.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolViolation(f"frame of {length} bytes exceeds {MAX_FRAME}")
    return int(length)


def decode_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolViolation(f"frame is not JSON: {exc}") from None


def call_to_wire(invocation: Invocation) -> dict[str, Any]:
    caller = invocation.caller
    return {
        "tx": invocation.tx_id.hex(),
        "c": invocation.contract,
        "f": invocation.function,
        "a": dict(invocation.args),
        "caller": [caller.identity, caller.name, caller.role, caller.institution],
        "t": invocation.block_time_ms,
        "h": invocation.height,
        "g": invocation.gas_limit,
        "ro": invocation.read_only,
    }


def key_allowed(contract: str, dependencies: tuple[str, ...], stored_key: str) -> bool:
    """May a call of `contract` read `stored_key`? Its own namespace or a declared one."""
    owner, slash, _ = stored_key.partition("/")
    return bool(slash) and (owner == contract or owner in dependencies)


def outcome_from_wire(invocation: Invocation, dependencies: tuple[str, ...], raw: Any) -> Outcome:
    """Checks a worker's outcome and converts it; raises ProtocolViolation if it lies."""
    if not isinstance(raw, dict):
        raise ProtocolViolation("outcome is not an object")
    try:
        code = _CODES[raw["code"]]
        message, result, gas_used = raw["msg"], raw["result"], raw["gas"]
        writes_raw, reads_raw, events_raw = raw["writes"], raw["reads"], raw["events"]
    except (KeyError, ValueError, TypeError) as exc:
        raise ProtocolViolation(f"malformed outcome: {exc!r}") from None
    if not (isinstance(message, str) and isinstance(result, str) and type(gas_used) is int):
        raise ProtocolViolation("outcome fields have wrong types")
    if not 0 <= gas_used <= invocation.gas_limit:
        raise ProtocolViolation(f"gas_used {gas_used} outside 0..{invocation.gas_limit}")
    if not isinstance(writes_raw, Mapping) or not isinstance(reads_raw, list):
        raise ProtocolViolation("writes/reads have wrong types")
    prefix = invocation.contract + "/"
    writes: dict[bytes, bytes | None] = {}
    for key, value in writes_raw.items():
        if not key.startswith(prefix):
            raise ProtocolViolation(f"write outside namespace {prefix!r}: {key!r}")
        if value is not None and not isinstance(value, str):
            raise ProtocolViolation("write value is not text")
        writes[key.encode()] = None if value is None else value.encode()
    if writes and (code != TxCode.VALID or invocation.read_only):
        raise ProtocolViolation("writes reported for a failed or read-only call")
    reads = set()
    for key in reads_raw:
        if not isinstance(key, str) or not key_allowed(invocation.contract, dependencies, key):
            raise ProtocolViolation(f"read outside declared dependencies: {key!r}")
        reads.add(key.encode())
    events = []
    for item in events_raw:
        if not (
            isinstance(item, (list, tuple))
            and len(item) == 2
            and all(isinstance(p, str) for p in item)
        ):
            raise ProtocolViolation("malformed event")
        events.append(ContractEvent(item[0], item[1].encode()))
    return Outcome(
        code=code,
        message=message,
        result=result.encode(),
        writes=writes,
        reads=frozenset(reads),
        events=tuple(events),
        gas_used=gas_used,
    )
