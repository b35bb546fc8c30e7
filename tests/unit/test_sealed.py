"""node/sdk/sealed.py: text sealed to the parties of a referral (no node needed)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from node.crypto import keys
from node.records.encryption_keys import EncryptionPrivateKey, write_key_pair
from node.records.suites import HpkeSuite
from node.sdk import sealed
from node.sdk.client import Identity


def _identity(folder: Path, name: str) -> Identity:
    """An identity folder with an encryption key pair; the 'certificate' is any bytes
    (only its hash, the identity id, matters for opening)."""
    path = folder / name
    path.mkdir()
    write_key_pair(path)
    return Identity(name, keys.generate_key(), f"cert of {name}".encode(), path)


@pytest.fixture(scope="module")
def people(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Identity]:
    root = tmp_path_factory.mktemp("ids")
    return {n: _identity(root, n) for n in ("requester", "target", "regulator")}


def _public(ident: Identity) -> sealed.EncryptionPublicKey:
    from node.sdk.identity_keys import current_public_key

    return current_public_key(ident)


def test_round_trip_for_every_party(people: dict[str, Identity]) -> None:
    text = "胸痛 3 天, 疑似急性冠脉综合征 — needs PCI"
    parties = {p.id: _public(p) for p in (people["requester"], people["target"])}
    field = sealed.seal(text, parties)
    assert field.startswith(sealed.PREFIX) and len(field) <= sealed.MAX_SEALED_CHARS
    assert text.encode() not in base64.b64decode(field[len(sealed.PREFIX) :])
    assert sorted(sealed.recipients_of(field)) == sorted(parties)
    for name in ("requester", "target"):
        assert sealed.open_text(people[name], field) == text


def test_non_party_is_refused(people: dict[str, Identity]) -> None:
    field = sealed.seal("reason", {people["target"].id: _public(people["target"])})
    with pytest.raises(sealed.NotAParty, match="not a party"):
        sealed.open_text(people["regulator"], field)
    assert sealed.try_open(people["regulator"], field) is None
    assert sealed.try_open(people["target"], field) == "reason"


def test_a_party_without_the_right_private_key(people: dict[str, Identity]) -> None:
    target = people["target"]
    other = EncryptionPrivateKey.generate()
    field = sealed.seal("x", {target.id: other.public_key()})
    with pytest.raises(sealed.NotAParty, match="does not hold"):
        sealed.open_text(target, field)


def test_tampering_is_detected(people: dict[str, Identity]) -> None:
    target = people["target"]
    field = sealed.seal("the outcome", {target.id: _public(target)})
    raw = bytearray(base64.b64decode(field[len(sealed.PREFIX) :]))
    raw[40] ^= 1  # inside the ciphertext
    bad = sealed.PREFIX + base64.b64encode(bytes(raw)).decode()
    with pytest.raises(sealed.SealedError, match="altered"):
        sealed.open_text(target, bad)
    with pytest.raises(sealed.SealedError, match="not a sealed field"):
        sealed.open_text(target, "ENC(plain)")
    with pytest.raises(sealed.SealedError, match="base64"):
        sealed.open_text(target, sealed.PREFIX + "!!")


def test_size_limit_refuses_too_many_hybrid_parties() -> None:
    keys_ = {f"id{n:02d}": EncryptionPrivateKey.generate().public_key() for n in range(12)}
    fits = dict(list(keys_.items())[:8])
    assert len(sealed.seal("a reason", fits)) <= sealed.MAX_SEALED_CHARS
    with pytest.raises(sealed.TooManyParties, match="fewer parties"):
        sealed.seal("a reason", keys_)


def test_x25519_parties_are_small() -> None:
    keys_ = {
        f"id{n:02d}": EncryptionPrivateKey.generate(HpkeSuite.X25519).public_key()
        for n in range(20)
    }
    assert len(sealed.seal("a reason", keys_)) < 8000


def test_no_parties_is_an_error() -> None:
    with pytest.raises(sealed.SealedError, match="at least one party"):
        sealed.seal("x", {})
