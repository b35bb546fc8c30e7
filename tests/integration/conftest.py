"""Fixtures that run real node processes on loopback, ports chosen free at run time."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from netutil import Net

from node.provisioning import Plan, init_consortium


@pytest.fixture(scope="session")
def consortium_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated consortium (1 hospital + a second institution for quota tests),
    copied per test: key generation is the slow part."""
    out = tmp_path_factory.mktemp("template") / "c"
    init_consortium(Plan(out, hospitals=2, consenters=1, base_port=7050))
    return out


@pytest.fixture
def net(consortium_template: Path, tmp_path: Path) -> Iterator[Net]:
    root = tmp_path / "c"
    shutil.copytree(consortium_template, root)
    n = Net(root)
    yield n
    if n.node is not None:
        n.node.stop()
