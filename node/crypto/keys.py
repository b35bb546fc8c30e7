"""Signing keys: ECDSA P-256 (default) and Ed25519, in PEM files written with mode 0600."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from node.codes import TxCode

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

# Wire values of medledger.v1.SignatureAlgorithm.
ECDSA_P256_SHA256 = 1
ED25519 = 2


class KeyFileError(Exception):
    """A key file that cannot be used; the message says which file and why."""


def generate_key(algorithm: int = ECDSA_P256_SHA256) -> PrivateKey:
    if algorithm == ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def algorithm_of(key: PrivateKey | PublicKey) -> int:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return ED25519
    if isinstance(key.curve, ec.SECP256R1):
        return ECDSA_P256_SHA256
    raise KeyFileError(f"unsupported curve {key.curve.name}: use P-256 or Ed25519")


def sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify(key: PublicKey, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def signature_code(key: PublicKey, algorithm: int) -> TxCode:
    """VALID when `algorithm` (as declared in a TxBody) is the algorithm of `key`."""
    try:
        return TxCode.VALID if algorithm_of(key) == algorithm else TxCode.UNSUPPORTED_ALGORITHM
    except KeyFileError:
        return TxCode.UNSUPPORTED_ALGORITHM


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 from the first byte on (never world-readable, even
    briefly); refuses to overwrite an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_private(path: Path) -> PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path}: only ECDSA P-256 and Ed25519 keys are accepted")
    algorithm_of(key)
    return key
