"""Exceptions the sandbox raises to the node, and the signals that end a contract call.

`OutOfGas` and `ContractFault` derive from `BaseException` on purpose: the checker only
lets contracts catch `Exception` and its listed subclasses, so a contract can never
swallow the engine's signal and keep running.
"""

from __future__ import annotations

from node.codes import TxCode


class NondeterministicExecution(Exception):
    """An invocation killed a fresh worker on every try: no deterministic result exists.

    The node must halt block processing and raise an alert naming `tx_id`.
    """

    def __init__(self, tx_id: bytes, attempts: int, cause: str) -> None:
        super().__init__(
            f"transaction {tx_id.hex()} killed its sandbox worker {attempts} times "
            f"(last: {cause}); halting: no deterministic outcome exists"
        )
        self.tx_id = tx_id
        self.attempts = attempts
        self.cause = cause


class SandboxUnavailable(Exception):
    """The zygote could not be started or has died; the engine cannot run contracts."""


class WorkerLost(Exception):
    """A worker died, hung past its deadline, or broke the protocol (host side only)."""


class OutOfGas(BaseException):
    """The call's gas limit was reached; raised again by every later charge."""


class ContractFault(BaseException):
    """The engine refuses an operation (too large, not allowed, denied) and ends the call."""

    def __init__(self, code: TxCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
