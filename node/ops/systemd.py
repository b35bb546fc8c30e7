"""sd_notify without libsystemd: READY=1, WATCHDOG=1, STATUS=, STOPPING=1 (Type=notify).

The protocol is one datagram per message to the AF_UNIX socket named by NOTIFY_SOCKET
(a leading '@' means the abstract namespace). Without NOTIFY_SOCKET every call is a no-op,
so the daemon behaves the same outside systemd.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        if self._address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        enabled = usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid()))
        # systemd asks for a ping at least every WATCHDOG_USEC; we send at half of it.
        self.watchdog_interval_s: float | None = int(usec) / 2e6 if enabled else None

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str) -> None:
        if self._sock is None:
            return
        message = "\n".join(f"{k.upper()}={v}" for k, v in fields.items()).encode()
        # systemd gone or socket full: notification is best effort, never fatal.
        with contextlib.suppress(OSError):
            self._sock.sendto(message, self._address)

    def ready(self, status: str) -> None:
        self.send(ready="1", status=status)

    def watchdog(self) -> None:
        self.send(watchdog="1")

    def status(self, status: str) -> None:
        self.send(status=status)

    def stopping(self) -> None:
        self.send(stopping="1", status="stopping")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
