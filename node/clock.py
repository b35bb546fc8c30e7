"""The node's wall clock in Unix milliseconds: one place for the shells that need time
(the sans-IO cores take it as an argument)."""

from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
