"""Encryption keys of identities in the SDK (DESIGN §6: encryption keys are not signing
keys).

Registering: the identity signs a statement binding its HPKE public key to its identity
and the chain with its certificate key, and sends the certificate along, because
contracts cannot do cryptography: whoever fetches the key checks the statement here.

Rotating: the new pair replaces `enc.key`/`enc.pub` in the identity folder and the old
private key is kept as `enc.key.v<N>`, so wrapped keys made for an older version still
open (ownership binds to the identity, not to one key).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from node.crypto import keys
from node.records.encryption_keys import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    EncryptionPrivateKey,
    EncryptionPublicKey,
    load_private_key,
    write_key_pair,
)
from node.records.errors import KeyFormatError
from node.records.suites import DEFAULT_SUITE, HpkeSuite
from node.sdk.client import Client, ClientError, Identity

STATEMENT_LABEL = b"medledger/encryption-key/v1\x00"
ARCHIVE_PREFIX = PRIVATE_KEY_FILE + ".v"


def statement(chain_id: bytes, identity: str, public_key: str, suite: str) -> bytes:
    """The bytes an identity signs to register `public_key` (registry text form)."""
    return b"\x00".join(
        [STATEMENT_LABEL, chain_id, identity.encode(), suite.encode(), public_key.encode()]
    )


def registration_args(
    identity: Identity, chain_id: bytes, public: EncryptionPublicKey
) -> dict[str, Any]:
    """Arguments of `consortium.register_key` / `rotate_key` for `public`."""
    text, suite = public.to_registry()
    signature = keys.sign(identity.key, statement(chain_id, identity.id, text, suite))
    return {
        "public_key": text,
        "suite": suite,
        "signature": base64.b64encode(signature).decode(),
        "certificate": base64.b64encode(identity.certificate_der).decode(),
    }


def verify_registration(
    record: Mapping[str, Any], who: str, chain_id: bytes
) -> EncryptionPublicKey:
    """The key of a registry entry, after checking that `who`'s certificate signed it."""
    try:
        cert_der = base64.b64decode(record.get("certificate") or "", validate=True)
        signature = base64.b64decode(record["signature"], validate=True)
        text, suite = record["public_key"], record["suite"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ClientError(f"the registered key of {who[:16]}… is malformed: {exc}") from None
    if not cert_der or hashlib.sha256(cert_der).hexdigest() != who:
        raise ClientError(
            f"the registered key of {who[:16]}… carries no certificate of that identity"
        )
    cert_key = x509.load_der_x509_certificate(cert_der).public_key()
    if not isinstance(cert_key, keys.PublicKey) or not keys.verify(
        cert_key, signature, statement(chain_id, who, text, suite)
    ):
        raise ClientError(f"the registered key of {who[:16]}… is not signed by its certificate")
    try:
        return EncryptionPublicKey.from_registry(text, suite)
    except KeyFormatError as exc:
        raise ClientError(str(exc)) from None


def fetch_public_key(client: Client, caller: Identity, who: str) -> EncryptionPublicKey:
    """`who`'s current encryption key from the chain, verified against its certificate."""
    record = client.query(caller, "consortium", "get_key", {"identity": who})
    if record is None:
        raise ClientError(f"identity {who[:16]}… has registered no encryption key")
    return verify_registration(record, who, client.chain_id())


def _folder(identity: Identity) -> Path:
    if identity.folder is None:
        raise ClientError(f"identity {identity.name} was not loaded from a folder")
    return identity.folder


def private_keys(identity: Identity) -> dict[bytes, EncryptionPrivateKey]:
    """Every encryption private key the identity holds (current and archived), by the
    fingerprint of its public key: a wrapped key names the fingerprint it was made for."""
    folder = _folder(identity)
    paths = [folder / PRIVATE_KEY_FILE, *sorted(folder.glob(ARCHIVE_PREFIX + "*"))]
    found: dict[bytes, EncryptionPrivateKey] = {}
    for path in paths:
        if path.exists():
            key = load_private_key(path)
            found[key.public_key().fingerprint()] = key
    if not found:
        raise ClientError(f"{folder} holds no encryption key ({PRIVATE_KEY_FILE})")
    return found


def current_public_key(identity: Identity) -> EncryptionPublicKey:
    return load_private_key(_folder(identity) / PRIVATE_KEY_FILE).public_key()


def register(client: Client, identity: Identity, wait: bool = True) -> Any:
    """Registers the identity folder's current encryption key on chain."""
    args = registration_args(identity, client.chain_id(), current_public_key(identity))
    return client.submit(identity, "consortium", "register_key", args, wait=wait)


def rotate(
    client: Client, identity: Identity, suite: HpkeSuite = DEFAULT_SUITE, wait: bool = True
) -> Any:
    """Makes a new key pair (archiving the old private key) and registers it on chain.
    If the transaction fails, the new pair stays current locally and `register`-style
    retry with `rotate_key` arguments is safe: the old key is archived, not lost."""
    folder = _folder(identity)
    current = folder / PRIVATE_KEY_FILE
    version = 1 + len(list(folder.glob(ARCHIVE_PREFIX + "*")))
    current.rename(folder / f"{ARCHIVE_PREFIX}{version}")
    (folder / PUBLIC_KEY_FILE).unlink(missing_ok=True)
    public = write_key_pair(folder, suite)
    args = registration_args(identity, client.chain_id(), public)
    return client.submit(identity, "consortium", "rotate_key", args, wait=wait)
