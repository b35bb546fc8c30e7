"""Which nodes are consenters at which height, from chain state (DESIGN §3.1 step 5, §4).

The set in force for block `h` is the one in chain state after block `h - 1`: a block
that carries a membership change is still certified by the set before it, the next
block by the new set. Before any change the genesis block's `consenter` flags decide.
The history is read once from the ledger's history index and then kept up to date by a
commit listener (`observe`), so vote checks never touch the disk. Sans-IO apart from
the initial read; `at` and `current` may be called from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from node.execution.consenter_gov import CONSENTERS_KEY, decode_consenters, genesis_consenters
from node.genesis import Genesis
from node.ledger.ledger import BlockWrite, Ledger


class ConsenterHistory:
    def __init__(
        self,
        genesis_set: frozenset[str],
        changes: Iterable[tuple[int, frozenset[str]]] = (),
        known_height: int = 0,
    ) -> None:
        self.genesis_set = genesis_set
        self._changes = sorted(changes, key=lambda c: c[0])  # (height that wrote it, set)
        self._known = known_height  # state is known up to the end of this block
        self._lock = threading.Lock()

    @staticmethod
    def from_ledger(ledger: Ledger, genesis: Genesis) -> ConsenterHistory:
        changes = [
            (height, decode_consenters(value))
            for height, _index, value in ledger.history(CONSENTERS_KEY)
            if value is not None
        ]
        return ConsenterHistory(genesis_consenters(genesis.config), changes, ledger.tip.height)

    def observe(self, write: BlockWrite, _latencies: list[float] | None = None) -> None:
        """A committed block (a NodeCore commit listener)."""
        with self._lock:
            for sw in write.state:
                if sw.key == CONSENTERS_KEY and sw.value is not None:
                    self._changes.append((write.height, decode_consenters(sw.value)))
            self._known = max(self._known, write.height)

    def at(self, height: int) -> frozenset[str] | None:
        """The consenters that certify block `height`; None while this node does not
        know the state after block `height - 1` yet."""
        with self._lock:
            if height - 1 > self._known:
                return None
            found = self.genesis_set
            for changed_at, members in self._changes:
                if changed_at > height - 1:
                    break
                found = members
            return found

    def current(self) -> frozenset[str]:
        """The set in chain state now (it certifies the next block)."""
        with self._lock:
            return self._changes[-1][1] if self._changes else self.genesis_set

    @property
    def known_height(self) -> int:
        return self._known
