"""The request loop of a sandbox worker (runs after `confine.confine`).

A worker serves one host over fd 0 until the host closes it. State it does not have is
asked for over the same socket; writes stay in the worker until the outcome is sent.
Any condition that leaves the interpreter's state in doubt (out of memory, a broken
frame) ends the process: the host replaces it and re-runs the batch on a fresh worker.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from node.codes import TxCode
from node.execution.sandbox.channel import Channel, ChannelClosed
from node.execution.sandbox.errors import ContractFault
from node.execution.sandbox.executor import Executor, ResourceExhausted
from node.execution.sandbox.protocol import ProtocolViolation
from node.execution.types import ContractRejected

OUTCOMES_PER_PART = 50
EXIT_HOST_GONE = 0
EXIT_OUT_OF_MEMORY = 75
EXIT_PROTOCOL = 76


class _HostPort:
    """StatePort answered by the host over the channel."""

    def __init__(self, channel: Channel) -> None:
        self._channel = channel

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        self._channel.send(request)
        reply = self._channel.recv()
        if not isinstance(reply, dict):
            raise ProtocolViolation("state reply is not an object")
        if "deny" in reply:
            raise ContractFault(TxCode.PERMISSION_DENIED, str(reply["deny"]))
        return reply

    def get(self, index: int, key: str) -> str | None:
        value = self._ask({"op": "get", "i": index, "k": key}).get("v")
        if value is not None and not isinstance(value, str):
            raise ProtocolViolation("state value is not text")
        return value

    def range(self, index: int, prefix: str, limit: int | None = None) -> list[tuple[str, str]]:
        request: dict[str, Any] = {"op": "range", "i": index, "p": prefix}
        if limit is not None:
            request["n"] = limit
        items = self._ask(request).get("items", [])
        return [(str(k), str(v)) for k, v in items]


def serve(sock: socket.socket, *, test_hooks: bool = False) -> int:
    """Serves requests until the host hangs up; returns the process exit status."""
    channel = Channel(sock)
    executor = Executor(_HostPort(channel), test_hooks=test_hooks)
    try:
        while True:
            message = channel.recv()
            op = message.get("op") if isinstance(message, dict) else None
            if op == "run":
                known = message.get("known")
                executor.begin_batch(known if isinstance(known, dict) else None)
                outcomes = []
                for index, call in enumerate(message["calls"]):
                    outcomes.append(executor.run(index, call))
                    if len(outcomes) == OUTCOMES_PER_PART:
                        # Lets the host check these while this worker runs the next ones.
                        channel.send({"op": "part", "outcomes": outcomes})
                        outcomes = []
                channel.send({"op": "done", "outcomes": outcomes})
            elif op == "load":
                try:
                    executor.load(message["name"], message["source"], tuple(message["deps"]))
                    channel.send({"ok": True})
                except ContractRejected as exc:
                    channel.send({"ok": False, "error": str(exc)})
            elif op == "ping":
                channel.send({"op": "pong", "pid": os.getpid()})
            else:
                return EXIT_PROTOCOL
    except ChannelClosed:
        return EXIT_HOST_GONE
    except ResourceExhausted:
        return EXIT_OUT_OF_MEMORY
    except (ProtocolViolation, KeyError, TypeError, ValueError):
        return EXIT_PROTOCOL
