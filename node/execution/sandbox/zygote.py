"""The zygote: a fresh interpreter that forks confined sandbox workers on request.

Run by the host as `python -m node.execution.sandbox.zygote --control-fd N`, with an
environment holding only PYTHONHASHSEED=0 (str hashing, hence set order, is the same on
every node). It imports and warms up everything a worker needs *before* forking, because
a worker cannot open a file (so cannot import) once confined. It never runs contract code
itself and has no threads, so forking it is safe.

Control protocol on fd N (a Unix stream socket to the host), one request at a time:
  host: frame {"op": "spawn"} with one fd attached (the worker's end of a socketpair)
  zygote: frame {"pid": P}
  host: frame {"op": "kill", "pid": P}  → zygote: frame {"ok": true}
When the host closes the control socket the zygote kills its workers and exits.
Workers are killed through pidfds, so a recycled pid is never hit by mistake.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import sys
import tempfile

from node import gctune
from node.execution.sandbox import confine as confine_module
from node.execution.sandbox.channel import ChannelClosed
from node.execution.sandbox.executor import Executor
from node.execution.sandbox.protocol import decode_body, encode_frame, frame_length
from node.execution.sandbox.worker import serve

_WARM_UP_SOURCE = """
import math
DEPENDENCIES = ("other",)
def warm(ctx, n=3):
    ctx.put("k", {"v": [n, 1.5, "x" * 2, math.floor(2.5)], "s": f"{n!r}"})
    data = sorted({"b": 1, "a": 2}.items())
    parts = ",".join(str(p) for p in range(n))
    try:
        _ = ctx.get("k")
        _ = ctx.get_from("other", "k")
        _ = ctx.range("")
    except KeyError:
        pass
    ctx.emit("e", {"d": data, "p": parts.split(",")[1:]})
    return [n + 1, n * 2, n ** 2, n << 1, n % 2, 3 in [1, 2, 3]]
"""


class _NullPort:
    def get(self, index: int, key: str) -> str | None:
        return '{"a":[1,2]}'

    def range(self, index: int, prefix: str, limit: int | None = None) -> list[tuple[str, str]]:
        return [(prefix + "x", "1")]


def _warm_up(test_hooks: bool) -> None:
    """Runs every code path once so lazily imported modules are loaded before forking."""
    executor = Executor(_NullPort(), test_hooks=test_hooks)
    executor.load("warm", _WARM_UP_SOURCE, ("other",))
    executor.begin_batch()
    call = {
        "tx": "00",
        "c": "warm",
        "f": "warm",
        "a": {},
        "caller": ["i", "n", "r", "o"],
        "t": 0,
        "h": 0,
        "g": 100_000,
        "ro": False,
    }
    outcome = executor.run(0, call)
    if outcome["code"] != 0:
        raise RuntimeError(f"sandbox warm-up failed: {outcome['msg']}")


class _Zygote:
    def __init__(
        self, control: socket.socket, limits: confine_module.WorkerLimits, test_hooks: bool
    ) -> None:
        self._control = control
        self._limits = limits
        self._test_hooks = test_hooks
        self._workdir = tempfile.mkdtemp(prefix="medledger-sandbox-")
        os.chmod(self._workdir, 0o555)
        self._pidfds: dict[int, int] = {}

    def _send(self, message: object) -> None:
        self._control.sendall(encode_frame(message))

    def _recv(self) -> tuple[object, list[int]]:
        header, fds, _, _ = socket.recv_fds(self._control, 4, 1)
        if not header:
            raise ChannelClosed("host closed the control socket")
        body = b""
        length = frame_length(header)
        while len(body) < length:
            chunk = self._control.recv(length - len(body))
            if not chunk:
                raise ChannelClosed("host closed the control socket")
            body += chunk
        return decode_body(body), list(fds)

    def run(self) -> None:
        self._send({"op": "ready", "pid": os.getpid()})
        try:
            while True:
                message, fds = self._recv()
                op = message.get("op") if isinstance(message, dict) else None
                if op == "spawn" and len(fds) == 1:
                    self._send({"pid": self._spawn(fds[0])})
                elif op == "kill" and isinstance(message, dict):
                    for fd in fds:
                        os.close(fd)
                    self._kill(int(message["pid"]))
                    self._send({"ok": True})
                else:
                    for fd in fds:
                        os.close(fd)
                    self._send({"error": "bad request"})
        except (ChannelClosed, OSError):
            pass
        finally:
            for pid in list(self._pidfds):
                self._kill(pid)
            os.rmdir(self._workdir)

    def _spawn(self, worker_fd: int) -> int:
        self._prune()
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                self._control.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                sock = confine_module.confine(worker_fd, self._workdir, self._limits)
                status = serve(sock, test_hooks=self._test_hooks)
            finally:
                os._exit(status)
        os.close(worker_fd)
        self._pidfds[pid] = os.pidfd_open(pid)
        return pid

    def _kill(self, pid: int) -> None:
        pidfd = self._pidfds.pop(pid, None)
        if pidfd is None:
            return
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            os.close(pidfd)

    def _prune(self) -> None:
        """Forgets workers that have exited (their pidfd is readable)."""
        if not self._pidfds:
            return
        poller = select.poll()
        by_fd = {fd: pid for pid, fd in self._pidfds.items()}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        for fd, _ in poller.poll(0):
            os.close(fd)
            del self._pidfds[by_fd[fd]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.execution.sandbox.zygote")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--cpu-seconds", type=int, default=3600)
    parser.add_argument("--memory-bytes", type=int, default=1 << 30)
    parser.add_argument("--test-hooks", action="store_true")
    args = parser.parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") != "0":
        print("zygote: PYTHONHASHSEED must be 0", file=sys.stderr)
        return 2
    # Exited workers are reaped by the kernel: no zombies even if nobody waits for them.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    _warm_up(args.test_hooks)
    gctune.freeze()  # workers' collections skip (and do not copy) all of it
    control = socket.socket(fileno=args.control_fd)
    limits = confine_module.WorkerLimits(
        cpu_seconds=args.cpu_seconds, address_space_bytes=args.memory_bytes
    )
    _Zygote(control, limits, args.test_hooks).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
