"""The `ctx` object a contract function receives, and the block-level view of state.

Keys the contract sees are `str`; stored keys are `<contract>/<key>`. Values cross every
boundary as canonical JSON text and are decoded afresh on each `get`, so a contract that
mutates what it read cannot change the cache or another transaction's view.

`BlockView` holds what one batch (a block's worth of invocations) may read: the writes of
earlier successful transactions of the batch over the host's state, which is fetched on a
miss through a `StatePort` and cached for the rest of the batch (the host's state does not
change during a batch, so caching is exact).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from node.codes import TxCode
from node.execution.sandbox import gas
from node.execution.sandbox.canonical import canonical_text
from node.execution.sandbox.errors import ContractFault
from node.execution.sandbox.guards import charge_value


class StatePort(Protocol):
    """Where a worker gets committed state: the host, over the pipe (or a test double)."""

    def get(self, index: int, key: str) -> str | None: ...

    def range(self, index: int, prefix: str, limit: int | None = None) -> list[tuple[str, str]]: ...


class BlockView:
    """State as seen by invocation `index` of the current batch."""

    def __init__(self, port: StatePort, known: dict[str, str | None] | None = None) -> None:
        self._port = port
        self._base: dict[str, str | None] = dict(known) if known else {}
        self.overlay: dict[str, str | None] = {}

    def get(self, index: int, key: str) -> str | None:
        if key in self.overlay:
            return self.overlay[key]
        if key not in self._base:
            self._base[key] = self._port.get(index, key)
        return self._base[key]

    def range(
        self, index: int, prefix: str, limit: int | None = None, hidden: int = 0
    ) -> dict[str, str | None]:
        """The host's keys under `prefix` with the batch's writes on top (None = deleted).
        With a `limit`, enough host keys that the first `limit` visible ones are all here
        even if the batch or the caller (`hidden`: its own deletions) deleted some: each
        deletion hides at most one host key."""
        fetch = None
        if limit is not None:
            fetch = limit + hidden + _deletions(self.overlay, prefix)
        merged: dict[str, str | None] = dict(self._port.range(index, prefix, fetch))
        for key, value in self.overlay.items():
            if key.startswith(prefix):
                merged[key] = value
        return merged


def _deletions(writes: dict[str, str | None], prefix: str) -> int:
    return sum(1 for k, v in writes.items() if v is None and k.startswith(prefix))


@dataclass(frozen=True)
class CallerView:
    identity: str
    name: str
    role: str
    institution: str


def _fault(code: TxCode, message: str) -> ContractFault:
    return ContractFault(code, message)


class Context:
    """What a contract function may do. Only the public names are reachable from contracts
    (the checker allows no attribute beginning with `_`)."""

    __slots__ = (
        "_contract",
        "_dependencies",
        "_events",
        "_index",
        "_meter",
        "_prefix",
        "_read_only",
        "_reads",
        "_view",
        "_writes",
        "block_time",
        "caller",
        "height",
        "tx_id",
    )

    def __init__(
        self,
        *,
        view: BlockView,
        index: int,
        contract: str,
        dependencies: tuple[str, ...],
        meter: gas.Meter,
        caller: CallerView,
        tx_id: str,
        block_time: int,
        height: int,
        read_only: bool,
    ) -> None:
        self._view = view
        self._index = index
        self._contract = contract
        self._prefix = contract + "/"
        self._dependencies = dependencies
        self._meter = meter
        self._read_only = read_only
        self._writes: dict[str, str | None] = {}
        self._reads: set[str] = set()
        self._events: list[tuple[str, str]] = []
        self.caller = caller
        self.tx_id = tx_id
        self.block_time = block_time
        self.height = height

    def _key(self, key: Any) -> str:
        if not isinstance(key, str):
            raise _fault(TxCode.CONTRACT_ERROR, f"state keys are str, not {type(key).__name__}")
        self._meter.charge(gas.STATE_OP + len(key) // gas.CHARS_PER_GAS)
        return self._prefix + key

    def _decode(self, text: str | None) -> Any:
        if text is None:
            return None
        self._meter.charge(len(text) // gas.CHARS_PER_GAS)
        return json.loads(text)

    def get(self, key: str) -> Any:
        stored = self._key(key)
        self._reads.add(stored)
        if stored in self._writes:
            return self._decode(self._writes[stored])
        return self._decode(self._view.get(self._index, stored))

    def get_from(self, contract: str, key: str) -> Any:
        if contract not in self._dependencies:
            raise _fault(
                TxCode.PERMISSION_DENIED,
                f"contract {self._contract!r} reads {contract!r} but does not declare it "
                "in DEPENDENCIES",
            )
        if not isinstance(key, str):
            raise _fault(TxCode.CONTRACT_ERROR, f"state keys are str, not {type(key).__name__}")
        self._meter.charge(gas.STATE_OP + len(key) // gas.CHARS_PER_GAS)
        stored = f"{contract}/{key}"
        self._reads.add(stored)
        return self._decode(self._view.get(self._index, stored))

    def put(self, key: str, value: Any) -> None:
        stored = self._key(key)
        if self._read_only:
            raise _fault(TxCode.PERMISSION_DENIED, "a read-only call cannot write state")
        self._writes[stored] = self._encode(value)

    def delete(self, key: str) -> None:
        stored = self._key(key)
        if self._read_only:
            raise _fault(TxCode.PERMISSION_DENIED, "a read-only call cannot write state")
        self._writes[stored] = None

    def range(self, prefix: str = "", limit: int | None = None) -> list[tuple[str, Any]]:
        """(key, value) under `prefix` in byte order of the keys; with `limit`, the first
        `limit` only (and only those are read: a sweep over a long index stays cheap)."""
        stored_prefix = self._key(prefix)
        if limit is not None and not (type(limit) is int and limit > 0):
            raise _fault(TxCode.CONTRACT_ERROR, "range limit must be a positive int")
        merged = self._view.range(
            self._index, stored_prefix, limit, _deletions(self._writes, stored_prefix)
        )
        for key, value in self._writes.items():
            if key.startswith(stored_prefix):
                merged[key] = value
        # Byte order of the stored keys, as StateReader.range promises.
        keys = sorted((k for k, v in merged.items() if v is not None), key=str.encode)[:limit]
        self._meter.charge(len(keys) * gas.RANGE_ITEM)
        self._reads.update(keys)
        strip = len(self._prefix)
        return [(k[strip:], self._decode(merged[k])) for k in keys]

    def emit(self, event: str, data: Any = None) -> None:
        if not isinstance(event, str):
            raise _fault(TxCode.CONTRACT_ERROR, "event names are str")
        self._meter.charge(gas.STATE_OP + len(event) // gas.CHARS_PER_GAS)
        self._events.append((event, self._encode(data)))

    def _encode(self, value: Any) -> str:
        charge_value(self._meter, value)
        try:
            return canonical_text(value)
        except ValueError as exc:
            raise _fault(TxCode.CONTRACT_ERROR, str(exc)) from None
