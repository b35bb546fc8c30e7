"""Transaction parsing (`node.tx.parse`) and admission checks (`TxChecker.check`): every
refusal comes with its own code and a message naming what is wrong."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from medledger.v1 import ledger_pb2

from node import tx as txlib
from node.codes import TxCode
from node.crypto import keys
from node.crypto.certs import CertificateAuthority, IdentityVerifier
from node.crypto.hashing import sha256
from node.genesis import Genesis
from node.sdk.client import Identity
from node.tx import ParsedTx, Rejection, TxChecker

from .builders import TxFactory, institution_ca

MAX = 256 * 1024


def body_of(raw: bytes) -> ledger_pb2.TxBody:
    return ledger_pb2.TxBody.FromString(ledger_pb2.SignedTx.FromString(raw).body)


def signed(body: ledger_pb2.TxBody, key: keys.PrivateKey) -> bytes:
    body_bytes = body.SerializeToString()
    return ledger_pb2.SignedTx(
        body=body_bytes, signature=keys.sign(key, body_bytes)
    ).SerializeToString()


def refused(raw: bytes, checker: TxChecker | None = None, now_ms: int = 0) -> Rejection:
    with pytest.raises(Rejection) as info:
        tx = txlib.parse(raw, MAX)
        if checker is not None:
            checker.check(tx, now_ms)
    return info.value


def hosp1_ca(consortium: Path) -> CertificateAuthority:
    return institution_ca(consortium, "hosp1")


def der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


def with_identity(
    make_tx: TxFactory, key: keys.PrivateKey, cert_der: bytes, name: str = "x"
) -> bytes:
    return make_tx(Identity(name, key, cert_der))


@pytest.fixture
def now(t0: int) -> dt.datetime:
    """Certificates are issued at the tests' own clock, not the wall clock."""
    return dt.datetime.fromtimestamp(t0 / 1000, dt.UTC)


# -- parse: structure ------------------------------------------------------------------


def test_parse_returns_the_exact_body_bytes_and_their_hash_as_tx_id(make_tx: TxFactory) -> None:
    raw = make_tx()
    tx = txlib.parse(raw, MAX)
    signed_tx = ledger_pb2.SignedTx.FromString(raw)
    assert tx.raw == raw
    assert tx.body_bytes == signed_tx.body
    assert tx.tx_id == sha256(signed_tx.body) == txlib.tx_id_of(raw)
    assert tx.signature == signed_tx.signature
    assert (tx.contract, tx.function) == ("kv", "put")
    assert txlib.decode_args(tx) == {"key": "k", "value": 1}


def test_too_large_is_refused_before_parsing(make_tx: TxFactory) -> None:
    raw = make_tx()
    assert txlib.parse(raw, len(raw)).tx_id
    with pytest.raises(Rejection) as info:
        txlib.parse(raw, len(raw) - 1)
    assert info.value.code == TxCode.TOO_LARGE
    assert info.value.message == f"transaction is {len(raw)} bytes; the limit is {len(raw) - 1}"
    # Size comes first: even garbage that is too large is TOO_LARGE, not MALFORMED.
    with pytest.raises(Rejection) as info:
        txlib.parse(b"\xff" * 100, 10)
    assert info.value.code == TxCode.TOO_LARGE


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff\xff", b"\x0a\x10abc", b"\x08"])
def test_garbage_bytes_are_malformed(garbage: bytes) -> None:
    rej = refused(garbage)
    assert rej.code == TxCode.MALFORMED
    assert rej.message.startswith("bytes are not a SignedTx")


def test_signed_tx_whose_body_is_not_a_tx_body_is_malformed() -> None:
    raw = ledger_pb2.SignedTx(body=b"\xff\xff\xff", signature=b"sig").SerializeToString()
    rej = refused(raw)
    assert rej.code == TxCode.MALFORMED
    assert rej.message.startswith("SignedTx.body is not a TxBody")


BODY_FIELDS = [
    "chain_id",
    "contract",
    "function",
    "nonce",
    "created_at_ms",
    "expires_at_ms",
    "signature_algorithm",
    "hash_algorithm",
]


@pytest.mark.parametrize("field", BODY_FIELDS)
def test_each_missing_body_field_is_named(make_tx: TxFactory, doctor: Identity, field: str) -> None:
    body = body_of(make_tx())
    body.ClearField(field)  # type: ignore[arg-type]
    rej = refused(signed(body, doctor.key))
    assert rej.code == TxCode.MISSING_FIELD
    assert rej.message == f"missing required field(s): body.{field}"


def test_missing_creator_certificate_is_named(make_tx: TxFactory, doctor: Identity) -> None:
    body = body_of(make_tx())
    body.creator.certificate = b""
    rej = refused(signed(body, doctor.key))
    assert rej.code == TxCode.MISSING_FIELD
    assert rej.message == "missing required field(s): body.creator.certificate"


def test_missing_signature_is_named(make_tx: TxFactory) -> None:
    signed_tx = ledger_pb2.SignedTx.FromString(make_tx())
    raw = ledger_pb2.SignedTx(body=signed_tx.body).SerializeToString()
    rej = refused(raw)
    assert rej.code == TxCode.MISSING_FIELD
    assert rej.message == "missing required field(s): signature"


def test_empty_signed_tx_names_every_missing_field() -> None:
    rej = refused(b"")
    assert rej.code == TxCode.MISSING_FIELD
    assert rej.message == "missing required field(s): " + ", ".join(
        ["body", "signature"]
        + [f"body.{f}" for f in BODY_FIELDS[:6]]
        + ["body.creator.certificate"]
        + [f"body.{f}" for f in BODY_FIELDS[6:]]
    )


def test_args_must_be_a_json_object(make_tx: TxFactory, doctor: Identity) -> None:
    body = body_of(make_tx())
    for args, text in ((b"[1, 2]", "args must be a JSON object"), (b"{nope", "args are not")):
        body.args = args
        tx = txlib.parse(signed(body, doctor.key), MAX)
        with pytest.raises(Rejection) as info:
            txlib.decode_args(tx)
        assert info.value.code == TxCode.BAD_ARGUMENTS
        assert info.value.message.startswith(text)
    body.args = b""
    assert txlib.decode_args(txlib.parse(signed(body, doctor.key), MAX)) == {}


# -- check: chain, time window, algorithms ---------------------------------------------


def test_a_good_transaction_passes_and_names_its_creator(
    make_tx: TxFactory, checker: TxChecker, doctor: Identity, t0: int
) -> None:
    identity = checker.check(txlib.parse(make_tx(), MAX), t0)
    assert (identity.name, identity.role, identity.institution) == (
        "hosp1-doctor1",
        "doctor",
        "hosp1",
    )
    assert identity.identity == sha256(doctor.certificate_der).hex()
    assert identity.algorithm == keys.ECDSA_P256_SHA256


def test_wrong_chain(make_tx: TxFactory, checker: TxChecker, genesis: Genesis, t0: int) -> None:
    rej = refused(make_tx(chain_id=bytes(32)), checker, t0)
    assert rej.code == TxCode.WRONG_CHAIN
    assert rej.message == (
        f"chain_id {'0' * 16}… is not this consortium's ({genesis.chain_id.hex()[:16]}…)"
    )


def test_expired_at_and_after_expiry(make_tx: TxFactory, checker: TxChecker, t0: int) -> None:
    raw = make_tx(now_ms=t0, ttl_ms=1_000)
    assert checker.check(txlib.parse(raw, MAX), t0 + 999)
    for at in (t0 + 1_000, t0 + 50_000):
        rej = refused(raw, checker, at)
        assert rej.code == TxCode.EXPIRED
        assert rej.message == f"expired at {t0 + 1_000} ms; it is now {at} ms"


def test_not_yet_valid_beyond_the_clock_skew(
    make_tx: TxFactory, checker: TxChecker, genesis: Genesis, t0: int
) -> None:
    skew = genesis.config.params.max_clock_skew_ms
    assert checker.check(txlib.parse(make_tx(now_ms=t0 + skew), MAX), t0)
    rej = refused(make_tx(now_ms=t0 + skew + 1), checker, t0)
    assert rej.code == TxCode.NOT_YET_VALID
    assert rej.message == (
        f"created_at {t0 + skew + 1} ms is more than {skew} ms ahead of this node's clock ({t0} ms)"
    )


def test_ttl_too_long(make_tx: TxFactory, checker: TxChecker, genesis: Genesis, t0: int) -> None:
    ttl = genesis.config.params.max_tx_ttl_ms
    assert checker.check(txlib.parse(make_tx(ttl_ms=ttl), MAX), t0)
    rej = refused(make_tx(ttl_ms=ttl + 1), checker, t0)
    assert rej.code == TxCode.TTL_TOO_LONG
    assert rej.message == f"expires_at - created_at must be at most {ttl} ms"


def test_unsupported_hash_algorithm(
    make_tx: TxFactory, checker: TxChecker, doctor: Identity, t0: int
) -> None:
    body = body_of(make_tx())
    body.hash_algorithm = 2  # type: ignore[assignment]
    rej = refused(signed(body, doctor.key), checker, t0)
    assert rej.code == TxCode.UNSUPPORTED_ALGORITHM
    assert rej.message == "hash_algorithm must be SHA256"


@pytest.mark.parametrize("algorithm", [keys.ED25519, 7])
def test_signature_algorithm_that_does_not_match_the_key(
    make_tx: TxFactory, checker: TxChecker, doctor: Identity, t0: int, algorithm: int
) -> None:
    body = body_of(make_tx())
    body.signature_algorithm = algorithm  # type: ignore[assignment]
    rej = refused(signed(body, doctor.key), checker, t0)
    assert rej.code == TxCode.UNSUPPORTED_ALGORITHM
    assert rej.message == "signature_algorithm does not match the creator's key"


# -- check: creator ----------------------------------------------------------------------


def test_certificate_from_a_ca_outside_the_genesis_is_unknown(
    make_tx: TxFactory, checker: TxChecker, t0: int, now: dt.datetime
) -> None:
    key = keys.generate_key()
    # Same institution name as a member, but a different CA key.
    rogue = CertificateAuthority.create("hosp1", keys.generate_key(), now)
    cert = rogue.issue("mallory", "doctor", key.public_key(), now)
    rej = refused(with_identity(make_tx, key, der(cert)), checker, t0)
    assert rej.code == TxCode.UNKNOWN_CREATOR
    assert rej.message == "certificate of 'mallory' is not issued by the hosp1 CA"

    outsider = CertificateAuthority.create("hosp9", keys.generate_key(), now)
    cert = outsider.issue("eve", "doctor", key.public_key(), now)
    rej = refused(with_identity(make_tx, key, der(cert)), checker, t0)
    assert rej.code == TxCode.UNKNOWN_CREATOR
    assert rej.message == "institution 'hosp9' is not in the consortium"


@pytest.mark.parametrize("role", ["leader", "regulator", "node"])
def test_an_institution_ca_cannot_mint_reserved_roles(
    role: str,
    make_tx: TxFactory,
    checker: TxChecker,
    consortium: Path,
    t0: int,
    now: dt.datetime,
) -> None:
    key = keys.generate_key()
    cert = hosp1_ca(consortium).issue(f"self-made-{role}", role, key.public_key(), now)
    rej = refused(with_identity(make_tx, key, der(cert)), checker, t0)
    assert rej.code == TxCode.UNKNOWN_CREATOR
    assert f"role {role!r} is reserved" in rej.message


def test_the_genesis_leader_and_regulator_are_accepted(
    make_tx: TxFactory, checker: TxChecker, identities: Callable[[str], Identity], t0: int
) -> None:
    for name, role in (("leader", "leader"), ("regulator", "regulator")):
        ident = identities(name)
        raw = with_identity(make_tx, ident.key, ident.certificate_der)
        assert checker.check(txlib.parse(raw, 1 << 20), t0).role == role


def test_garbage_certificate_is_unknown(make_tx: TxFactory, checker: TxChecker, t0: int) -> None:
    key = keys.generate_key()
    rej = refused(with_identity(make_tx, key, b"not a certificate"), checker, t0)
    assert rej.code == TxCode.UNKNOWN_CREATOR
    assert rej.message.startswith("creator certificate does not parse")


def test_the_ca_certificate_itself_is_not_a_creator(
    make_tx: TxFactory, checker: TxChecker, consortium: Path, t0: int
) -> None:
    ca = hosp1_ca(consortium)
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    rej = refused(with_identity(make_tx, ca.key, der(ca.certificate)), checker, t0)
    assert rej.code == TxCode.UNKNOWN_CREATOR
    assert rej.message == "certificate role 'ca' is not a consortium role"


def test_certificate_outside_its_validity_is_unknown(
    make_tx: TxFactory, checker: TxChecker, consortium: Path, t0: int
) -> None:
    key = keys.generate_key()
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    cert = hosp1_ca(consortium).issue("old-doctor", "doctor", key.public_key(), past, years=1)
    rej = refused(with_identity(make_tx, key, der(cert)), checker, t0)
    assert rej.code == TxCode.UNKNOWN_CREATOR
    assert rej.message == "certificate of 'old-doctor' is not valid now"


def test_revoked_creator(
    make_tx: TxFactory, checker: TxChecker, genesis: Genesis, doctor: Identity, t0: int
) -> None:
    asked: list[str] = []

    def is_revoked(identity: str) -> bool:
        asked.append(identity)
        return True

    revoking = TxChecker(checker.rules, IdentityVerifier(genesis.ca_certificates()), is_revoked)
    rej = refused(make_tx(), revoking, t0)
    assert rej.code == TxCode.CREATOR_REVOKED
    assert rej.message == "certificate of 'hosp1-doctor1' has been revoked"
    assert asked == [sha256(doctor.certificate_der).hex()]


def test_ed25519_identity_is_accepted(
    make_tx: TxFactory, checker: TxChecker, consortium: Path, t0: int, now: dt.datetime
) -> None:
    key = keys.generate_key(keys.ED25519)
    cert = hosp1_ca(consortium).issue("ed-doctor", "doctor", key.public_key(), now)
    raw = with_identity(make_tx, key, der(cert))
    assert body_of(raw).signature_algorithm == keys.ED25519
    identity = checker.check(txlib.parse(raw, MAX), t0)
    assert (identity.name, identity.algorithm) == ("ed-doctor", keys.ED25519)


# -- check: signature ----------------------------------------------------------------


def flip_signature_byte(raw: bytes, index: int = -1) -> bytes:
    signed_tx = ledger_pb2.SignedTx.FromString(raw)
    sig = bytearray(signed_tx.signature)
    sig[index] ^= 0x01
    return ledger_pb2.SignedTx(body=signed_tx.body, signature=bytes(sig)).SerializeToString()


@pytest.mark.parametrize("index", [-1, 10])
def test_flipped_signature_byte(
    make_tx: TxFactory, checker: TxChecker, t0: int, index: int
) -> None:
    raw = make_tx()
    rej = refused(flip_signature_byte(raw, index), checker, t0)
    assert rej.code == TxCode.BAD_SIGNATURE
    assert rej.message == "signature does not verify over the body bytes"


def test_flipped_signature_after_the_good_one_was_verified(
    make_tx: TxFactory, checker: TxChecker, t0: int
) -> None:
    # The verified-signature cache must not let a different signature through.
    raw = make_tx()
    checker.check(txlib.parse(raw, MAX), t0)
    assert refused(flip_signature_byte(raw), checker, t0).code == TxCode.BAD_SIGNATURE


def test_ed25519_flipped_signature(
    make_tx: TxFactory, checker: TxChecker, consortium: Path, t0: int, now: dt.datetime
) -> None:
    key = keys.generate_key(keys.ED25519)
    cert = hosp1_ca(consortium).issue("ed-doctor", "doctor", key.public_key(), now)
    raw = flip_signature_byte(with_identity(make_tx, key, der(cert)), 5)
    assert refused(raw, checker, t0).code == TxCode.BAD_SIGNATURE


def test_signature_by_another_identity_over_the_same_body(
    make_tx: TxFactory, checker: TxChecker, other_doctor: Identity, t0: int
) -> None:
    signed_tx = ledger_pb2.SignedTx.FromString(make_tx())
    forged = ledger_pb2.SignedTx(
        body=signed_tx.body, signature=keys.sign(other_doctor.key, signed_tx.body)
    ).SerializeToString()
    rej = refused(forged, checker, t0)
    assert rej.code == TxCode.BAD_SIGNATURE


def test_replayed_body_with_a_re_made_signature_has_the_same_tx_id(
    make_tx: TxFactory, checker: TxChecker, doctor: Identity, t0: int
) -> None:
    raw = make_tx()
    signed_tx = ledger_pb2.SignedTx.FromString(raw)
    again = ledger_pb2.SignedTx(
        body=signed_tx.body, signature=keys.sign(doctor.key, signed_tx.body)
    ).SerializeToString()
    assert again != raw  # ECDSA signatures are randomised
    first, second = txlib.parse(raw, MAX), txlib.parse(again, MAX)
    assert first.tx_id == second.tx_id
    # Both verify: catching the replay is the job of the tx index and the mempool.
    assert checker.check(first, t0) == checker.check(second, t0)


def test_tx_id_ignores_the_signature_and_is_never_re_serialised(
    make_tx: TxFactory, doctor: Identity
) -> None:
    raw = make_tx()
    signed_tx = ledger_pb2.SignedTx.FromString(raw)
    # Append an unknown field to the body: a re-serialising parser could drop it.
    body = signed_tx.body + b"\xa0\x06\x01"  # field 100, varint 1
    other = ledger_pb2.SignedTx(body=body, signature=keys.sign(doctor.key, body))
    tx = txlib.parse(other.SerializeToString(), MAX)
    assert tx.body_bytes == body
    assert tx.tx_id == sha256(body) != txlib.parse(raw, MAX).tx_id


def test_build_is_deterministic_apart_from_the_signature(
    genesis: Genesis, doctor: Identity, t0: int
) -> None:
    def build() -> ParsedTx:
        raw = txlib.build(
            chain_id=genesis.chain_id,
            contract="kv",
            function="put",
            args={"value": 1, "key": "a"},
            key=doctor.key,
            certificate_der=doctor.certificate_der,
            now_ms=t0,
            ttl_ms=5_000,
            nonce=b"n" * 16,
        )
        return txlib.parse(raw, MAX)

    a, b = build(), build()
    assert a.body_bytes == b.body_bytes
    assert a.body.args == b'{"key":"a","value":1}'
    assert (a.body.created_at_ms, a.body.expires_at_ms) == (t0, t0 + 5_000)


def test_identities_loaded_from_the_consortium(identities: Callable[[str], Identity]) -> None:
    assert identities("hosp2-patient1").name == "hosp2-patient1"


@pytest.mark.parametrize("kind", ["p384", "rsa"])
def test_certificate_with_an_unaccepted_key_type_is_unknown(
    make_tx: TxFactory, checker: TxChecker, consortium: Path, t0: int, kind: str, now: dt.datetime
) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    public = (
        ec.generate_private_key(ec.SECP384R1()).public_key()
        if kind == "p384"
        else rsa.generate_private_key(65537, 2048).public_key()
    )
    cert = hosp1_ca(consortium).issue("odd-key", "doctor", public, now)  # type: ignore[arg-type]
    # Signed by an accepted key: the certificate is refused before any signature check.
    rej = refused(with_identity(make_tx, keys.generate_key(), der(cert)), checker, t0)
    assert rej.code == TxCode.UNKNOWN_CREATOR
    if kind == "rsa":
        assert rej.message == "only ECDSA P-256 and Ed25519 keys are accepted"
    else:
        assert "P-256" in rej.message


def test_args_with_nan_are_not_json(make_tx: TxFactory, doctor: Identity) -> None:
    body = body_of(make_tx())
    body.args = b'{"key": "a", "value": NaN}'
    tx = txlib.parse(signed(body, doctor.key), MAX)
    with pytest.raises(Rejection) as info:
        txlib.decode_args(tx)
    assert info.value.code == TxCode.BAD_ARGUMENTS


def test_deeply_nested_args_are_bad_arguments(make_tx: TxFactory, doctor: Identity) -> None:
    body = body_of(make_tx())
    body.args = b'{"v":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    tx = txlib.parse(signed(body, doctor.key), MAX)
    with pytest.raises(Rejection) as info:
        txlib.decode_args(tx)
    assert info.value.code == TxCode.BAD_ARGUMENTS


def test_preverify_spares_check_the_signature_and_decides_nothing(
    make_tx: TxFactory, checker: TxChecker, t0: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A follower verifies an appended entry's signatures before the commit (preverify);
    `check` at execution then verifies nothing again, and still refuses what is wrong."""
    calls: list[bytes] = []
    verify = keys.verify

    def counting(public_key: object, signature: bytes, data: bytes) -> bool:
        calls.append(signature)
        return verify(public_key, signature, data)  # type: ignore[arg-type]

    monkeypatch.setattr(txlib.keys, "verify", counting)
    good = txlib.parse(make_tx(), MAX)
    bad = txlib.parse(flip_signature_byte(make_tx()), MAX)
    expired = txlib.parse(make_tx(now_ms=t0 - 120_000), MAX)
    for tx in (good, bad, expired):
        checker.preverify(tx)  # never raises
    assert len(calls) == 3
    checker.check(good, t0)
    assert len(calls) == 3  # remembered
    assert refused(bad.raw, checker, t0).code == TxCode.BAD_SIGNATURE  # not remembered
    assert refused(expired.raw, checker, t0).code == TxCode.EXPIRED  # the rules still run
    unknown = ParsedTx(good.raw, good.tx_id, good.body_bytes, ledger_pb2.TxBody(), b"")
    checker.preverify(unknown)  # no certificate: left to check
