"""Encryption key pairs of identities (HPKE recipients), their files and fingerprints.

These are not signing keys (DESIGN §6): an identity signs with its certificate key and
registers this public key on chain.

Key file format (`enc.key` mode 0600, `enc.pub`): PEM-style armour whose header names the
suite, so a file can never be used with the wrong KEM:

    -----BEGIN MEDLEDGER HPKE PRIVATE KEY-----
    Suite: MLKEM768-X25519

    <base64 of the raw key, 64 characters a line>
    -----END MEDLEDGER HPKE PRIVATE KEY-----

Raw keys: hybrid private = ML-KEM-768 seed (64 bytes) || X25519 private (32); hybrid
public = ML-KEM-768 encapsulation key (1,184) || X25519 public (32); X25519 = 32 and 32.
On chain (`consortium.register_key`) a public key is `public_key` = base64 of the raw
key and `suite` = the suite name: see `to_registry` / `from_registry`.
Plain PKCS#8 / SubjectPublicKeyInfo X25519 PEM files (what provisioning wrote before) are
still read, as the X25519 suite.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from node.crypto.keys import write_private
from node.records.errors import KeyFormatError
from node.records.suites import DEFAULT_SUITE, HpkeSuite

PRIVATE_KEY_FILE = "enc.key"
PUBLIC_KEY_FILE = "enc.pub"

_PRIVATE_LABEL = "MEDLEDGER HPKE PRIVATE KEY"
_PUBLIC_LABEL = "MEDLEDGER HPKE PUBLIC KEY"
_MLKEM_SEED = 64
_MLKEM_PUBLIC = 1184
_X25519 = 32
_PRIVATE_SIZES = {HpkeSuite.MLKEM768_X25519: _MLKEM_SEED + _X25519, HpkeSuite.X25519: _X25519}
_PUBLIC_SIZES = {HpkeSuite.MLKEM768_X25519: _MLKEM_PUBLIC + _X25519, HpkeSuite.X25519: _X25519}

HpkePublicKey = hpke.MLKEM768X25519PublicKey | x25519.X25519PublicKey
HpkePrivateKey = hpke.MLKEM768X25519PrivateKey | x25519.X25519PrivateKey


@dataclass(frozen=True)
class EncryptionPublicKey:
    suite: HpkeSuite
    raw: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.raw) != _PUBLIC_SIZES[self.suite]:
            raise KeyFormatError(
                f"a {self.suite.value} public key is {_PUBLIC_SIZES[self.suite]} bytes, "
                f"got {len(self.raw)}"
            )
        self._hpke  # noqa: B018  (checks the key now, not at its first use)

    def fingerprint(self) -> bytes:
        """SHA-256 over the suite and the raw key; names this key in wrapped keys."""
        return self._fingerprint

    def hpke_key(self) -> HpkePublicKey:
        return self._hpke

    # Computed once per object (the dataclass is frozen; cached_property writes the
    # instance dict directly): building an ML-KEM key object costs more than an HPKE op.
    @cached_property
    def _fingerprint(self) -> bytes:
        return hashlib.sha256(
            b"medledger/hpke-public-key/v1\x00" + self.suite.value.encode() + b"\x00" + self.raw
        ).digest()

    @cached_property
    def _hpke(self) -> HpkePublicKey:
        try:
            if self.suite is HpkeSuite.X25519:
                return x25519.X25519PublicKey.from_public_bytes(self.raw)
            return hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(self.raw[:_MLKEM_PUBLIC]),
                x25519.X25519PublicKey.from_public_bytes(self.raw[_MLKEM_PUBLIC:]),
            )
        except ValueError as exc:
            raise KeyFormatError(f"not a valid {self.suite.value} public key: {exc}") from exc

    def to_pem(self) -> bytes:
        return _armour(_PUBLIC_LABEL, self.suite, self.raw)

    def to_registry(self) -> tuple[str, str]:
        """(`public_key`, `suite`) arguments of `consortium.register_key` / `rotate_key`."""
        return base64.b64encode(self.raw).decode(), self.suite.value

    @classmethod
    def from_registry(cls, public_key: str, suite: str) -> EncryptionPublicKey:
        """The key as stored in the on-chain registry (`enckey/<identity>`)."""
        try:
            return cls(HpkeSuite(suite), base64.b64decode(public_key, validate=True))
        except ValueError as exc:
            raise KeyFormatError(f"registered encryption key is unusable: {exc}") from None

    @classmethod
    def from_pem(cls, data: bytes) -> EncryptionPublicKey:
        if data.lstrip().startswith(b"-----BEGIN PUBLIC KEY-----"):
            return _legacy_public(data)
        suite, raw = _unarmour(_PUBLIC_LABEL, data)
        return cls(suite, raw)


@dataclass(frozen=True)
class EncryptionPrivateKey:
    suite: HpkeSuite
    raw: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.raw) != _PRIVATE_SIZES[self.suite]:
            raise KeyFormatError(
                f"a {self.suite.value} private key is {_PRIVATE_SIZES[self.suite]} bytes, "
                f"got {len(self.raw)}"
            )
        self._hpke  # noqa: B018  (checks the key now, not at its first use)

    @classmethod
    def generate(cls, suite: HpkeSuite = DEFAULT_SUITE) -> EncryptionPrivateKey:
        x = x25519.X25519PrivateKey.generate().private_bytes_raw()
        if suite is HpkeSuite.X25519:
            return cls(suite, x)
        return cls(suite, mlkem.MLKEM768PrivateKey.generate().private_bytes_raw() + x)

    def _components(self) -> tuple[mlkem.MLKEM768PrivateKey | None, x25519.X25519PrivateKey]:
        try:
            if self.suite is HpkeSuite.X25519:
                return None, x25519.X25519PrivateKey.from_private_bytes(self.raw)
            return (
                mlkem.MLKEM768PrivateKey.from_seed_bytes(self.raw[:_MLKEM_SEED]),
                x25519.X25519PrivateKey.from_private_bytes(self.raw[_MLKEM_SEED:]),
            )
        except ValueError as exc:
            raise KeyFormatError(f"not a valid {self.suite.value} private key: {exc}") from exc

    def hpke_key(self) -> HpkePrivateKey:
        return self._hpke

    def public_key(self) -> EncryptionPublicKey:
        return self._public

    @cached_property
    def _hpke(self) -> HpkePrivateKey:
        ml, x = self._components()
        return x if ml is None else hpke.MLKEM768X25519PrivateKey(ml, x)

    @cached_property
    def _public(self) -> EncryptionPublicKey:
        ml, x = self._components()
        x_pub = x.public_key().public_bytes_raw()
        if ml is None:
            return EncryptionPublicKey(self.suite, x_pub)
        return EncryptionPublicKey(self.suite, ml.public_key().public_bytes_raw() + x_pub)

    def to_pem(self) -> bytes:
        return _armour(_PRIVATE_LABEL, self.suite, self.raw)

    @classmethod
    def from_pem(cls, data: bytes) -> EncryptionPrivateKey:
        if data.lstrip().startswith(b"-----BEGIN PRIVATE KEY-----"):
            return _legacy_private(data)
        suite, raw = _unarmour(_PRIVATE_LABEL, data)
        return cls(suite, raw)


def write_key_pair(folder: Path, suite: HpkeSuite = DEFAULT_SUITE) -> EncryptionPublicKey:
    """Generate an identity's encryption key pair into `folder`/enc.key (mode 0600) and
    `folder`/enc.pub; refuses to overwrite either. For `medledger init-consortium`."""
    key = EncryptionPrivateKey.generate(suite)
    public = key.public_key()
    for name in (PRIVATE_KEY_FILE, PUBLIC_KEY_FILE):
        if (folder / name).exists():
            raise KeyFormatError(f"{folder / name} exists; refusing to overwrite a key")
    write_private(folder / PRIVATE_KEY_FILE, key.to_pem())
    fd = os.open(folder / PUBLIC_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(public.to_pem())
    return public


def load_private_key(path: Path) -> EncryptionPrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFormatError(f"cannot read encryption key {path}: {exc.strerror}") from exc
    try:
        return EncryptionPrivateKey.from_pem(data)
    except KeyFormatError as exc:
        raise KeyFormatError(f"{path}: {exc}") from exc


def load_public_key(path: Path) -> EncryptionPublicKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFormatError(f"cannot read encryption public key {path}: {exc.strerror}") from exc
    try:
        return EncryptionPublicKey.from_pem(data)
    except KeyFormatError as exc:
        raise KeyFormatError(f"{path}: {exc}") from exc


def _armour(label: str, suite: HpkeSuite, raw: bytes) -> bytes:
    body = base64.b64encode(raw).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    text = "\n".join(
        [f"-----BEGIN {label}-----", f"Suite: {suite.value}", "", *lines, f"-----END {label}-----"]
    )
    return (text + "\n").encode()


def _unarmour(label: str, data: bytes) -> tuple[HpkeSuite, bytes]:
    try:
        lines = data.decode("ascii").strip().splitlines()
    except UnicodeDecodeError as exc:
        raise KeyFormatError(f"not a {label} file: it is not ASCII text") from exc
    if (
        len(lines) < 4
        or lines[0] != f"-----BEGIN {label}-----"
        or lines[-1] != (f"-----END {label}-----")
    ):
        raise KeyFormatError(f"not a {label} file: expected '-----BEGIN {label}-----'")
    if not lines[1].startswith("Suite: ") or lines[2] != "":
        raise KeyFormatError(f"{label} has no 'Suite:' header line")
    name = lines[1].removeprefix("Suite: ")
    try:
        suite = HpkeSuite(name)
    except ValueError:
        known = ", ".join(s.value for s in HpkeSuite)
        raise KeyFormatError(f"unknown suite {name!r} (known: {known})") from None
    try:
        raw = base64.b64decode("".join(lines[3:-1]), validate=True)
    except binascii.Error as exc:
        raise KeyFormatError(f"{label} body is not base64: {exc}") from exc
    return suite, raw


def _legacy_private(data: bytes) -> EncryptionPrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, x25519.X25519PrivateKey):
        raise KeyFormatError("a plain PKCS#8 encryption key must be X25519")
    return EncryptionPrivateKey(HpkeSuite.X25519, key.private_bytes_raw())


def _legacy_public(data: bytes) -> EncryptionPublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFormatError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, x25519.X25519PublicKey):
        raise KeyFormatError("a plain SubjectPublicKeyInfo encryption key must be X25519")
    return EncryptionPublicKey(HpkeSuite.X25519, key.public_bytes_raw())
