"""The client processes of a run (multiprocessing with `spawn`: gRPC does not survive a
fork), and the plan/go/done exchange with them."""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from perf.suite import worker
from perf.suite.worker import ClientResult, Plan


class ClientError(Exception):
    """A client process failed; the message holds its traceback."""


class ClientPool:
    def __init__(self, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.procs: list[BaseProcess] = []
        self.conns: list[Connection] = []
        for i in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker.main, args=(child,), name=f"perf-client-{i}")
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)

    def _expect(self, conn: Connection, kind: str, timeout_s: float) -> Any:
        if not conn.poll(timeout_s):
            raise ClientError(f"a client process did not answer {kind!r} in {timeout_s:.0f} s")
        message = conn.recv()
        if message[0] == "error":
            raise ClientError(f"a client process failed:\n{message[1]}")
        if message[0] != kind:
            raise ClientError(f"a client process answered {message[0]!r}, expected {kind!r}")
        return message[1]

    def prepare(self, plans: list[Plan], timeout_s: float) -> int:
        """Send each client its plan; wait until all have signed and subscribed."""
        for conn, plan in zip(self.conns, plans, strict=True):
            conn.send(("plan", plan))
        return sum(int(self._expect(c, "ready", timeout_s)) for c in self.conns)

    def go(self, t0: float, timeout_s: float) -> list[ClientResult]:
        for conn in self.conns:
            conn.send(("go", t0))
        deadline = time.monotonic() + timeout_s
        return [self._expect(c, "done", max(1.0, deadline - time.monotonic())) for c in self.conns]

    def close(self) -> None:
        """Ask each client to stop; terminate, then kill, those that do not."""
        for conn in self.conns:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("stop",))
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()
