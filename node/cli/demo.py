"""`medledger demo`: a local consortium and the example story, end to end.

Today the story is the `kv` example on a one-node network: the referral story of
DESIGN §7 replaces it once the referral contracts exist.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from node.ledger.verify import verify_path
from node.localnet import NodeProcess, free_base_port
from node.provisioning import Plan, init_consortium
from node.sdk.client import Client, Identity


def _step(n: int, text: str) -> None:
    print(f"\n[{n}] {text}", flush=True)


def run_demo(keep: Path | None) -> int:
    work = keep if keep is not None else Path(tempfile.mkdtemp(prefix="medledger-demo-"))
    try:
        return _story(work)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"\nnetwork data and logs kept in {work}")


def _story(work: Path) -> int:
    net = work / "consortium"
    _step(1, "init-consortium: CAs, node keys, identities, genesis block (1 hospital)")
    init_consortium(Plan(net, hospitals=1, consenters=1, base_port=free_base_port()))
    config = net / "nodes" / "hosp1" / "config.toml"
    api = next(
        line.split('"')[1]
        for line in config.read_text().splitlines()
        if line.startswith("listen") and ":" in line and "/ip4" not in line
    )
    node = NodeProcess("hosp1", config, api, work / "logs" / "hosp1.log")
    _step(2, f"starting node hosp1 (gRPC {api}, log {node.log_path})")
    node.start()
    try:
        node.wait_ready()
        doctor = Identity.load(net / "identities" / "hosp1-doctor1")
        with Client(api) as client:
            status = client.status()
            print(
                f"    node {status.node} role={status.role} height={status.height} "
                f"chain={status.chain_id.hex()[:16]}…"
            )
            _step(3, "hosp1-doctor1 signs and submits kv.put transactions, waiting for commit")
            for i in range(5):
                res = client.submit(
                    doctor, "kv", "put", {"key": f"demo/{i}", "value": {"n": i}}, wait=True
                )
                print(f"    tx {res.tx_id[:16]}… {res.status} at height {res.height}")
                if res.status != "committed":
                    print(f"    unexpected: {res.code} {res.message}")
                    return 1
            _step(4, "a signed query reads the state back")
            print(
                "    kv.get demo/3 ->",
                json.dumps(client.query(doctor, "kv", "get", {"key": "demo/3"})),
            )
            _step(5, "a tampered transaction is refused with its own code")
            raw = bytearray(client.build(doctor, "kv", "put", {"key": "x", "value": 1}))
            raw[-1] ^= 0x01
            bad = client.submit_raw(bytes(raw))
            print(f"    {bad.status}: {bad.code} ({bad.message})")
            tip = client.status()
            block = client.block(tip.height)
            print(f"    last block {tip.height} hash {block.hash.hex()[:16]}…")
    finally:
        _step(6, "stopping the node (SIGTERM)")
        code = node.stop()
        print(f"    exit code {code}")
    _step(7, "ledger verify: re-derive every hash offline")
    report = verify_path(str(net / "nodes" / "hosp1" / "data"))
    print(f"    ok={report.ok} height={report.height} {report.problem}")
    print("\ndemo finished" if report.ok and code == 0 else "\ndemo FAILED")
    return 0 if report.ok and code == 0 else 1
