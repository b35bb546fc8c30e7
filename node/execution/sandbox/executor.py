"""Loads instrumented contracts and runs invocations; the code that runs inside a worker.

It speaks plain dicts (the wire shapes of `protocol.py`), so the same object serves the
sandbox worker and the in-process tests. Each loaded module gets its own globals, builtins
and guards bound to one shared `Meter`, which is reset per invocation; module state is
immutable by the checker's rules, so a call cannot see anything an earlier call did.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from node.codes import TxCode
from node.execution.sandbox import gas
from node.execution.sandbox.canonical import canonical_text
from node.execution.sandbox.checker import EntryPoint, check_source
from node.execution.sandbox.context import BlockView, CallerView, Context, StatePort
from node.execution.sandbox.errors import ContractFault, OutOfGas
from node.execution.sandbox.guards import PermissionDenied, charge_value, make_guards, value_size
from node.execution.sandbox.instrument import instrument
from node.execution.types import ContractRejected

LOAD_GAS = 100_000  # module-level code only binds constants; this is generous
MESSAGE_LIMIT = 300


class ResourceExhausted(BaseException):
    """The interpreter ran out of memory: the worker's state is suspect, so it must exit."""


@dataclass(frozen=True)
class LoadedContract:
    name: str
    namespace: dict[str, Any]
    entry_points: dict[str, EntryPoint]
    dependencies: tuple[str, ...]


def _test_probe_syscalls() -> list[str]:
    """Test hook: try what seccomp must forbid, from inside the worker, past the checker."""

    def open_file() -> None:
        os.open("/etc/hostname", os.O_RDONLY)

    def open_socket() -> None:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def new_process() -> None:
        if os.fork() == 0:  # pragma: no cover - must never succeed in a worker
            os._exit(0)

    def run_program() -> None:
        os.execv("/bin/true", ["true"])

    results = []
    for attempt in (open_file, open_socket, new_process, run_program):
        try:
            attempt()
            results.append("allowed")
        except OSError as exc:
            results.append(f"errno {exc.errno}")
    return results


def _test_spin() -> None:
    """Test hook: an unmetered endless computation (engine code is not instrumented)."""
    while True:
        pass


def _test_abort() -> None:
    """Test hook: the worker dies as a crashing interpreter would."""
    os._exit(70)


class Executor:
    def __init__(self, port: StatePort, *, test_hooks: bool = False) -> None:
        self._meter = gas.Meter(LOAD_GAS)
        self._port = port
        self._view = BlockView(port)
        self._contracts: dict[str, LoadedContract] = {}
        self._test_hooks = test_hooks

    def load(self, name: str, source: str, declared: tuple[str, ...] = ()) -> LoadedContract:
        """Checks, instruments and runs the module body; raises ContractRejected."""
        checked = check_source(source, filename=f"<contract {name}>")
        if declared and tuple(declared) != checked.dependencies:
            raise ContractRejected(
                f"line 0: DEPENDENCIES {checked.dependencies!r} in the source differ from "
                f"the deployment's {tuple(declared)!r}"
            )
        code = instrument(checked.tree, f"<contract {name}>")
        helpers, builtins = make_guards(self._meter)
        if self._test_hooks:
            builtins["test_probe_syscalls"] = _test_probe_syscalls
            builtins["test_abort"] = _test_abort
            builtins["test_spin"] = _test_spin
        namespace: dict[str, Any] = {"__builtins__": builtins, "__name__": name, **helpers}
        self._reset_meter(LOAD_GAS)
        try:
            exec(code, namespace)
        except (OutOfGas, ContractFault, Exception) as exc:
            raise ContractRejected(f"line 0: module body failed: {exc}") from None
        loaded = LoadedContract(name, namespace, checked.entry_points, checked.dependencies)
        self._contracts[name] = loaded
        return loaded

    def begin_batch(self, known: dict[str, str | None] | None = None) -> None:
        """Forgets the previous batch's state (the host's may have changed since) and
        starts from `known`: values the host sent ahead with the batch."""
        self._view = BlockView(self._port, known)

    def _reset_meter(self, limit: int) -> None:
        self._meter.limit = limit
        self._meter.used = 0
        self._meter.depth = 0

    def run(self, index: int, call: dict[str, Any]) -> dict[str, Any]:
        """Runs one invocation of the batch; on success its writes join the overlay."""
        outcome = self._run(index, call)
        if outcome["code"] == TxCode.VALID:
            self._view.overlay.update(outcome["writes"])
        return outcome

    def _run(self, index: int, call: dict[str, Any]) -> dict[str, Any]:
        self._reset_meter(int(call["g"]))
        contract = self._contracts.get(call["c"])
        if contract is None:
            return _failed(TxCode.UNKNOWN_CONTRACT, f"no contract {call['c']!r} loaded", 0)
        entry = contract.entry_points.get(call["f"])
        if entry is None:
            return _failed(TxCode.UNKNOWN_FUNCTION, f"{call['c']} has no function {call['f']!r}", 0)
        args = call["a"]
        problem = _argument_problem(entry, args)
        if problem:
            return _failed(TxCode.BAD_ARGUMENTS, problem, 0)
        identity, name, role, institution = call["caller"]
        ctx = Context(
            view=self._view,
            index=index,
            contract=contract.name,
            dependencies=contract.dependencies,
            meter=self._meter,
            caller=CallerView(identity, name, role, institution),
            tx_id=call["tx"],
            block_time=int(call["t"]),
            height=int(call["h"]),
            read_only=bool(call["ro"]),
        )
        meter = self._meter
        try:
            meter.charge(gas.CALL_BASE)
            value = contract.namespace[entry.name](ctx, **args)
            charge_value(meter, value)
            result = canonical_text(value)
        except OutOfGas:
            return _failed(TxCode.OUT_OF_GAS, f"out of gas (limit {meter.limit})", meter.limit, ctx)
        except ContractFault as fault:
            return _failed(fault.code, fault.message, meter.reported, ctx)
        except PermissionDenied as exc:
            return _failed(TxCode.PERMISSION_DENIED, _describe(exc), meter.reported, ctx)
        except MemoryError:
            raise ResourceExhausted("memory limit reached") from None
        except RecursionError:
            return _failed(TxCode.CONTRACT_ERROR, "recursion limit reached", meter.reported, ctx)
        except Exception as exc:
            return _failed(TxCode.CONTRACT_ERROR, _describe(exc), meter.reported, ctx)
        return {
            "code": int(TxCode.VALID),
            "msg": "",
            "result": result,
            "writes": ctx._writes,
            "reads": sorted(ctx._reads),
            "events": ctx._events,
            "gas": meter.reported,
        }


def _describe(exc: BaseException) -> str:
    """The exception as a short message, without letting a huge or address-bearing argument
    (`raise ValueError([s] * 10**6)`, a function object) cost memory or leak addresses."""
    name = type(exc).__name__
    if isinstance(exc, PermissionDenied):
        name = ""
    try:
        gas_for_text = gas.Meter(MESSAGE_LIMIT * gas.CHARS_PER_GAS)
        for arg in exc.args:
            value_size(gas_for_text, arg)
        text = str(exc) if not isinstance(exc, KeyError) else repr(exc.args[0])
    except (OutOfGas, ContractFault, IndexError):
        text = "(message too large or not printable)"
    return (f"{name}: {text}" if name else text)[:MESSAGE_LIMIT]


def _argument_problem(entry: EntryPoint, args: Any) -> str:
    if not isinstance(args, dict):
        return "arguments must be a JSON object"
    if args.keys() == entry.required:  # the common case: exactly the required arguments
        return ""
    names = set(args)
    missing = entry.required - names
    if missing:
        return f"{entry.name}: missing arguments {sorted(missing)}"
    unknown = names - entry.required - entry.optional
    if unknown and not entry.takes_any:
        return f"{entry.name}: unexpected arguments {sorted(unknown)}"
    if any(not isinstance(n, str) or n.startswith("_") for n in names):
        return f"{entry.name}: argument names may not begin with '_'"
    return ""


def _failed(
    code: TxCode, message: str, gas_used: int, ctx: Context | None = None
) -> dict[str, Any]:
    reads = sorted(ctx._reads) if ctx is not None else []
    return {
        "code": int(code),
        "msg": message[:MESSAGE_LIMIT],
        "result": "null",
        "writes": {},
        "reads": reads,
        "events": [],
        "gas": gas_used,
    }
