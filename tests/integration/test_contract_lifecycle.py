"""Contract deployment and upgrade by governance through the real CLI (issue 5)."""

from __future__ import annotations

from pathlib import Path

from netutil import Net, medledger

from node.sdk.client import Client, Identity

NOTES_V1 = """
def add(ctx, key, text):
    if ctx.caller.role != "doctor":
        raise PermissionDenied("doctors only")
    ctx.put(key, {"text": text, "by": ctx.caller.name})
    return {"version": 1}


def read(ctx, key):
    return ctx.get(key)
"""

NOTES_V2 = NOTES_V1.replace('{"version": 1}', '{"version": 2}')

HOSTILE = """
import os


def run(ctx):
    return os.listdir("/")
"""


def deploy(net: Net, identity: str, source: str, tmp: Path, name: str = "notes") -> dict:
    path = tmp / f"{name}-{abs(hash(source))}.py"
    path.write_text(source)
    run = medledger(
        "contract",
        "deploy",
        "--node",
        net.api,
        "--identity",
        str(net.identity(identity)),
        "--name",
        name,
        "--file",
        str(path),
        "--json",
    )
    result: dict = run.json()
    return result


def test_deploy_call_upgrade_restart_and_verify(net: Net, tmp_path: Path) -> None:
    net.start()
    doctor = Identity.load(net.identity("hosp1-doctor1"))
    first = deploy(net, "leader", NOTES_V1, tmp_path)
    assert first["status"] == "committed", first
    with Client(net.api) as client:
        res = client.submit(doctor, "notes", "add", {"key": "n1", "text": "hello"}, wait=True)
        assert res.status == "committed", res
        patient = Identity.load(net.identity("hosp1-patient1"))
        denied = client.submit(patient, "notes", "add", {"key": "n2", "text": "x"}, wait=True)
        assert (denied.status, denied.code) == ("invalid", "PERMISSION_DENIED")
        assert client.query(doctor, "notes", "read", {"key": "n1"}) == {
            "text": "hello",
            "by": "hosp1-doctor1",
        }

    # Only the leader deploys; hostile code is refused at deployment, naming line and rule.
    by_doctor = deploy(net, "hosp1-doctor1", NOTES_V2, tmp_path)
    assert (by_doctor["status"], by_doctor["code"]) == ("invalid", "PERMISSION_DENIED")
    hostile = deploy(net, "leader", HOSTILE, tmp_path, name="evil")
    assert (hostile["status"], hostile["code"]) == ("invalid", "CONTRACT_ERROR")
    assert "line 2" in hostile["message"] and "import" in hostile["message"]

    upgraded = deploy(net, "leader", NOTES_V2, tmp_path)
    assert upgraded["status"] == "committed"
    with Client(net.api) as client:
        res = client.submit(doctor, "notes", "add", {"key": "n3", "text": "v2"}, wait=True)
        info = client.transaction(bytes.fromhex(res.tx_id))
        assert info.result == b'{"version":2}'
    assert net.stop() == 0

    # The upgraded code comes back from the chain after a restart.
    net.start()
    with Client(net.api) as client:
        res = client.submit(doctor, "notes", "add", {"key": "n4", "text": "again"}, wait=True)
        assert client.transaction(bytes.fromhex(res.tx_id)).result == b'{"version":2}'
        evil = client.submit(doctor, "evil", "run", {}, wait=True)
        assert evil.code == "UNKNOWN_CONTRACT"
    assert net.stop() == 0
    verify = medledger("ledger", "verify", "--data-dir", str(net.data_dir), "--json")
    assert verify.rc == 0, verify.out
