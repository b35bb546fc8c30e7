"""Per-transaction timing inside one client process, shared by the sending thread, gRPC
callback threads and the block listener. Times are `time.monotonic()`, which on Linux is
one clock for every process on the machine."""

from __future__ import annotations

import math
import threading
import time
from array import array
from collections.abc import Callable

UNSENT = -1  # never sent (the round's deadline came first)
TIMEOUT = -2  # admitted but not committed before the drain ended
RPC_ERROR = -3  # the call itself failed, status unknown
IN_FLIGHT = -4  # sent, no outcome yet
PARENT_FAILED = -5  # a chained transaction not sent: its predecessor failed or timed out
LATE = -6  # a chained transaction released after the sender's last call (duration + drain)
RPC_BASE = -100  # -100 - n: the call failed with gRPC status code n


def rpc_failure(status_value: int) -> int:
    return RPC_BASE - status_value


class Tracker:
    def __init__(self, count: int) -> None:
        self.send_t = array("d", [math.nan]) * count
        self.done_t = array("d", [math.nan]) * count
        self.code = array("i", [UNSENT]) * count
        self.sent = 0
        self.finished = 0
        self._cond = threading.Condition()
        # Called with (index, code) when a transaction's first outcome is recorded, under
        # the lock (the referral workload releases a chain's next transaction there).
        self.on_finish: Callable[[int, int], None] | None = None

    def mark_sent(self, indices: range | list[int], now: float) -> None:
        with self._cond:
            for i in indices:
                self.send_t[i] = now
                self.code[i] = IN_FLIGHT
            self.sent += len(indices)

    def finish(self, index: int, code: int, now: float) -> None:
        """The first outcome wins: a commit seen before its admission answer stays."""
        with self._cond:
            if self.code[index] != IN_FLIGHT:
                return
            self.code[index] = code
            self.done_t[index] = now
            self.finished += 1
            if self.on_finish is not None:
                self.on_finish(index, code)
            self._cond.notify_all()

    def in_flight(self) -> int:
        return self.sent - self.finished

    def wait_window(self, window: int, deadline: float) -> None:
        """Block while `window` or more are in flight (the `max` controller)."""
        with self._cond:
            while self.sent - self.finished >= window:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._cond.wait(min(left, 0.05))

    def wait_all(self, deadline: float) -> bool:
        with self._cond:
            while self.sent > self.finished:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def expire(self, now: float) -> None:
        with self._cond:
            for i, code in enumerate(self.code):
                if code == IN_FLIGHT:
                    self.code[i] = TIMEOUT
                    self.done_t[i] = now
