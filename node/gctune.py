"""Python's cyclic garbage collector, set for a long-lived node, and its pauses timed.

Reference counting frees nearly everything a node allocates per transaction; the cyclic
collector only finds cycles (an exception and its traceback, some of trio's and
py-libp2p's objects). It runs when the container objects allocated minus those freed
pass a threshold (700 by default), and every tenth young collection looks at the next
generation; a full collection walks every tracked object in the process, with every
thread stopped. Measured on a node of 3 consenters taking 1,000 kv tx/s: six full
collections per node in 35 s, 40-290 ms each (docs/performance.md, "Sixth push").

`tune()`, run by the daemon once the node is open (everything imported, every store
opened):
- `gc.collect()` then `gc.freeze()`: the objects made so far (modules, classes,
  functions, protobuf descriptors, the node's services), which live as long as the
  process, move to the permanent generation that no collection walks again;
- `gc.set_threshold(*THRESHOLDS)`: young collections about 30 times rarer; cycles wait
  a little longer to be freed;
- a callback times every collection. It only appends to a deque (a logging or metrics
  lock taken inside a collection could be one the interrupted code of the same thread
  holds); `drain()` passes the times to `GC_PAUSES` (node/stalls.py) from the daemon's
  once-a-second metrics task.

The sandbox's zygote freezes what it imported before it forks workers
(`freeze`), so that each worker's collections skip the inherited objects
and do not touch (copy) the pages they share with the zygote.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from typing import Any

from node.stalls import GC_PAUSES, Stalls

THRESHOLDS = (20_000, 10, 10)
# Collections timed but not yet drained; the oldest are dropped past this many.
MAX_UNDRAINED = 10_000


class _Timer:
    """The gc callback: one (generation, seconds) per collection into `done`."""

    def __init__(self) -> None:
        self.started = 0.0
        self.done: deque[tuple[int, float]] = deque(maxlen=MAX_UNDRAINED)

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.done.append((info["generation"], time.perf_counter() - self.started))


_TIMER = _Timer()


def tune() -> int:
    """Freezes what exists, raises the thresholds, times collections from now on.
    Returns how many objects were frozen. Calling it again freezes what was made since."""
    freeze()
    gc.set_threshold(*THRESHOLDS)
    if _TIMER not in gc.callbacks:
        gc.callbacks.append(_TIMER)
    return gc.get_freeze_count()


def drain(pauses: Stalls = GC_PAUSES) -> int:
    """Passes the collections timed since the last drain to `pauses`; returns how many."""
    count = 0
    while _TIMER.done:
        generation, seconds = _TIMER.done.popleft()
        pauses.record(str(generation), seconds)
        count += 1
    return count


def freeze() -> None:
    """Collects, then moves every object that is left out of future collections (also
    what a process that forks long-lived children, the sandbox's zygote, does first)."""
    gc.collect()
    gc.freeze()
