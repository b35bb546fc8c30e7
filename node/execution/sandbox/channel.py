"""Blocking frame I/O over a connected Unix socket (both ends of the host ↔ worker pipe).

The host gives every receive a deadline, so a hung worker costs at most its time budget;
the worker blocks without one. Framing and checks live in `protocol.py`.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from node.execution.sandbox.protocol import decode_body, encode_frame, frame_length


class ChannelClosed(Exception):
    """The other end closed the connection (or died)."""


class ChannelTimeout(Exception):
    """No complete frame arrived before the deadline."""


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def send(self, message: Any) -> None:
        try:
            self.sock.sendall(encode_frame(message))
        except OSError as exc:
            raise ChannelClosed(f"send failed: {exc}") from None

    def recv(self, deadline: float | None = None) -> Any:
        """Next frame; `deadline` is a `time.monotonic()` value (None waits forever).
        A ChannelTimeout consumes nothing: the caller may wait again for the same frame."""
        self._fill(4, deadline)
        size = 4 + frame_length(bytes(self._buffer[:4]))
        self._fill(size, deadline)
        frame = bytes(self._buffer[:size])
        del self._buffer[:size]
        return decode_body(frame[4:])

    def _fill(self, size: int, deadline: float | None) -> None:
        buffer = self._buffer
        while len(buffer) < size:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ChannelTimeout("deadline passed")
                self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(max(65536, size - len(buffer)))
            except TimeoutError:
                raise ChannelTimeout("deadline passed") from None
            except OSError as exc:
                raise ChannelClosed(f"receive failed: {exc}") from None
            if not chunk:
                raise ChannelClosed("connection closed")
            buffer += chunk

    def close(self) -> None:
        self.sock.close()
