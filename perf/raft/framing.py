"""Length-prefixed frames and the benchmark's client protocol, shared by both systems.

A frame is a 4-byte big-endian length and that many bytes. Client frames:

    request  = op (1 byte) | request id (u64) | payload    op: PROPOSE or IS_LEADER
    response = status (1 byte) | request id (u64)           status: one of the Status bytes

Sans-IO: `FrameBuffer` takes bytes in and hands whole frames out; the sockets live in
the member programs and the load generator.
"""

from __future__ import annotations

import enum
import struct

_LEN = struct.Struct(">I")
_HEAD = struct.Struct(">BQ")
MAX_FRAME = 64 << 20


class Op(enum.IntEnum):
    PROPOSE = ord("P")
    IS_LEADER = ord("?")


class Status(enum.IntEnum):
    COMMITTED = ord("A")  # the command's entry is committed and applied at the leader
    NOT_LEADER = ord("N")
    LEADER = ord("L")  # answer to IS_LEADER
    FAILED = ord("E")  # refused (queue full, proposal dropped)


class FrameError(Exception):
    pass


def frame(payload: bytes) -> bytes:
    return _LEN.pack(len(payload)) + payload


def request(op: Op, request_id: int, payload: bytes = b"") -> bytes:
    body = _HEAD.pack(op, request_id) + payload
    return _LEN.pack(len(body)) + body


def response(status: Status, request_id: int) -> bytes:
    return _LEN.pack(_HEAD.size) + _HEAD.pack(status, request_id)


def parse_head(body: bytes) -> tuple[int, int, bytes]:
    """(op or status, request id, payload) of a client frame."""
    if len(body) < _HEAD.size:
        raise FrameError(f"client frame of {len(body)} bytes is shorter than its header")
    code, request_id = _HEAD.unpack_from(body, 0)
    return code, request_id, body[_HEAD.size :]


class FrameBuffer:
    """Accumulates received bytes; `frames()` returns the complete frames so far."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (n,) = _LEN.unpack_from(buf, pos)
            if n > MAX_FRAME:
                raise FrameError(f"frame of {n} bytes exceeds the {MAX_FRAME}-byte limit")
            if end - pos - 4 < n:
                break
            out.append(bytes(buf[pos + 4 : pos + 4 + n]))
            pos += 4 + n
        if pos:
            del buf[:pos]
        return out
