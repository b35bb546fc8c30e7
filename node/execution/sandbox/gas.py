"""Gas costs and the per-call meter.

Every cost is a pure function of what the contract does (steps taken, sizes built), never of
time, so the same call with the same limit stops at the same step on every node. Size-based
costs are charged *before* the allocation happens, so a call that cannot afford a 10 GB
string never allocates it.
"""

from __future__ import annotations

from node.codes import TxCode
from node.execution.sandbox.errors import ContractFault, OutOfGas

STEP = 1  # one loop iteration, one function call, one comprehension element
CALL_BASE = 50  # entering an invocation: argument decoding, frame set-up
STATE_OP = 20  # ctx.get / put / delete / get_from / emit, before size charges
RANGE_ITEM = 2  # each key returned by ctx.range
CHARS_PER_GAS = 16  # str/bytes built or copied: 1 gas per 16 characters
ITEMS_PER_GAS = 1  # list/tuple/dict/set elements built or copied: 1 gas each
INT_BITS_PER_GAS = 64  # big-int results: 1 gas per 64-bit limb

# Hard ceilings that hold whatever the gas limit is; beyond them the operation is refused
# outright (CONTRACT_ERROR) because no sane contract needs them.
MAX_INT_BITS = 1 << 16
MAX_CALL_DEPTH = 64
MAX_VALUE_DEPTH = 32


class Meter:
    """Counts gas for one invocation. `charge` is on the hot path of every loop."""

    __slots__ = ("depth", "limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.depth = 0

    def charge(self, amount: int) -> None:
        self.used += amount
        if self.used > self.limit:
            raise OutOfGas(f"out of gas: limit {self.limit}")

    def step(self) -> bool:
        """One step; returns True so it can sit inside a comprehension's `if`."""
        self.used += 1
        if self.used > self.limit:
            raise OutOfGas(f"out of gas: limit {self.limit}")
        return True

    def enter(self) -> None:
        self.used += 1
        if self.used > self.limit:
            raise OutOfGas(f"out of gas: limit {self.limit}")
        self.depth += 1
        if self.depth > MAX_CALL_DEPTH:
            raise ContractFault(
                TxCode.CONTRACT_ERROR, f"call depth limit {MAX_CALL_DEPTH} exceeded"
            )

    def leave(self) -> None:
        self.depth -= 1

    @property
    def reported(self) -> int:
        """Gas used as recorded on-chain: never more than the limit."""
        return min(self.used, self.limit)
