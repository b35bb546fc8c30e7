"""Shared fixtures of the record tests: key pairs per identity and suite (made once per
session: ML-KEM key generation is cheap, but there is no need to repeat it), a fresh
vault per test, and the helpers that scan a vault folder for leaked bytes."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.records import EncryptionPrivateKey, HpkeSuite, Vault

IDENTITIES = ("hosp1-doctor1", "hosp1-patient1", "hosp2-doctor1", "hosp2-doctor2")


@pytest.fixture(scope="session")
def hybrid_keys() -> dict[str, EncryptionPrivateKey]:
    return {i: EncryptionPrivateKey.generate(HpkeSuite.MLKEM768_X25519) for i in IDENTITIES}


@pytest.fixture(scope="session")
def x25519_keys() -> dict[str, EncryptionPrivateKey]:
    return {i: EncryptionPrivateKey.generate(HpkeSuite.X25519) for i in IDENTITIES}


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault.in_data_dir(tmp_path / "data")


def fhir_fixture_dir() -> Path:
    """../shared/fixtures/fhir beside the checkout, or MEDLEDGER_FHIR_FIXTURES."""
    env = os.environ.get("MEDLEDGER_FHIR_FIXTURES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "fhir"


def vault_files(root: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()


def encodings_of(secret: bytes) -> list[bytes]:
    """The secret raw, in hex (both cases) and in base64 at each of the three alignments
    it can take inside a longer base64 text (the edge characters depend on neighbours,
    so they are trimmed)."""
    forms = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for shift in range(3):
        # Base64 characters of the 3-byte groups made only of secret bytes.
        first = 0 if shift == 0 else 4
        last = (shift + len(secret)) // 3 * 4
        padded = b"\x00" * shift + secret
        forms.append(base64.b64encode(padded)[first:last])
        forms.append(base64.urlsafe_b64encode(padded)[first:last])
    return [f for f in forms if len(f) >= 8]
