"""Helpers for tests that run real node processes and the real `medledger` command."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.localnet import NodeProcess, free_base_port


@dataclass
class Run:
    rc: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def medledger(*args: str, timeout: float = 120) -> Run:
    proc = subprocess.run(
        [sys.executable, "-m", "node", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


class Net:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.api = ""
        self.node: NodeProcess | None = None

    @property
    def config(self) -> Path:
        return self.root / "nodes" / "hosp1" / "config.toml"

    @property
    def data_dir(self) -> Path:
        return self.root / "nodes" / "hosp1" / "data"

    def identity(self, name: str) -> Path:
        return self.root / "identities" / name

    def start(self, env: dict[str, str] | None = None) -> NodeProcess:
        base = free_base_port()
        self.api = f"127.0.0.1:{base}"
        full_env = {
            "MEDLEDGER_API_LISTEN": self.api,
            "MEDLEDGER_P2P_LISTEN": f"/ip4/127.0.0.1/tcp/{base + 1}",
            "MEDLEDGER_METRICS_LISTEN": f"127.0.0.1:{base + 2}",
            **(env or {}),
        }
        self.node = NodeProcess("hosp1", self.config, self.api, self.root / "logs" / "hosp1.log")
        self.node.start(full_env)
        self.node.wait_ready()
        return self.node

    def stop(self) -> int:
        assert self.node is not None
        return self.node.stop()
