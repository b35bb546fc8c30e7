"""`SandboxEngine`: the node's ContractEngine, running contracts in confined workers.

One worker serves the engine at a time; a block's invocations go to it in one `run`
request (`execute_batch`), and the worker asks back only for state it has not seen in this
batch. The host checks everything a worker says (protocol.outcome_from_wire) and answers a
state request only for the calling contract's namespace or its declared dependencies.

Failure policy: if a worker dies, hangs past its deadline or breaks the protocol, it is
killed and replaced. A failed batch is re-run one invocation at a time (earlier writes of
the batch applied host-side), so the invocation that kills workers is identified; one that
kills a fresh worker `max_attempts` times raises NondeterministicExecution.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator, Sequence
from typing import Any

from node.codes import TxCode
from node.execution.sandbox.channel import ChannelClosed, ChannelTimeout
from node.execution.sandbox.checker import check_source
from node.execution.sandbox.errors import NondeterministicExecution, SandboxUnavailable, WorkerLost
from node.execution.sandbox.launcher import WorkerConnection, Zygote
from node.execution.sandbox.protocol import (
    ProtocolViolation,
    call_to_wire,
    key_allowed,
    outcome_from_wire,
)
from node.execution.sandbox.readahead import ReadAhead
from node.execution.sandbox.version import ENGINE_VERSION
from node.execution.types import (
    ContractModule,
    ContractRejected,
    Invocation,
    Outcome,
    StateReader,
    overlay_range,
)
from node.procstat import cpu_seconds, stat_fields

LOAD_TIMEOUT = 10.0


class OverlayState:
    """A StateReader with a batch's earlier writes applied on top (None = deleted)."""

    def __init__(self, base: StateReader) -> None:
        self._base = base
        self.writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        return self._base.get(key)

    def range(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return overlay_range(self._base.range(prefix), self.writes, prefix)


class SandboxEngine:
    """ContractEngine over sandbox workers forked by `zygote` (which the caller owns)."""

    def __init__(
        self,
        zygote: Zygote,
        *,
        base_timeout: float = 2.0,
        seconds_per_gas: float = 2e-6,
        max_attempts: int = 3,
        prefetch: bool = True,
    ) -> None:
        self._zygote = zygote
        self._base_timeout = base_timeout
        self._seconds_per_gas = seconds_per_gas
        self._max_attempts = max_attempts
        # Deadlines extended because the worker was runnable but short of CPU.
        self.starved_waits = 0
        self._read_ahead = ReadAhead() if prefetch else None
        self._modules: dict[str, ContractModule] = {}
        self._dependencies: dict[str, tuple[str, ...]] = {}
        self._worker: WorkerConnection | None = None
        self.workers_started = 0
        self.state_requests = 0  # worker → host reads: each one a round trip

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def worker_pid(self) -> int | None:
        return self._worker.pid if self._worker is not None else None

    def close(self) -> None:
        """Stops the current worker. The zygote is closed by its owner."""
        self._discard_worker()

    def __enter__(self) -> SandboxEngine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _discard_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        worker.channel.close()  # an idle worker exits on EOF; a busy one is killed
        with contextlib.suppress(SandboxUnavailable):
            self._zygote.kill(worker.pid)

    def _ensure_worker(self) -> WorkerConnection:
        if self._worker is not None:
            return self._worker
        worker = self._zygote.spawn()
        self.workers_started += 1
        self._worker = worker
        try:
            for module in self._modules.values():
                self._send_load(worker, module)
        except WorkerLost:
            self._discard_worker()
            raise
        return worker

    # -- loading -----------------------------------------------------------------------

    def load(self, module: ContractModule) -> None:
        """Checks the module here, then loads it into the worker (and into every future one).

        Raises ContractRejected for code the checker or the worker's load refuses.
        """
        if module.engine_version != ENGINE_VERSION:
            raise ContractRejected(
                f"line 0: module was deployed for engine version {module.engine_version}, "
                f"this engine is version {ENGINE_VERSION}"
            )
        checked = check_source(module.source, filename=f"<contract {module.name}>")
        for attempt in range(self._max_attempts):
            try:
                self._send_load(self._ensure_worker(), module)
                break
            except WorkerLost:
                self._discard_worker()
                if attempt + 1 == self._max_attempts:
                    raise
        self._modules[module.name] = module
        self._dependencies[module.name] = checked.dependencies

    def _send_load(self, worker: WorkerConnection, module: ContractModule) -> None:
        message = {
            "op": "load",
            "name": module.name,
            "source": module.source,
            "deps": list(module.dependencies),
        }
        try:
            worker.channel.send(message)
            reply = worker.channel.recv(time.monotonic() + LOAD_TIMEOUT)
        except (ChannelClosed, ChannelTimeout, ProtocolViolation) as exc:
            raise WorkerLost(f"worker {worker.pid} lost while loading: {exc}") from None
        if not isinstance(reply, dict) or "ok" not in reply:
            raise WorkerLost(f"worker {worker.pid} sent {reply!r} to a load")
        if not reply["ok"]:
            raise ContractRejected(str(reply.get("error", "rejected by the worker")))

    # -- execution ---------------------------------------------------------------------

    def execute(self, invocation: Invocation, state: StateReader) -> Outcome:
        return self.execute_batch([invocation], state)[0]

    def execute_batch(self, invocations: Sequence[Invocation], state: StateReader) -> list[Outcome]:
        """Runs a block's invocations in order; each sees the writes of earlier VALID ones.

        `state` is the state before the first invocation. Raises NondeterministicExecution
        if one invocation keeps killing fresh workers, SandboxUnavailable if no worker can be
        started at all.
        """
        if not invocations:
            return []
        try:
            return self._run_on_worker(invocations, state)
        except WorkerLost as lost:
            self._discard_worker()
            if len(invocations) == 1:
                return [self._retry_one(invocations[0], state, first_failure=str(lost))]
        overlay = OverlayState(state)
        outcomes = []
        for invocation in invocations:
            outcome = self._retry_one(invocation, overlay, first_failure=None)
            if outcome.code == TxCode.VALID:
                overlay.writes.update(outcome.writes)
            outcomes.append(outcome)
        return outcomes

    def _retry_one(
        self, invocation: Invocation, state: StateReader, first_failure: str | None
    ) -> Outcome:
        failures = [first_failure] if first_failure is not None else []
        while len(failures) < self._max_attempts:
            try:
                return self._run_on_worker([invocation], state)[0]
            except WorkerLost as lost:
                self._discard_worker()
                failures.append(str(lost))
        raise NondeterministicExecution(invocation.tx_id, len(failures), failures[-1])

    def _deadline(self, invocations: Sequence[Invocation]) -> float:
        budget = sum(inv.gas_limit for inv in invocations) * self._seconds_per_gas
        return time.monotonic() + self._base_timeout + budget

    def _run_on_worker(
        self, invocations: Sequence[Invocation], state: StateReader
    ) -> list[Outcome]:
        worker = self._ensure_worker()
        clock = _WorkerClock(worker.pid, self._deadline(invocations) - time.monotonic())
        deadline = clock.deadline
        channel = worker.channel
        denied: set[int] = set()
        try:
            known = self._known_values(invocations, state)
            channel.send(
                {"op": "run", "calls": [call_to_wire(inv) for inv in invocations], "known": known}
            )
            outcomes: list[Outcome] = []
            while True:
                try:
                    message = channel.recv(deadline)
                except ChannelTimeout:
                    if not clock.starved():
                        raise
                    self.starved_waits += 1
                    deadline = clock.extend()
                    continue
                op = message.get("op") if isinstance(message, dict) else None
                if op in ("part", "done"):
                    self._convert(invocations, outcomes, message.get("outcomes"), denied, known)
                    if op == "done":
                        if len(outcomes) != len(invocations):
                            raise ProtocolViolation("outcome count does not match the batch")
                        return outcomes
                elif op in ("get", "range"):
                    channel.send(self._answer(invocations, message, state, denied))
                else:
                    raise ProtocolViolation(f"unexpected message {op!r}")
        except ChannelTimeout:
            raise WorkerLost(f"worker {worker.pid} passed its deadline") from None
        except ChannelClosed as exc:
            raise WorkerLost(f"worker {worker.pid} died: {exc}") from None
        except ProtocolViolation as exc:
            raise WorkerLost(f"worker {worker.pid} broke the protocol: {exc}") from None

    def _known_values(
        self, invocations: Sequence[Invocation], state: StateReader
    ) -> dict[str, str | None]:
        if self._read_ahead is None:
            return {}
        known: dict[str, str | None] = {}
        for invocation in invocations:
            # Predictions name the call's own namespace or keys it was allowed to read.
            for key in self._read_ahead.predict(invocation):
                if key not in known:
                    value = state.get(key.encode())
                    known[key] = None if value is None else value.decode()
        return known

    def _answer(
        self,
        invocations: Sequence[Invocation],
        message: dict[str, Any],
        state: StateReader,
        denied: set[int],
    ) -> dict[str, Any]:
        self.state_requests += 1
        index, key = message.get("i"), message.get("k", message.get("p"))
        if not (type(index) is int and 0 <= index < len(invocations) and isinstance(key, str)):
            raise ProtocolViolation("malformed state request")
        contract = invocations[index].contract
        if not key_allowed(contract, self._dependencies.get(contract, ()), key):
            denied.add(index)
            return {"deny": f"{contract!r} may not read {key!r}"}
        if message["op"] == "get":
            value = state.get(key.encode())
            return {"v": None if value is None else value.decode()}
        limit = message.get("n")
        if limit is not None and not (type(limit) is int and limit > 0):
            raise ProtocolViolation("malformed range limit")
        items = itertools.islice(state.range(key.encode()), limit)
        return {"items": [[k.decode(), v.decode()] for k, v in items]}

    def _convert(
        self,
        invocations: Sequence[Invocation],
        outcomes: list[Outcome],
        raw: Any,
        denied: set[int],
        known: dict[str, str | None],
    ) -> None:
        """Checks the next outcomes in call order and appends them to `outcomes`."""
        if not isinstance(raw, list) or len(outcomes) + len(raw) > len(invocations):
            raise ProtocolViolation("more outcomes than calls")
        for item in raw:
            index = len(outcomes)
            invocation = invocations[index]
            deps = self._dependencies.get(invocation.contract, ())
            outcome = outcome_from_wire(invocation, deps, item)
            if index in denied and outcome.code != TxCode.PERMISSION_DENIED:
                raise ProtocolViolation(f"call {index} succeeded after a denied read")
            if self._read_ahead is not None and any(k.decode() not in known for k in outcome.reads):
                self._read_ahead.learn(invocation, outcome.reads)
            outcomes.append(outcome)


class _WorkerClock:
    """The time budget of one request to a worker, counted in the worker's CPU time: on
    a loaded machine a worker that gets little CPU is slow, not hung, and a wall-clock
    deadline alone would call a deterministic execution "lost" (and, three times in a
    row, halt the node). The wall clock still caps the wait at STARVED_FACTOR budgets."""

    STARVED_FACTOR = 10

    def __init__(self, pid: int, budget_s: float) -> None:
        self.pid = pid
        self.budget_s = budget_s
        self.started = time.monotonic()
        self.cpu_start = _cpu_seconds(pid)
        self.deadline = self.started + budget_s

    def starved(self) -> bool:
        """True when the deadline passed but the worker used less CPU than its budget
        and the wall-clock cap is not reached: it is waiting for a core, not stuck."""
        cpu = _cpu_seconds(self.pid, runnable_only=True)
        if cpu is None or self.cpu_start is None:
            return False  # gone, or sleeping: blocked, not starved
        waited = time.monotonic() - self.started
        return cpu - self.cpu_start < self.budget_s and waited < self.STARVED_FACTOR * self.budget_s

    def extend(self) -> float:
        cpu = _cpu_seconds(self.pid) or 0.0
        left = max(0.5, self.budget_s - (cpu - (self.cpu_start or 0.0)))
        cap = self.started + self.STARVED_FACTOR * self.budget_s
        self.deadline = min(time.monotonic() + left, cap)
        return self.deadline


def _cpu_seconds(pid: int, runnable_only: bool = False) -> float | None:
    """User + system CPU seconds of a process; None if it is gone, or if
    `runnable_only` and it is not running or waiting for a CPU (state R)."""
    fields = stat_fields(pid)
    if fields is None or (runnable_only and fields[0] != "R"):
        return None
    return cpu_seconds(fields)
