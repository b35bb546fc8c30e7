"""Fixtures that run real node processes on loopback, ports chosen free at run time."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.localnet import NodeProcess, free_base_port
from node.provisioning import Plan, init_consortium


@pytest.fixture(scope="session")
def consortium_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated consortium (1 hospital + a second institution for quota tests),
    copied per test: key generation is the slow part."""
    out = tmp_path_factory.mktemp("template") / "c"
    init_consortium(Plan(out, hospitals=2, consenters=1, base_port=7050))
    return out


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


@pytest.fixture
def net(consortium_template: Path, tmp_path: Path) -> Iterator[Net]:
    root = tmp_path / "c"
    shutil.copytree(consortium_template, root)
    n = Net(root)
    yield n
    if n.node is not None:
        n.node.stop()
