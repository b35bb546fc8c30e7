"""Bad input: each refusal has its own code and message, the node keeps serving and
nothing is written (issue 2, must show)."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from medledger.v1 import ledger_pb2
from netutil import Net, medledger

from node import tx as txlib
from node.crypto import keys
from node.crypto.certs import CertificateAuthority
from node.crypto.hashing import sha256
from node.sdk.client import Client, Identity, SubmitResult


def now_ms() -> int:
    return int(time.time() * 1000)


def resign(raw: bytes, key: keys.PrivateKey) -> bytes:
    signed = ledger_pb2.SignedTx.FromString(raw)
    return ledger_pb2.SignedTx(
        body=signed.body, signature=keys.sign(key, signed.body)
    ).SerializeToString()


def body_without(field: str, raw: bytes) -> bytes:
    signed = ledger_pb2.SignedTx.FromString(raw)
    body = ledger_pb2.TxBody.FromString(signed.body)
    body.ClearField(field)  # type: ignore[arg-type]
    return ledger_pb2.SignedTx(
        body=body.SerializeToString(), signature=signed.signature
    ).SerializeToString()


@pytest.fixture
def served(net: Net) -> Net:
    net.start()
    return net


def test_each_bad_input_has_its_own_code_and_writes_nothing(served: Net) -> None:
    net = served
    doctor = Identity.load(net.identity("hosp1-doctor1"))
    with Client(net.api) as client:
        chain_id = client.chain_id()
        good = client.build(doctor, "kv", "put", {"key": "good", "value": 1})
        assert client.submit_raw(good, wait=True).status == "committed"
        height = client.status().height

        # A creator whose CA is not in the consortium.
        now = dt.datetime.now(dt.UTC)
        foreign_ca = CertificateAuthority.create("hosp1", keys.generate_key(), now)
        stranger_key = keys.generate_key()
        stranger_cert = foreign_ca.issue("mallory", "doctor", stranger_key.public_key(), now)
        from cryptography.hazmat.primitives.serialization import Encoding

        def build(**over: object) -> bytes:
            params: dict[str, object] = dict(
                chain_id=chain_id,
                contract="kv",
                function="put",
                args={"key": "bad", "value": 1},
                key=doctor.key,
                certificate_der=doctor.certificate_der,
                now_ms=now_ms(),
            )
            params.update(over)
            return txlib.build(**params)  # type: ignore[arg-type]

        tampered = bytearray(build())
        tampered[-3] ^= 0x40
        cases: dict[str, bytes] = {
            "BAD_SIGNATURE": bytes(tampered),
            "UNKNOWN_CREATOR": build(
                key=stranger_key, certificate_der=stranger_cert.public_bytes(Encoding.DER)
            ),
            "WRONG_CHAIN": build(chain_id=sha256(b"another consortium")),
            "EXPIRED": build(now_ms=now_ms() - 600_000, ttl_ms=60_000),
            "NOT_YET_VALID": build(now_ms=now_ms() + 3_600_000),
            "TTL_TOO_LONG": build(ttl_ms=24 * 3_600_000),
            "TOO_LARGE": build(args={"key": "big", "value": "x" * 300_000}),
            "MALFORMED": b"\xff\x00 this is not a protobuf message",
            "MISSING_FIELD": body_without("nonce", build()),
        }
        replay = good
        resigned = resign(good, doctor.key)
        for expected, raw in cases.items():
            result = client.submit_raw(raw)
            assert (result.status, result.code) == ("invalid", expected), (expected, result)
            assert result.message, expected
        for raw in (replay, resigned):
            result = client.submit_raw(raw)
            assert (result.status, result.code) == ("invalid", "DUPLICATE_TXID")
        assert sha256(ledger_pb2.SignedTx.FromString(resigned).body) == bytes.fromhex(
            client.submit_raw(replay).tx_id
        )

        missing = client.submit_raw(body_without("contract", build()))
        assert missing.code == "MISSING_FIELD" and "body.contract" in missing.message

        # Nothing was written, and the node still serves.
        assert client.status().height == height
        assert client.query(doctor, "kv", "get", {"key": "bad"}) is None
        ok = client.submit(doctor, "kv", "put", {"key": "after", "value": 2}, wait=True)
        assert ok.status == "committed"


def test_unknown_contract_and_bad_args_are_committed_invalid(served: Net) -> None:
    """Execution-time failures stay in the block with their code and change no state."""
    net = served
    doctor = Identity.load(net.identity("hosp1-doctor1"))
    with Client(net.api) as client:
        unknown = client.submit(doctor, "nosuch", "put", {"key": "a"}, wait=True)
        bad_args = client.submit(doctor, "kv", "put", {"wrong": 1}, wait=True)
        failing = client.submit(doctor, "kv", "delete", {"key": "never-set"}, wait=True)
        assert (unknown.status, unknown.code) == ("invalid", "UNKNOWN_CONTRACT")
        assert (bad_args.status, bad_args.code) == ("invalid", "BAD_ARGUMENTS")
        assert (failing.status, failing.code) == ("invalid", "CONTRACT_ERROR")
        assert "never-set" in failing.message
        block = medledger(
            "block", "get", "--node", net.api, "--height", str(failing.height), "--json"
        ).json()
        codes = {t["id"]: t["code"] for t in block["txs"]}
        assert codes[failing.tx_id] == "CONTRACT_ERROR"


def test_mempool_full_and_institution_quota(net: Net) -> None:
    net.start(env={"MEDLEDGER_MEMPOOL_MAX_TXS": "6", "MEDLEDGER_MEMPOOL_INSTITUTION_SHARE": "0.5"})
    d1 = Identity.load(net.identity("hosp1-doctor1"))
    d2 = Identity.load(net.identity("hosp2-doctor1"))
    with Client(net.api) as client:
        ones = [client.build(d1, "kv", "put", {"key": f"a{i}", "value": i}) for i in range(40)]
        twos = [client.build(d2, "kv", "put", {"key": f"b{i}", "value": i}) for i in range(40)]
        r1 = client.submit_batch(ones)
        r2 = client.submit_batch(twos)
        codes1 = [r.code for r in r1]
        assert "QUOTA_EXCEEDED" in codes1
        # hosp1's flood did not keep hosp2 out.
        assert any(r.status == "pending" for r in r2)
        flood = [client.build(d1, "kv", "put", {"key": f"c{i}", "value": i}) for i in range(200)]
        flood += [client.build(d2, "kv", "put", {"key": f"d{i}", "value": i}) for i in range(200)]
        interleaved = [raw for pair in zip(flood[:200], flood[200:], strict=True) for raw in pair]
        r3 = client.submit_batch(interleaved)
        assert "MEMPOOL_FULL" in {r.code for r in r3}
        assert all(
            r.status == "pending" or r.code in {"MEMPOOL_FULL", "QUOTA_EXCEEDED"}
            for r in r1 + r2 + r3
        )
        admitted: list[SubmitResult] = [r for r in r1 + r2 + r3 if r.status == "pending"]
        refused = [r for r in r1 + r2 + r3 if r.status != "pending"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all(client.transaction(bytes.fromhex(r.tx_id)).status == 2 for r in admitted):
                break
            time.sleep(0.05)
        assert all(client.transaction(bytes.fromhex(r.tx_id)).status == 2 for r in admitted)
        # Refused ones were never stored.
        assert all(client.transaction(bytes.fromhex(r.tx_id)).status == 4 for r in refused[:20])
