"""A consortium of separate node processes over libp2p (issue 4): 3 consenters, a
follower hospital and the regulator, on loopback with ports chosen at run time."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from netutil import Run, medledger

from node.localnet import NodeProcess, _nodes, down, up
from node.ops.admin import call as admin_call
from node.ops.admin import socket_path
from node.sdk.client import Client, ClientError, Identity

FAULTS = {"MEDLEDGER_TESTING_FAULT_INJECTION": "true"}


class Consortium:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.apis = {name: api for name, _config, api in _nodes(root)}
        self.procs: dict[str, NodeProcess] = {}

    def client(self, name: str, timeout_s: float = 10) -> Client:
        return Client(self.apis[name], timeout_s=timeout_s)

    def status(self, name: str) -> object:
        with self.client(name, 3) as c:
            return c.status()

    def identity(self, name: str) -> Identity:
        return Identity.load(self.root / "identities" / name)

    def admin(self, name: str, request: dict[str, object]) -> dict[str, object]:
        return admin_call(socket_path(self.root / "nodes" / name / "data"), request)

    def leader(self, among: list[str] | None = None) -> str | None:
        leaders = set()
        for name in among or ["hosp1", "hosp2", "hosp3"]:
            try:
                s = self.status(name)
            except ClientError:
                continue
            if s.role == "leader":  # type: ignore[attr-defined]
                leaders.add(name)
        return leaders.pop() if len(leaders) == 1 else None

    def wait(self, predicate: object, timeout_s: float = 60, what: str = "") -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def heights(self, names: list[str]) -> dict[str, int]:
        out = {}
        for name in names:
            with self.client(name, 3) as c:
                out[name] = c.status().height
        return out

    def same_chain(self, names: list[str]) -> None:
        heights = self.heights(names)
        top = min(heights.values())
        assert top > 0
        clients = [self.client(n) for n in names]
        try:
            for height in range(1, top + 1):
                hashes = {c.block(height).hash for c in clients}
                assert len(hashes) == 1, f"nodes differ at height {height}"
        finally:
            for c in clients:
                c.close()

    def start(self, name: str) -> None:
        config = self.root / "nodes" / name / "config.toml"
        proc = NodeProcess(name, config, self.apis[name], self.root / "logs" / f"{name}.log")
        proc.start(FAULTS)
        proc.wait_ready(60)
        self.procs[name] = proc
        (self.root / "run" / f"{name}.pid").write_text(str(proc.proc.pid))  # type: ignore[union-attr]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        import os

        pid = int((self.root / "run" / f"{name}.pid").read_text())
        os.kill(pid, sig)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists():
            stat = (
                Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
            )
            if not stat or stat.split(")")[-1].split()[0] == "Z":
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)


ALL = ["hosp1", "hosp2", "hosp3", "hosp4", "regulator"]


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Consortium]:
    root = tmp_path / "net"
    up(root, hospitals=4, consenters=3, regulator=True, env=FAULTS)
    consortium = Consortium(root)
    try:
        consortium.wait(lambda: consortium.leader() is not None, what="a leader")
        yield consortium
    finally:
        for proc in consortium.procs.values():
            proc.stop()
        down(root)


def test_thousand_round_robin_commit_once_and_agree(net: Consortium) -> None:
    doctor = net.identity("hosp1-doctor1")
    with net.client("hosp1") as c:
        raws = [c.build(doctor, "kv", "put", {"key": f"k{i}", "value": i}) for i in range(1000)]
    tx_ids: list[str] = []
    for start in range(0, 1000, 50):
        name = ALL[(start // 50) % len(ALL)]
        with net.client(name) as c:
            results = c.submit_batch(raws[start : start + 50])
        assert all(r.status == "pending" for r in results), results[:3]
        tx_ids += [r.tx_id for r in results]
    with net.client("hosp2") as c:
        net.wait(
            lambda: all(c.transaction(bytes.fromhex(t)).status == 2 for t in tx_ids[-5:]),
            what="the last transactions to commit",
        )
        net.wait(
            lambda: all(c.transaction(bytes.fromhex(t)).status == 2 for t in tx_ids),
            what="every transaction to commit",
        )
        top = c.status().height
        seen: dict[str, int] = {}
        for height in range(1, top + 1):
            block = c.block(height).block
            from node.tx import parse

            for raw, code in zip(block.txs, block.codes, strict=True):
                tx_id = parse(raw, 1 << 30).tx_id.hex()
                if code == 0:
                    seen[tx_id] = seen.get(tx_id, 0) + 1
    assert all(seen.get(t) == 1 for t in tx_ids)
    net.wait(lambda: len(set(net.heights(ALL).values())) == 1, what="every node at one height")
    net.same_chain(ALL)


def test_leader_sigkill_under_load(net: Consortium) -> None:
    doctor = net.identity("hosp1-doctor1")
    old = net.leader()
    assert old is not None
    others = [n for n in ALL if n != old]
    acknowledged: list[str] = []
    stop = threading.Event()

    def load(name: str) -> None:
        with net.client(name, timeout_s=20) as c:
            i = 0
            while not stop.is_set():
                try:
                    res = c.submit(
                        doctor, "kv", "put", {"key": f"{name}-{i}", "value": i}, wait=True
                    )
                except ClientError:
                    continue
                if res.status == "committed":
                    acknowledged.append(res.tx_id)
                i += 1

    with ThreadPoolExecutor(4) as pool:
        for name in others[:4]:
            pool.submit(load, name)
        net.wait(lambda: len(acknowledged) >= 20, what="load before the kill")
        net.kill(old)
        killed_at = time.monotonic()
        consenters = [n for n in ["hosp1", "hosp2", "hosp3"] if n != old]
        net.wait(lambda: net.leader(consenters) is not None, timeout_s=10, what="a new leader")
        elected_after = time.monotonic() - killed_at
        count = len(acknowledged)
        net.wait(lambda: len(acknowledged) >= count + 20, what="progress after the election")
        stop.set()
    print(f"new leader {elected_after:.2f} s after SIGKILL of {old}")
    assert elected_after < 3.0, f"new leader after {elected_after:.2f} s"
    net.start(old)
    net.wait(lambda: len(set(net.heights(ALL).values())) == 1, what="the old leader to catch up")
    with net.client(old) as c:
        infos = [c.transaction(bytes.fromhex(t)) for t in acknowledged]
    assert all(info.status == 2 for info in infos)
    assert len(set(acknowledged)) == len(acknowledged)
    net.same_chain(ALL)


def test_stopped_node_catches_up_500_blocks_and_verifies(net: Consortium) -> None:
    doctor = net.identity("hosp1-doctor1")
    net.kill("hosp4", signal.SIGTERM)
    with net.client("hosp1") as c:
        before = c.status().height
        for i in range(500):
            res = c.submit(doctor, "kv", "put", {"key": f"b{i}", "value": i}, wait=True)
            assert res.status == "committed"
        after = c.status().height
    assert after - before >= 500
    net.start("hosp4")
    net.wait(
        lambda: net.heights(["hosp4"])["hosp4"] >= after, timeout_s=120, what="hosp4 to catch up"
    )
    net.procs["hosp4"].stop()
    verify = medledger(
        "ledger", "verify", "--data-dir", str(net.root / "nodes" / "hosp4" / "data"), "--json"
    )
    assert verify.rc == 0, verify.out
    assert verify.json()["height"] >= after


def test_partitioned_leader_commits_nothing_and_everyone_converges(net: Consortium) -> None:
    doctor = net.identity("hosp1-doctor1")
    old = net.leader()
    assert old is not None
    rest = [n for n in ALL if n != old]
    net.admin(old, {"op": "gate", "block": rest})
    for name in rest:
        net.admin(name, {"op": "gate", "block": [old]})
    with net.client(old) as c:
        stranded = c.submit(doctor, "kv", "put", {"key": "minority", "value": 1}, wait=False)
    majority = [n for n in ["hosp1", "hosp2", "hosp3"] if n != old]
    net.wait(lambda: net.leader(majority) is not None, what="a majority leader")
    with net.client(majority[0]) as c:
        ok = c.submit(doctor, "kv", "put", {"key": "majority", "value": 2}, wait=True)
        assert ok.status == "committed"
    with net.client(old) as c:
        assert c.transaction(bytes.fromhex(stranded.tx_id)).status != 2
        assert c.status().height < ok.height
    for name in ALL:
        net.admin(name, {"op": "gate", "block": []})
    net.wait(lambda: len(set(net.heights(ALL).values())) == 1, what="convergence after healing")
    net.same_chain(ALL)


def test_diverging_node_halts_and_stops_serving(net: Consortium) -> None:
    doctor = net.identity("hosp1-doctor1")
    leader = net.leader()
    victim = next(n for n in ["hosp1", "hosp2", "hosp3"] if n != leader)
    net.admin(victim, {"op": "diverge"})
    with net.client(leader) as c:  # type: ignore[arg-type]
        assert (
            c.submit(doctor, "kv", "put", {"key": "d", "value": 1}, wait=True).status == "committed"
        )

    def halted() -> bool:
        try:
            net.status(victim)
        except ClientError:
            return True
        return False

    net.wait(halted, what="the diverged node to stop serving")
    log = (net.root / "logs" / f"{victim}.log").read_text()
    assert "node_halted" in log and "certified" in log


LOOP = """
def spin(ctx, n):
    total = 0
    while True:
        total = total + n
"""


def test_same_call_same_gas_on_every_node(net: Consortium) -> None:
    """Issue 5: each node runs the call in its own sandbox workers; the recorded gas
    (covered by results_root, hence by the certificate) is identical everywhere."""
    leader_id = net.identity("leader")
    doctor = net.identity("hosp1-doctor1")
    with net.client("hosp2") as c:
        deployed = c.submit(
            leader_id, "consortium", "deploy_contract", {"name": "loop", "source": LOOP}, wait=True
        )
        assert deployed.status == "committed", deployed
        res = c.submit(doctor, "loop", "spin", {"n": 1}, wait=True)
    assert res.code == "OUT_OF_GAS"
    net.wait(lambda: min(net.heights(ALL).values()) >= res.height, what="all nodes")
    gas = {}
    for name in ALL:
        with net.client(name) as c:
            results = c.block(res.height).results
        (result,) = [r for r in results.results if r.code == 20]
        gas[name] = result.gas_used
    assert len(set(gas.values())) == 1 and next(iter(gas.values())) > 0, gas


def _scrape(url: str) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as resp:  # loopback only
        text = resp.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_metrics_move_on_every_node(net: Consortium) -> None:
    """Issue 8: /metrics scraped during a multi-node run shows the metrics moving."""
    import tomllib

    doctor = net.identity("hosp1-doctor1")
    urls = {}
    for name in ALL:
        cfg = tomllib.loads((net.root / "nodes" / name / "config.toml").read_text())
        urls[name] = f"http://{cfg['metrics']['listen']}/metrics"
    net.wait(
        lambda: all(_scrape(u)["medledger_peers"] >= 2 for u in urls.values()),
        what="peers in the metrics",
    )
    before = {n: _scrape(u) for n, u in urls.items()}
    with net.client("hosp4") as c:
        for i in range(10):
            assert (
                c.submit(doctor, "kv", "put", {"key": f"m{i}", "value": i}, wait=True).status
                == "committed"
            )
    net.wait(lambda: len(set(net.heights(ALL).values())) == 1, what="one height")
    after = {n: _scrape(u) for n, u in urls.items()}
    for name in ALL:
        assert after[name]["medledger_height"] >= before[name]["medledger_height"] + 1, name
        assert after[name]['medledger_txs_committed_total{code="VALID"}'] >= 10, name
    for name in ["hosp1", "hosp2", "hosp3"]:
        assert after[name]["medledger_raft_term"] >= 1
        assert (
            after[name]["medledger_raft_commit_index"] > before[name]["medledger_raft_commit_index"]
        )
    assert sum(after[n]['medledger_raft_role{role="leader"}'] for n in ALL) == 1
    assert after["regulator"]['medledger_raft_role{role="observer"}'] == 1


def test_backup_under_load_restores_to_a_node_that_verifies_and_rejoins(
    net: Consortium, tmp_path: Path
) -> None:
    """Issue 8: an online backup taken under load, restored into an empty data dir,
    verifies, and the restored node catches up with the consortium."""
    import shutil

    doctor = net.identity("hosp1-doctor1")
    stop = threading.Event()

    def load() -> None:
        with net.client("hosp1") as c:
            i = 0
            while not stop.is_set():
                c.submit(doctor, "kv", "put", {"key": f"l{i}", "value": i}, wait=True)
                i += 1

    worker = threading.Thread(target=load)
    worker.start()
    try:
        net.wait(lambda: net.heights(["hosp4"])["hosp4"] >= 5, what="load")
        config = str(net.root / "nodes" / "hosp4" / "config.toml")
        run = medledger("backup", "--config", config, "--out", str(tmp_path / "b"), "--json")
        assert run.rc == 0, run.out + run.err
        backup_height = run.json()["height"]
        net.kill("hosp4", signal.SIGTERM)
        data = net.root / "nodes" / "hosp4" / "data"
        shutil.rmtree(data / "ledger")
        restored = medledger(
            "restore", "--config", config, "--backup", str(tmp_path / "b"), "--json"
        )
        assert restored.rc == 0, restored.out
        assert restored.json()["height"] == backup_height
        net.start("hosp4")
    finally:
        stop.set()
        worker.join()
    net.wait(lambda: len(set(net.heights(ALL).values())) == 1, what="hosp4 to rejoin")
    net.same_chain(ALL)


def test_without_transaction_gossip_forwarding_alone_commits_everything(tmp_path: Path) -> None:
    """`p2p.gossip_txs = false` (DESIGN 3.1 step 2: gossip is never relied on): each node
    only forwards what its clients give it to the leader, and everything commits once."""
    root = tmp_path / "net"
    names = ["hosp1", "hosp2", "hosp3"]
    up(root, hospitals=3, consenters=3, regulator=False, env={"MEDLEDGER_P2P_GOSSIP_TXS": "false"})
    net = Consortium(root)
    try:
        net.wait(lambda: net.leader() is not None, what="a leader")
        doctor = net.identity("hosp1-doctor1")
        with net.client("hosp1") as c:
            raws = [c.build(doctor, "kv", "put", {"key": f"g{i}", "value": i}) for i in range(300)]
        tx_ids: list[str] = []
        for start in range(0, 300, 50):
            with net.client(names[(start // 50) % 3]) as c:
                results = c.submit_batch(raws[start : start + 50])
            assert all(r.status == "pending" for r in results), results[:3]
            tx_ids += [r.tx_id for r in results]
        with net.client("hosp3") as c:
            net.wait(
                lambda: all(c.transaction(bytes.fromhex(t)).status == 2 for t in tx_ids),
                what="every transaction to commit",
            )
        net.wait(lambda: len(set(net.heights(names).values())) == 1, what="one height")
        net.same_chain(names)
        logs = "".join((root / "logs" / f"{n}.log").read_text() for n in names)
        assert logs.count('"gossip_txs": false') == 3  # in each node_started line
    finally:
        down(root)


def test_leadership_moves_on_request_and_the_chain_goes_on(net: Consortium) -> None:
    """`medledger admin transfer-leader`: at the leader, to a named consenter or (default)
    the one with the most of the log; refused with the leader's name elsewhere, and for a
    node that is not a voter. Transactions commit under the new leader."""
    doctor = net.identity("hosp1-doctor1")
    old = net.leader()
    assert old is not None
    target = next(n for n in ["hosp1", "hosp2", "hosp3"] if n != old)
    follower = next(n for n in ["hosp1", "hosp2", "hosp3"] if n not in (old, target))

    def transfer(at: str) -> Run:
        config = str(net.root / "nodes" / at / "config.toml")
        return medledger("admin", "transfer-leader", "--config", config, "--to", target, "--json")

    refused = transfer(follower)
    assert refused.rc == 1 and refused.json()["leader"] == old, refused.out
    assert "not the leader" in refused.json()["error"]
    not_voter = net.admin(old, {"op": "transfer_leader", "to": "hosp4"})
    assert not not_voter["ok"] and "not a voter" in str(not_voter["error"])
    assert not net.admin(old, {"op": "transfer_leader", "to": 7})["ok"]
    assert not net.admin(old, {"op": "transfer_leader", "timeout_s": True})["ok"]
    assert not net.admin(old, {"op": "transfer_leader", "timeout_s": 500})["ok"]
    observer = net.admin("hosp4", {"op": "transfer_leader", "to": target})
    assert not observer["ok"] and "observer" in str(observer["error"]), observer
    assert observer["leader"] == old

    moved = transfer(old)
    assert moved.rc == 0, moved.out + moved.err
    assert moved.json()["leader"] == target and moved.json()["moved"] is True
    net.wait(lambda: net.leader() == target, what=f"{target} leading")
    with net.client(old) as c:
        ok = c.submit(doctor, "kv", "put", {"key": "after-transfer", "value": 1}, wait=True)
        assert ok.status == "committed"

    back = net.admin(target, {"op": "transfer_leader"})  # default: the most up-to-date voter
    assert back["ok"] and back["leader"] in (old, follower), back
    net.wait(lambda: net.leader() == back["leader"], what="the default target leading")
    with net.client(target) as c:
        assert (
            c.submit(doctor, "kv", "put", {"key": "after-second", "value": 2}, wait=True).status
            == "committed"
        )
    net.same_chain(["hosp1", "hosp2", "hosp3"])
