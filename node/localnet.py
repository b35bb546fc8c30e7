"""Running node daemons as child processes on loopback: used by the demo, the tests and
deploy/localnet. Ports are chosen free at run time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from node.sdk.client import Client, ClientError


def free_base_port(span: int = 10, count: int = 1, host: str = "127.0.0.1") -> int:
    """A base port P such that P .. P + span*count - 1 are all free right now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((host, 0))
            base: int = s.getsockname()[1]
        if base + span * count >= 65000:
            continue
        if all(_free(host, base + i) for i in range(span * count)):
            return base
    raise RuntimeError("no free range of ports found on loopback")


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class NodeProcess:
    name: str
    config: Path
    api: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self, env: dict[str, str] | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        full_env = {**os.environ, "MEDLEDGER_LOG_FORMAT": "json", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "node", "start", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        with Client(self.api, timeout_s=2.0) as client:
            while True:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"node {self.name} exited with {self.proc.returncode} during start-up; "
                        f"see {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    client.status()
                    return
                except ClientError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"node {self.name} did not serve within {timeout_s} s; "
                            f"see {self.log_path}"
                        ) from None
                    time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Signal the node and wait for it to exit; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
