"""The in-process contract engine of the foundation.

It runs the module's functions in the node's own interpreter with a trimmed set of
builtins. That is NOT isolation: a hostile module could escape it. It exists so the
ledger can be built and tested before the OS-level sandbox (node/execution/sandbox/),
and as the baseline that the sandbox's benchmark is measured against. Only code that
arrived through the genesis block or governance is ever loaded.
"""

from __future__ import annotations

import builtins
import inspect
import json
from collections.abc import Callable, Iterator
from typing import Any

from node.codes import TxCode
from node.execution.types import (
    Caller,
    ContractEvent,
    ContractModule,
    ContractRejected,
    Invocation,
    JSONValue,
    Outcome,
    StateReader,
    canonical_json,
    state_key,
)

ENGINE_VERSION = 1

_SAFE_BUILTIN_NAMES = (
    "abs",
    "all",
    "any",
    "bool",
    "dict",
    "enumerate",
    "filter",
    "frozenset",
    "int",
    "isinstance",
    "len",
    "list",
    "map",
    "max",
    "min",
    "range",
    "reversed",
    "set",
    "sorted",
    "str",
    "sum",
    "tuple",
    "zip",
    "ValueError",
    "KeyError",
    "TypeError",
    "PermissionError",
    "Exception",
)
_SAFE_BUILTINS = {name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES}


class _Abort(Exception):
    def __init__(self, code: TxCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Context:
    """What a contract function sees as `ctx` (DESIGN §5)."""

    def __init__(
        self,
        invocation: Invocation,
        state: StateReader,
        dependencies: tuple[str, ...],
    ) -> None:
        self._inv = invocation
        self._state = state
        self._deps = dependencies
        self._prefix = invocation.contract + "/"
        self.writes: dict[bytes, bytes | None] = {}
        self.reads: set[bytes] = set()
        self.events: list[ContractEvent] = []
        self.caller: Caller = invocation.caller
        self.tx_id: str = invocation.tx_id.hex()
        self.block_time: int = invocation.block_time_ms
        self.height: int = invocation.height

    def _read(self, key: bytes) -> JSONValue:
        self.reads.add(key)
        raw = self.writes[key] if key in self.writes else self._state.get(key)
        return None if raw is None else json.loads(raw)

    @staticmethod
    def _key(key: object) -> str:
        if not isinstance(key, str) or not key:
            raise _Abort(TxCode.CONTRACT_ERROR, "state keys must be non-empty strings")
        return key

    def get(self, key: str) -> JSONValue:
        return self._read(state_key(self._inv.contract, self._key(key)))

    def get_from(self, contract: str, key: str) -> JSONValue:
        if contract not in self._deps:
            raise _Abort(
                TxCode.PERMISSION_DENIED,
                f"{self._inv.contract} does not declare {contract!r} as a dependency",
            )
        return self._read(state_key(contract, self._key(key)))

    def put(self, key: str, value: JSONValue) -> None:
        self._write(state_key(self._inv.contract, self._key(key)), canonical_json(value))

    def delete(self, key: str) -> None:
        self._write(state_key(self._inv.contract, self._key(key)), None)

    def _write(self, key: bytes, value: bytes | None) -> None:
        if self._inv.read_only:
            raise _Abort(TxCode.PERMISSION_DENIED, "a query cannot change state")
        self.writes[key] = value

    def range(self, prefix: str = "") -> Iterator[tuple[str, JSONValue]]:
        full = state_key(self._inv.contract, prefix)
        cut = len(self._prefix)
        merged: dict[bytes, bytes | None] = dict(self._state.range(full))
        merged.update({k: v for k, v in self.writes.items() if k.startswith(full)})
        for key in sorted(merged):
            raw = merged[key]
            if raw is not None:
                self.reads.add(key)
                yield key[cut:].decode(), json.loads(raw)

    def emit(self, event: str, data: JSONValue) -> None:
        if self._inv.read_only:
            return
        self.events.append(ContractEvent(str(event), canonical_json(data)))


class InProcessEngine:
    def __init__(self) -> None:
        self._modules: dict[str, tuple[ContractModule, dict[str, Callable[..., Any]]]] = {}

    def load(self, module: ContractModule) -> None:
        namespace: dict[str, Any] = {"__builtins__": _SAFE_BUILTINS, "__name__": module.name}
        try:
            code = compile(module.source, f"<contract {module.name}>", "exec")
            exec(code, namespace)
        except Exception as exc:
            raise ContractRejected(f"contract {module.name} does not load: {exc}") from exc
        functions: dict[str, Callable[..., Any]] = {
            name: fn
            for name, fn in namespace.items()
            if not name.startswith("_") and inspect.isfunction(fn)
        }
        deps = namespace.get("DEPENDENCIES", ())
        module = ContractModule(
            module.name, module.source, module.code_hash, module.engine_version, tuple(deps)
        )
        self._modules[module.name] = (module, functions)

    def has(self, contract: str) -> bool:
        return contract in self._modules

    def execute(self, invocation: Invocation, state: StateReader) -> Outcome:
        loaded = self._modules.get(invocation.contract)
        if loaded is None:
            return Outcome(TxCode.UNKNOWN_CONTRACT, f"no contract {invocation.contract!r}")
        module, functions = loaded
        fn = functions.get(invocation.function)
        if fn is None:
            return Outcome(
                TxCode.UNKNOWN_FUNCTION,
                f"{invocation.contract} has no public function {invocation.function!r}; "
                f"it has {sorted(functions)}",
            )
        ctx = Context(invocation, state, module.dependencies)
        try:
            inspect.signature(fn).bind(ctx, **invocation.args)
        except TypeError as exc:
            return Outcome(TxCode.BAD_ARGUMENTS, f"{invocation.function}: {exc}")
        try:
            result = canonical_json(fn(ctx, **invocation.args))
        except _Abort as exc:
            return Outcome(exc.code, str(exc))
        except PermissionError as exc:
            return Outcome(TxCode.PERMISSION_DENIED, str(exc))
        except RecursionError:
            return Outcome(TxCode.OUT_OF_GAS, "recursion too deep")
        except Exception as exc:
            return Outcome(TxCode.CONTRACT_ERROR, f"{type(exc).__name__}: {exc}")
        return Outcome(
            TxCode.VALID,
            result=result,
            writes=dict(ctx.writes),
            reads=frozenset(ctx.reads),
            events=tuple(ctx.events),
        )
