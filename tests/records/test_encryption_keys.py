"""Encryption key pairs: generation, the key-file format, provisioning files, old files."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from node.records import (
    EncryptionPrivateKey,
    EncryptionPublicKey,
    HpkeSuite,
    load_private_key,
    load_public_key,
    write_key_pair,
)
from node.records.errors import KeyFormatError


@pytest.mark.parametrize("suite", list(HpkeSuite))
def test_pem_round_trip_names_the_suite(suite: HpkeSuite) -> None:
    key = EncryptionPrivateKey.generate(suite)
    pem = key.to_pem()
    assert pem.startswith(
        b"-----BEGIN MEDLEDGER HPKE PRIVATE KEY-----\nSuite: " + suite.value.encode()
    )
    assert EncryptionPrivateKey.from_pem(pem) == key
    public = key.public_key()
    assert EncryptionPublicKey.from_pem(public.to_pem()) == public
    assert len(public.fingerprint()) == 32
    assert repr(key).find(key.raw.hex()) == -1  # raw bytes never in repr


@pytest.mark.parametrize("suite", list(HpkeSuite))
def test_registry_form_matches_the_consortium_contract(suite: HpkeSuite) -> None:
    public = EncryptionPrivateKey.generate(suite).public_key()
    key_text, suite_name = public.to_registry()
    assert suite_name in {"MLKEM768-X25519", "X25519"}  # contracts/consortium.py KEY_SUITES
    assert len(key_text) <= 8192  # its MAX_KEY_TEXT
    assert EncryptionPublicKey.from_registry(key_text, suite_name) == public
    with pytest.raises(KeyFormatError, match="unusable"):
        EncryptionPublicKey.from_registry(key_text, "RSA")


def test_key_sizes() -> None:
    hybrid = EncryptionPrivateKey.generate(HpkeSuite.MLKEM768_X25519)
    assert (len(hybrid.raw), len(hybrid.public_key().raw)) == (96, 1216)
    x = EncryptionPrivateKey.generate(HpkeSuite.X25519)
    assert (len(x.raw), len(x.public_key().raw)) == (32, 32)


def test_write_key_pair_for_provisioning(tmp_path: Path) -> None:
    public = write_key_pair(tmp_path)
    assert public.suite is HpkeSuite.MLKEM768_X25519
    assert stat.S_IMODE((tmp_path / "enc.key").stat().st_mode) == 0o600
    assert load_public_key(tmp_path / "enc.pub") == public
    assert load_private_key(tmp_path / "enc.key").public_key() == public
    with pytest.raises(KeyFormatError, match="refusing to overwrite"):
        write_key_pair(tmp_path)


def test_reads_plain_x25519_pem_files_written_by_old_provisioning(tmp_path: Path) -> None:
    key = x25519.X25519PrivateKey.generate()
    (tmp_path / "enc.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (tmp_path / "enc.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    private = load_private_key(tmp_path / "enc.key")
    assert private.suite is HpkeSuite.X25519
    assert load_public_key(tmp_path / "enc.pub") == private.public_key()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a MEDLEDGER HPKE PRIVATE KEY file"),
        (
            b"-----BEGIN MEDLEDGER HPKE PRIVATE KEY-----\nSuite: RSA\n\nAAAA\n"
            b"-----END MEDLEDGER HPKE PRIVATE KEY-----\n",
            "unknown suite 'RSA'",
        ),
        (
            b"-----BEGIN MEDLEDGER HPKE PRIVATE KEY-----\nSuite: X25519\n\nAAAA\n"
            b"-----END MEDLEDGER HPKE PRIVATE KEY-----\n",
            "is 32 bytes, got 3",
        ),
    ],
)
def test_bad_key_files_are_named(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "enc.key"
    path.write_bytes(data)
    with pytest.raises(KeyFormatError, match=message) as info:
        load_private_key(path)
    assert str(path) in str(info.value)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFormatError, match="cannot read"):
        load_private_key(tmp_path / "nope")
