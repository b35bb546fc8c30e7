"""Consensus membership by governance, end to end with real node processes (issue 3):
2 consenters, a third hospital and the regulator observing. The leader makes hosp3 a
consenter (learner, then follower), the cluster then commits with one original
consenter stopped (2 of 3), the stopped consenter is removed and commits go on; the
removed node comes back as an observer, and every node's ledger verifies."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from netutil import Run, medledger

from node.localnet import NodeProcess, _nodes, down, up
from node.ops.admin import call as admin_call
from node.ops.admin import socket_path
from node.sdk.client import Client, ClientError, Identity

FAULTS = {"MEDLEDGER_TESTING_FAULT_INJECTION": "true"}
CONSENTERS = ["hosp1", "hosp2"]
ALL = ["hosp1", "hosp2", "hosp3", "regulator"]


class Net:
    def __init__(self, root: Path, procs: list[NodeProcess]) -> None:
        self.root = root
        self.apis = {name: api for name, _config, api in _nodes(root)}
        self.procs = {p.name: p for p in procs}

    def role(self, name: str) -> str:
        try:
            with Client(self.apis[name], timeout_s=3) as c:
                return str(c.status().role)
        except ClientError:
            return "unreachable"

    def height(self, name: str) -> int:
        with Client(self.apis[name], timeout_s=3) as c:
            return int(c.status().height)

    def leader(self, among: list[str]) -> str | None:
        leaders = [n for n in among if self.role(n) == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    def gate(self, name: str, blocked: list[str]) -> None:
        reply = admin_call(
            socket_path(self.root / "nodes" / name / "data"), {"op": "gate", "block": blocked}
        )
        assert reply["ok"], reply

    def consenter(self, verb: str, via: str, node: str, identity: str = "leader") -> Run:
        return medledger(
            "consenter",
            verb,
            "--node",
            self.apis[via],
            "--identity",
            str(self.root / "identities" / identity),
            "--name",
            node,
            "--json",
        )

    def refusal(self, via: str, function: str, node: str) -> tuple[str, str]:
        """Submit a membership change as the leader that must fail: (code, message)."""
        leader = Identity.load(self.root / "identities" / "leader")
        with Client(self.apis[via], timeout_s=20) as c:
            res = c.submit(leader, "consortium", function, {"node": node}, wait=True)
        assert res.status == "invalid", res
        return res.code, res.message

    def put(self, via: str, key: str) -> int:
        """Commit one kv.put through `via`; returns its height."""
        doctor = Identity.load(self.root / "identities" / "hosp1-doctor1")
        with Client(self.apis[via], timeout_s=20) as c:
            res = c.submit(doctor, "kv", "put", {"key": key, "value": 1}, wait=True)
        assert res.status == "committed", res
        return int(res.height)

    def start(self, name: str) -> None:
        config = self.root / "nodes" / name / "config.toml"
        proc = NodeProcess(name, config, self.apis[name], self.root / "logs" / f"{name}.log")
        proc.start(FAULTS)
        proc.wait_ready(60)
        self.procs[name] = proc

    def log_events(self, name: str, event: str) -> list[dict[str, object]]:
        lines = (self.root / "logs" / f"{name}.log").read_text(errors="replace").splitlines()
        out = []
        for line in lines:
            if f'"{event}"' in line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out


def wait(predicate: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    root = tmp_path / "net"
    procs = up(root, hospitals=3, consenters=2, regulator=True, env=FAULTS)
    n = Net(root, procs)
    try:
        wait(lambda: n.leader(CONSENTERS) is not None, "a leader")
        yield n
    finally:
        for proc in n.procs.values():
            proc.stop()
        down(root)


def test_add_and_remove_a_consenter_by_governance(net: Net) -> None:
    leader = net.leader(CONSENTERS)
    assert leader is not None
    other = next(n for n in CONSENTERS if n != leader)
    assert net.role("hosp3") == "observer"

    # Only the leader identity may change membership, and only to something sensible.
    denied = net.consenter("add", leader, "hosp3", identity="hosp1-admin")
    assert denied.rc == 1 and denied.json()["code"] == "PERMISSION_DENIED", denied.out
    assert net.refusal(leader, "add_consenter", "hosp9")[0] == "BAD_ARGUMENTS"
    code, message = net.refusal(leader, "add_consenter", other)
    assert code == "CONTRACT_ERROR" and "already a consenter" in message

    # hosp3 hears nothing from the consenters (only the regulator serves it blocks): it
    # becomes a consenter from chain state but stays a learner without the Raft leader.
    net.gate("hosp3", CONSENTERS)
    added = net.consenter("add", leader, "hosp3")
    assert added.rc == 0, added.out + added.err
    add_height = added.json()["height"]
    wait(lambda: net.role("hosp3") == "learner", "hosp3 to become a learner")
    assert net.height("hosp3") >= add_height
    net.gate("hosp3", [])
    wait(lambda: net.role("hosp3") == "follower", "hosp3 to be promoted")
    changes = [(e["change"], e["node"]) for e in net.log_events(leader, "conf_change_proposed")]
    assert changes == [("add_learner", "hosp3"), ("promote_learner", "hosp3")], changes

    # Two of the three consenters are a quorum now: stop an original one.
    net.procs[other].stop()
    h = net.put("hosp3", "after-stop")
    wait(lambda: net.height("regulator") >= h, "the regulator to sync certified blocks")

    removed = net.consenter("remove", "hosp3", other)
    assert removed.rc == 0, removed.out + removed.err
    wait(
        lambda: (
            ("remove_node", other)
            in [(e["change"], e["node"]) for e in net.log_events(leader, "conf_change_proposed")]
        ),
        "the leader to remove the stopped consenter from Raft",
    )
    wait(lambda: net.role("hosp3") in ("follower", "leader"), "hosp3 to vote again")
    h = net.put(leader, "after-remove")
    wait(lambda: net.height("regulator") >= h, "the regulator after the removal")

    # The removed consenter comes back as an observer and follows by block sync.
    net.start(other)
    wait(lambda: net.role(other) == "observer", f"{other} to become an observer", 40)
    h = net.put("regulator", "at-the-end")
    wait(lambda: all(net.height(n) >= h for n in ALL), "every node at the last block")

    for proc in net.procs.values():
        assert proc.stop() == 0
    down(net.root)
    with ThreadPoolExecutor(len(ALL)) as pool:
        reports = dict(
            zip(
                ALL,
                pool.map(
                    lambda name: medledger(
                        "ledger",
                        "verify",
                        "--data-dir",
                        str(net.root / "nodes" / name / "data"),
                        "--json",
                    ),
                    ALL,
                ),
                strict=True,
            )
        )
    for name, report in reports.items():
        assert report.rc == 0, f"{name}: {report.out}{report.err}"
        assert report.json()["height"] >= h
