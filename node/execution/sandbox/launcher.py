"""Host side of the zygote: start it, ask it for workers, kill workers, shut it down.

`Zygote.start()` must run before the node starts any thread (grpcio, trio's thread
pool...). The zygote is a fresh interpreter (`subprocess`, so fork+exec), which is what
makes the later forks of workers safe: the zygote has no threads and no node state.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from node.execution.sandbox.channel import Channel, ChannelClosed, ChannelTimeout
from node.execution.sandbox.confine import WorkerLimits
from node.execution.sandbox.errors import SandboxUnavailable
from node.execution.sandbox.protocol import ProtocolViolation, encode_frame

START_TIMEOUT = 30.0
CONTROL_TIMEOUT = 10.0


@dataclass
class WorkerConnection:
    pid: int
    channel: Channel


class Zygote:
    def __init__(self, process: subprocess.Popen[bytes], control: socket.socket) -> None:
        self._process = process
        self._control = control
        self._channel = Channel(control)
        self._lock = threading.Lock()
        self.pid = process.pid

    @classmethod
    def start(cls, *, limits: WorkerLimits | None = None, test_hooks: bool = False) -> Zygote:
        """Starts the zygote and waits until it is ready to fork workers."""
        limits = limits or WorkerLimits()
        host_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = [
            sys.executable,
            "-m",
            "node.execution.sandbox.zygote",
            "--control-fd",
            str(zygote_end.fileno()),
            "--cpu-seconds",
            str(limits.cpu_seconds),
            "--memory-bytes",
            str(limits.address_space_bytes),
        ]
        if test_hooks:
            command.append("--test-hooks")
        # Only what the interpreter needs to find the package; nothing of the node's
        # environment (secrets, proxies) reaches the sandbox.
        env = {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        package_root = os.path.dirname(
            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        )
        env["PYTHONPATH"] = package_root
        process = subprocess.Popen(
            command,
            env=env,
            pass_fds=(zygote_end.fileno(),),
            close_fds=True,
            stdin=subprocess.DEVNULL,
            cwd="/",
        )
        zygote_end.close()
        zygote = cls(process, host_end)
        try:
            ready = zygote._channel.recv(time.monotonic() + START_TIMEOUT)
        except (ChannelClosed, ChannelTimeout, ProtocolViolation) as exc:
            zygote.close()
            raise SandboxUnavailable(f"sandbox zygote did not start: {exc}") from None
        if not isinstance(ready, dict) or ready.get("op") != "ready":
            zygote.close()
            raise SandboxUnavailable(f"sandbox zygote sent {ready!r} instead of ready")
        return zygote

    def _request(self, message: dict[str, Any], fds: list[int] | None = None) -> Any:
        with self._lock:
            try:
                frame = encode_frame(message)
                if fds:
                    socket.send_fds(self._control, [frame], fds)
                else:
                    self._control.sendall(frame)
                return self._channel.recv(time.monotonic() + CONTROL_TIMEOUT)
            except (OSError, ChannelClosed, ChannelTimeout, ProtocolViolation) as exc:
                raise SandboxUnavailable(f"sandbox zygote is not answering: {exc}") from None

    def spawn(self) -> WorkerConnection:
        """A new confined worker, connected to this process by a socketpair."""
        host_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            reply = self._request({"op": "spawn"}, [worker_end.fileno()])
        finally:
            worker_end.close()
        if not isinstance(reply, dict) or not isinstance(reply.get("pid"), int):
            host_end.close()
            raise SandboxUnavailable(f"sandbox zygote could not spawn a worker: {reply!r}")
        return WorkerConnection(pid=reply["pid"], channel=Channel(host_end))

    def kill(self, pid: int) -> None:
        self._request({"op": "kill", "pid": pid})

    def close(self, timeout: float = 10.0) -> None:
        """Stops the zygote; it kills its remaining workers first. Idempotent."""
        self._control.close()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> Zygote:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
