"""The simulated network: per-tick delivery buckets, partitions, loss, duplication,
delay jitter (which reorders) — all drawn from the simulation's seeded generator."""

from __future__ import annotations

import random
from collections import Counter

from node.consensus.messages import Message


class SimNetwork:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.buckets: dict[int, list[Message]] = {}
        self.group: dict[str, int] = {}  # partition: nodes talk only within a group
        self.loss = 0.0
        self.dup = 0.0
        self.jitter = 0  # extra delay of up to this many ticks (reorders messages)
        self.stats: Counter[str] = Counter()

    def reliable(self) -> None:
        self.loss, self.dup, self.jitter = 0.0, 0.0, 0

    def heal(self) -> None:
        self.group = {}

    def connected(self, a: str, b: str) -> bool:
        g = self.group
        return not g or g.get(a, 0) == g.get(b, 0)

    def send(self, m: Message, now: int) -> None:
        if not self.connected(m.sender, m.to):
            self.stats["cut"] += 1
            return
        rng = self.rng
        if self.loss and rng.random() < self.loss:
            self.stats["dropped"] += 1
            return
        copies = 1
        if self.dup and rng.random() < self.dup:
            self.stats["duplicated"] += 1
            copies = 2
        for _ in range(copies):
            at = now + 1 + (rng.randrange(self.jitter + 1) if self.jitter else 0)
            bucket = self.buckets.get(at)
            if bucket is None:
                self.buckets[at] = [m]
            else:
                bucket.append(m)

    def due(self, now: int) -> list[Message]:
        msgs = self.buckets.pop(now, [])
        if len(msgs) > 1 and self.jitter:
            self.rng.shuffle(msgs)
        return msgs

    def defer(self, m: Message, at: int) -> None:
        self.buckets.setdefault(at, []).append(m)
