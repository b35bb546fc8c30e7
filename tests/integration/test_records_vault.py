"""Patient records through the vault on a real network (issue 6): 2 hospitals (hosp1
the consenter, hosp2 following by block sync) and the regulator's node, each a separate
process on loopback. Records are put through hosp1, read from other nodes through the
libp2p vault protocol, shared, revoked, erased; a canary in a record must appear in no
node's files, LevelDB values, logs or p2p payloads."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import plyvel
import pytest
from medledger.v1 import vault_pb2, vault_pb2_grpc
from netutil import medledger

from node.localnet import _nodes, down, up
from node.records.fhir import synthetic_bundle
from node.sdk import enroll, identity_keys, records
from node.sdk.client import Client, Identity, TxFailed
from node.sdk.records import RecordAccessError

CANARY = b"CANARY-7f3a9c-patient-secret"
NODES = ("hosp1", "hosp2", "regulator")
HOUR_MS = 3_600_000


class World:
    def __init__(self, root: Path, directory: enroll.Directory) -> None:
        self.root = root
        self.d = directory
        self.apis = {name: api for name, _config, api in _nodes(root)}

    def client(self, node: str) -> Client:
        return Client(self.apis[node], timeout_s=30)

    def __getitem__(self, name: str) -> Identity:
        return self.d[name]

    def pseudonym(self, name: str) -> str:
        return self.d.pseudonyms[name]

    def ident_dir(self, name: str) -> str:
        return str(self.root / "identities" / name)

    def vault_files(self, node: str) -> list[Path]:
        vault = self.root / "nodes" / node / "data" / "vault" / "records"
        return [p for p in vault.rglob("*") if p.is_file()] if vault.exists() else []

    def grant(self, patient: str, grantee: str, record_ids: list[str], node: str = "hosp1") -> str:
        with self.client(node) as c:
            expires = int(time.time() * 1000) + HOUR_MS
            args = {
                "grantee": self[grantee].id,
                "records": record_ids,
                "purpose": "treatment",
                "expires_at": expires,
            }
            result = c.call(self[patient], "consent", "grant", args)
        return str(result["id"] if isinstance(result, dict) else result)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("records") / "net"
    env = {"MEDLEDGER_TESTING_P2P_CAPTURE": "data/p2p-capture.bin"}
    up(root, hospitals=2, consenters=1, regulator=True, env=env)
    try:
        apis = {name: api for name, _config, api in _nodes(root)}
        with Client(apis["hosp1"], timeout_s=30) as c:
            directory = enroll.enroll(c, root)
        yield World(root, directory)
    finally:
        down(root)


def wait_height(world: World, height: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    for node in NODES:
        with world.client(node) as c:
            while c.status().height < height:
                assert time.monotonic() < deadline, f"{node} did not reach height {height}"
                time.sleep(0.05)


def test_owner_and_patient_read_through_any_node(world: World, tmp_path: Path) -> None:
    payload = synthetic_bundle("synthetic-1")
    with world.client("hosp1") as c:
        put = records.put(c, world["hosp1-doctor1"], world.pseudonym("hosp1-patient1"), payload)
    assert put.status == "committed" and put.vault_node == "hosp1"
    with world.client("hosp2") as c:
        got = records.get(c, world["hosp1-patient1"], put.record_id, tmp_path / "p.json")
    assert got.basis == "patient"
    assert (tmp_path / "p.json").read_bytes() == payload
    with world.client("regulator") as c:
        got = records.get(c, world["hosp1-doctor1"], put.record_id, tmp_path / "o.json")
    assert got.basis == "owner" and (tmp_path / "o.json").read_bytes() == payload


def test_cli_put_and_get_and_refusal_without_grant(world: World, tmp_path: Path) -> None:
    source = tmp_path / "emr.json"
    source.write_bytes(synthetic_bundle("synthetic-2"))
    put = medledger(
        "record", "put", "--node", world.apis["hosp1"], "--identity",
        world.ident_dir("hosp1-doctor2"), "--patient", "hosp1-patient2",
        "--file", str(source), "--json",
    )  # fmt: skip
    assert put.rc == 0, put.err
    record_id = put.json()["record_id"]
    assert put.json()["status"] == "committed"
    out = tmp_path / "copy.json"
    get = medledger(
        "record", "get", "--node", world.apis["hosp2"], "--identity",
        world.ident_dir("hosp1-patient2"), "--id", record_id, "--out", str(out), "--json",
    )  # fmt: skip
    assert get.rc == 0, get.err
    assert out.read_bytes() == source.read_bytes()
    # A doctor of another hospital, without a grant: exit 1, a clear line, nothing written.
    other = tmp_path / "other.json"
    denied = medledger(
        "record", "get", "--node", world.apis["hosp2"], "--identity",
        world.ident_dir("hosp2-doctor1"), "--id", record_id, "--out", str(other),
    )  # fmt: skip
    assert denied.rc == 1
    assert "PERMISSION_DENIED" in denied.err and "grant" in denied.err
    assert not other.exists() and not list(tmp_path.glob(".other.json*"))


def test_grant_share_revoke_stops_next_access(world: World, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    with world.client("hosp1") as c:
        put = records.put(c, world["hosp1-doctor1"], world.pseudonym("hosp1-patient1"), data)
    grant = world.grant("hosp1-patient1", "hosp2-doctor1", [put.record_id])
    reader = world["hosp2-doctor1"]
    with world.client("hosp2") as c:
        # granted on chain, but no wrapped key yet: the vault says so
        with pytest.raises(RecordAccessError, match="no wrapped key"):
            records.get(c, reader, put.record_id, tmp_path / "a.bin", grant=grant)
        added = records.share(c, world["hosp1-patient1"], put.record_id, [reader.id])
        assert added == [reader.id]
        got = records.get(c, reader, put.record_id, tmp_path / "b.bin", grant=grant)
        assert got.basis == f"grant:{grant}" and (tmp_path / "b.bin").read_bytes() == data
        c.call(world["hosp1-patient1"], "consent", "revoke", {"grant_id": grant})
        with pytest.raises(TxFailed, match="revoked"):
            records.get(c, reader, put.record_id, tmp_path / "c.bin", grant=grant)
    assert not (tmp_path / "c.bin").exists()
    # the revocation also removed the grantee's wrapped key from the vault node
    keys = [p for p in world.vault_files("hosp1") if put.record_id in str(p) and "keys" in str(p)]
    assert len(keys) == 2  # owner and patient remain


def test_regulator_never_gets_a_wrapped_key(world: World, tmp_path: Path) -> None:
    with world.client("hosp1") as c:
        put = records.put(c, world["hosp1-doctor1"], world.pseudonym("hosp1-patient2"), b"x" * 10)
        regulator = Identity.load(world.root / "identities" / "regulator")
        with pytest.raises(TxFailed, match="PERMISSION_DENIED"):
            records.access(c, regulator, put.record_id)
        # borrowing the owner's committed access does not help: it names another creator
        access_tx, _ = records.access(c, world["hosp1-doctor1"], put.record_id)
        proof = c.build(
            regulator, "vault", "fetch", {"record_id": put.record_id, "access_tx": access_tx}
        )
        stub = vault_pb2_grpc.VaultStub(c.channel)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Fetch(vault_pb2.FetchRequest(proof=proof), timeout=30))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "another identity" in (err.value.details() or "")
        # and nobody can share a key with the regulator, even once it has an encryption key
        assert identity_keys.register(c, regulator).code == "VALID"
        with pytest.raises(RecordAccessError, match="regulator"):
            records.share(c, world["hosp1-doctor1"], put.record_id, [regulator.id])


def test_rotated_key_still_reads(world: World, tmp_path: Path) -> None:
    patient = world["hosp2-patient2"]
    with world.client("hosp2") as c:
        doctor = world["hosp2-doctor2"]
        put = records.put(c, doctor, world.pseudonym("hosp2-patient2"), b"before rotation")
        assert put.vault_node == "hosp2"
        rotated = identity_keys.rotate(c, patient)
        assert rotated.status == "committed", rotated
        # the old record was wrapped for the old key: the archived key opens it
        records.get(c, patient, put.record_id, tmp_path / "old.bin")
        assert (tmp_path / "old.bin").read_bytes() == b"before rotation"
        # new records are wrapped for the new, verified key
        put2 = records.put(c, doctor, world.pseudonym("hosp2-patient2"), b"after rotation")
        records.get(c, patient, put2.record_id, tmp_path / "new.bin")
        assert (tmp_path / "new.bin").read_bytes() == b"after rotation"


def test_large_file_chunked_across_nodes_and_tampering(world: World, tmp_path: Path) -> None:
    imaging = tmp_path / "scan.dcm"
    imaging.write_bytes(os.urandom(20 * 1024 * 1024))
    with world.client("hosp1") as c:
        put = records.put(c, world["hosp1-doctor1"], world.pseudonym("hosp1-patient1"), imaging)
    assert put.size == 20 * 1024 * 1024
    grant = world.grant("hosp1-patient1", "hosp2-doctor2", [put.record_id])
    reader = world["hosp2-doctor2"]
    with world.client("hosp2") as c:
        records.share(c, world["hosp1-patient1"], put.record_id, [reader.id])
        got = records.get(c, reader, put.record_id, tmp_path / "copy.dcm", grant=grant)
    assert got.size == imaging.stat().st_size
    assert (tmp_path / "copy.dcm").read_bytes() == imaging.read_bytes()

    vault = world.root / "nodes" / "hosp1" / "data" / "vault" / "records" / put.record_id
    chunk = sorted((vault / "chunks").iterdir())[3]
    original = chunk.read_bytes()
    chunk.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
    with world.client("hosp2") as c, pytest.raises(RecordAccessError, match="DATA_LOSS"):
        records.get(c, reader, put.record_id, tmp_path / "bad.dcm", grant=grant)
    assert not (tmp_path / "bad.dcm").exists()
    chunk.write_bytes(original)

    key_file = next(p for p in (vault / "keys").iterdir() if p.stat().st_size > 0)
    keys_before = {p: p.read_bytes() for p in (vault / "keys").iterdir()}
    for path, data in keys_before.items():
        path.write_bytes(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])
    with world.client("hosp2") as c, pytest.raises(Exception, match=r"(?i)wrapped key|tamper"):
        records.get(c, reader, put.record_id, tmp_path / "bad2.dcm", grant=grant)
    assert not (tmp_path / "bad2.dcm").exists()
    for path, data in keys_before.items():
        path.write_bytes(data)
    assert key_file.exists()


def test_erase_removes_ciphertext_and_keys_everywhere(world: World, tmp_path: Path) -> None:
    with world.client("hosp1") as c:
        put = records.put(c, world["hosp1-doctor2"], world.pseudonym("hosp1-patient2"), b"y" * 99)
        assert any(put.record_id in str(p) for p in world.vault_files("hosp1"))
        erased = medledger(
            "record", "erase", "--node", world.apis["hosp1"], "--identity",
            world.ident_dir("hosp1-doctor2"), "--id", put.record_id, "--json",
        )  # fmt: skip
        assert erased.rc == 0, erased.err
        wait_height(world, erased.json()["height"])
        for node in NODES:
            assert not [p for p in world.vault_files(node) if put.record_id in str(p)], node
        out = tmp_path / "gone.bin"
        again = medledger(
            "record", "get", "--node", world.apis["hosp2"], "--identity",
            world.ident_dir("hosp1-patient2"), "--id", put.record_id, "--out", str(out),
        )  # fmt: skip
        assert again.rc == 1 and "erased" in again.err and not out.exists()
        meta = c.query(world["hosp1-doctor2"], "records", "get", {"record_id": put.record_id})
        assert meta["status"] == "erased" and meta["content_hash"] == put.content_hash


def test_event_subscriptions_are_filtered_by_role(world: World) -> None:
    """A hosp2 doctor sees hosp2's events and those naming it, never hosp1's own
    records; the regulator sees everything; a patient what concerns its pseudonym."""
    with world.client("hosp1") as c:
        put = records.put(c, world["hosp1-doctor1"], world.pseudonym("hosp1-patient1"), b"z")
    with world.client("hosp2") as c:
        expires = int(time.time() * 1000) + HOUR_MS
        args = {"grantee": world["hosp2-doctor1"].id, "records": "*", "purpose": "treatment",
                "expires_at": expires}  # fmt: skip
        res = c.submit(world["hosp2-patient1"], "consent", "grant", args, wait=True)
        mark_height = res.height

    def seen_by(name: str) -> list[tuple[str, dict[str, object]]]:
        out = []
        with world.client("hosp2") as c:
            for event in c.stream_events(1, identity=world[name]):
                out.append((f"{event.contract}.{event.name}", json.loads(event.data or b"{}")))
                if event.height >= mark_height:
                    break
        return out

    doctor = seen_by("hosp2-doctor1")
    assert any(name == "consent.consent_granted" for name, _ in doctor)
    assert not any(e.get("record") == put.record_id for _, e in doctor)
    assert all(
        world["hosp2-doctor1"].id in e.values() or "hosp2" in e.values()
        or e.get("grantee") == "institution:hosp2"
        for _, e in doctor
    )  # fmt: skip
    regulator = seen_by("regulator")
    assert any(e.get("record") == put.record_id for _, e in regulator)
    assert len(regulator) > len(doctor)
    patient = seen_by("hosp2-patient1")
    mine = world.pseudonym("hosp2-patient1")
    me = world["hosp2-patient1"].id
    assert patient and all(e.get("patient") == mine or me in e.values() for _, e in patient)


def _encodings(secret: bytes) -> list[bytes]:
    """The canary raw, in hex and in base64 at each of the three alignments."""
    found = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for shift in range(3):
        text = base64.b64encode(b"\0" * shift + secret)
        skip = (shift * 4 + 2) // 3 + 1
        found.append(text[skip:-4])
    return found


def test_canary_appears_nowhere(world: World, tmp_path: Path) -> None:
    """Last in this file: it stops the network to read every node's LevelDB."""
    payload = synthetic_bundle("synthetic-3", note=CANARY.decode())
    with world.client("hosp1") as c:
        put = records.put(c, world["hosp1-doctor1"], world.pseudonym("hosp1-patient1"), payload)
    grant = world.grant("hosp1-patient1", "hosp2-doctor1", [put.record_id])
    with world.client("hosp2") as c:
        records.share(c, world["hosp1-patient1"], put.record_id, [world["hosp2-doctor1"].id])
        records.get(c, world["hosp2-doctor1"], put.record_id, tmp_path / "r.json", grant=grant)
    assert CANARY in (tmp_path / "r.json").read_bytes()  # the reader got it
    with world.client("hosp1") as c:
        wait_height(world, c.status().height)
    needles = _encodings(CANARY)
    down(world.root)  # LevelDB allows one process at a time: read it after the nodes stop
    files = [p for p in world.root.rglob("*") if p.is_file() and "identities" not in p.parts]
    assert any(p.name == "p2p-capture.bin" and p.stat().st_size > 0 for p in files)
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"canary {needle!r} in {path}"
    for node in NODES:
        db = plyvel.DB(str(world.root / "nodes" / node / "data" / "ledger"))
        try:
            for key, value in db:
                for needle in needles:
                    assert needle not in key and needle not in value, f"canary in {node} LevelDB"
        finally:
            db.close()
