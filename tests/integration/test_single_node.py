"""A single node end to end, through the real CLI and real processes (issue 2)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from netutil import Net, medledger

from node.sdk.client import Client, Identity


def submit_cli(net: Net, key: str, value: int) -> dict[str, object]:
    run = medledger(
        "tx",
        "submit",
        "--node",
        net.api,
        "--identity",
        str(net.identity("hosp1-doctor1")),
        "--contract",
        "kv",
        "--function",
        "put",
        "--args",
        json.dumps({"key": key, "value": value}),
        "--wait",
        "--json",
    )
    assert run.rc == 0, run.err
    result: dict[str, object] = run.json()
    return result


def test_hundred_cli_commits_survive_restart_and_verify(net: Net) -> None:
    net.start()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: submit_cli(net, f"k{i}", i), range(100)))
    assert [r["status"] for r in results] == ["committed"] * 100
    assert len({r["tx_id"] for r in results}) == 100

    before = medledger("status", "--node", net.api, "--json").json()
    assert before["role"] == "leader"
    assert before["height"] >= 1
    doctor = Identity.load(net.identity("hosp1-doctor2"))
    with Client(net.api) as client:
        state_before = [client.query(doctor, "kv", "get", {"key": f"k{i}"}) for i in range(100)]
    assert state_before == list(range(100))
    assert net.stop() == 0

    net.start()
    after = medledger("status", "--node", net.api, "--json").json()
    assert (after["height"], after["last_block_hash"]) == (
        before["height"],
        before["last_block_hash"],
    )
    with Client(net.api) as client:
        assert [client.query(doctor, "kv", "get", {"key": f"k{i}"}) for i in range(100)] == (
            state_before
        )
        block = medledger("block", "get", "--node", net.api, "--height", "1", "--json").json()
        assert block["height"] == 1 and block["txs"][0]["contract"] == "kv"
        assert block["txs"][0]["code"] == "VALID"
    assert net.stop() == 0

    verify = medledger("ledger", "verify", "--data-dir", str(net.data_dir), "--json")
    assert verify.rc == 0, verify.out + verify.err
    report = verify.json()
    assert report["height"] == before["height"]
    assert report["last_block_hash"] == before["last_block_hash"]


def test_sigterm_commits_everything_admitted(net: Net) -> None:
    """Transactions admitted (PENDING) before SIGTERM are committed before exit."""
    net.start()
    doctor = Identity.load(net.identity("hosp1-doctor1"))
    with Client(net.api) as client:
        raws = [client.build(doctor, "kv", "put", {"key": f"s{i}", "value": i}) for i in range(300)]
        responses = client.submit_batch(raws)
    assert {r.status for r in responses} == {"pending"}
    assert net.stop() == 0
    net.start()
    with Client(net.api) as client:
        infos = [client.transaction(bytes.fromhex(r.tx_id)) for r in responses]
    assert all(info.status == 2 for info in infos)  # COMMITTED
