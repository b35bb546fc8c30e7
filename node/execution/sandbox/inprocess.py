"""The checked, metered engine without OS isolation: for tests and for comparisons.

It runs exactly the instrumented code a worker runs (same checker, same guards, same gas),
in the calling process. It is *not* a security boundary — in-process Python sandboxes are
escapable — so the node uses `SandboxEngine`; this one lets tests check the language rules
and the metering fast, and shows that gas does not depend on where the code runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from node.codes import TxCode
from node.execution.sandbox.errors import ContractFault
from node.execution.sandbox.executor import Executor
from node.execution.sandbox.protocol import call_to_wire, key_allowed, outcome_from_wire
from node.execution.types import ContractModule, Invocation, Outcome, StateReader


class _ReaderPort:
    """Serves an executor's state reads from a StateReader, with the host's permission check."""

    def __init__(self) -> None:
        self.state: StateReader | None = None
        self.batch: Sequence[Invocation] = ()
        self.dependencies: dict[str, tuple[str, ...]] = {}

    def _check(self, index: int, key: str) -> None:
        contract = self.batch[index].contract
        if not key_allowed(contract, self.dependencies.get(contract, ()), key):
            raise ContractFault(TxCode.PERMISSION_DENIED, f"read of {key!r} not allowed")

    def get(self, index: int, key: str) -> str | None:
        self._check(index, key)
        assert self.state is not None
        value = self.state.get(key.encode())
        return None if value is None else value.decode()

    def range(self, index: int, prefix: str, limit: int | None = None) -> list[tuple[str, str]]:
        self._check(index, prefix)
        assert self.state is not None
        items = itertools.islice(self.state.range(prefix.encode()), limit)
        return [(k.decode(), v.decode()) for k, v in items]


class InProcessMeteredEngine:
    """ContractEngine running checked, instrumented contracts in this process."""

    def __init__(self) -> None:
        self._port = _ReaderPort()
        self._executor = Executor(self._port)

    def load(self, module: ContractModule) -> None:
        loaded = self._executor.load(module.name, module.source, module.dependencies)
        self._port.dependencies[module.name] = loaded.dependencies

    def execute(self, invocation: Invocation, state: StateReader) -> Outcome:
        return self.execute_batch([invocation], state)[0]

    def execute_batch(self, invocations: Sequence[Invocation], state: StateReader) -> list[Outcome]:
        self._port.state, self._port.batch = state, invocations
        self._executor.begin_batch()
        outcomes = []
        for index, invocation in enumerate(invocations):
            raw = self._executor.run(index, call_to_wire(invocation))
            deps = self._port.dependencies.get(invocation.contract, ())
            outcomes.append(outcome_from_wire(invocation, deps, raw))
        return outcomes
