"""Wrapping a record's data key for one recipient with HPKE (RFC 9180, base mode).

A wrapped key carries a clear header (suite, record id, recipient identity, the
fingerprint of the recipient's encryption key, the record's content hash) so a reader or
the vault can tell at once whom it is for; the header is also hashed into HPKE `info`,
so changing any field of it — to move the key to another record or recipient — makes
unwrapping fail. Byte layout:

    b"MLWK" | version 1 | suite wire id (1 byte) |
    length-prefixed(record id, recipient, key fingerprint, content hash, HPKE enc || ct)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag

from node.crypto.hashing import length_prefixed, split_length_prefixed
from node.records.chunks import DATA_KEY_SIZE
from node.records.encryption_keys import EncryptionPrivateKey, EncryptionPublicKey
from node.records.errors import (
    SuiteMismatchError,
    WrappedKeyBindingError,
    WrappedKeyFormatError,
    WrappedKeyTamperedError,
    WrongRecipientError,
)
from node.records.suites import HpkeSuite

_MAGIC = b"MLWK\x01"
_INFO_LABEL = b"medledger/record-key/v1\x00"
MAX_IDENTITY_BYTES = 256


@dataclass(frozen=True)
class WrappedKey:
    suite: HpkeSuite
    record_id: str
    recipient: str
    key_fingerprint: bytes
    content_hash: bytes
    sealed: bytes = field(repr=False)

    def info(self) -> bytes:
        return _info(
            self.suite, self.record_id, self.recipient, self.key_fingerprint, self.content_hash
        )

    def to_bytes(self) -> bytes:
        return (
            _MAGIC
            + bytes([self.suite.wire_id])
            + length_prefixed(
                self.record_id.encode(),
                self.recipient.encode(),
                self.key_fingerprint,
                self.content_hash,
                self.sealed,
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> WrappedKey:
        if len(data) < len(_MAGIC) + 1 or not data.startswith(_MAGIC):
            raise WrappedKeyFormatError("not a wrapped record key (bad magic or version)")
        try:
            suite = HpkeSuite.from_wire_id(data[len(_MAGIC)])
        except ValueError as exc:
            raise WrappedKeyFormatError(f"wrapped key: {exc}") from None
        parts = _split(data[len(_MAGIC) + 1 :], 5)
        try:
            record_id, recipient = parts[0].decode(), parts[1].decode()
        except UnicodeDecodeError:
            raise WrappedKeyFormatError(
                "wrapped key: record id or recipient is not UTF-8"
            ) from None
        if len(parts[2]) != 32 or len(parts[3]) != 32:
            raise WrappedKeyFormatError("wrapped key: fingerprint and content hash are 32 bytes")
        return cls(suite, record_id, recipient, parts[2], parts[3], parts[4])


def wrap_key(
    data_key: bytes,
    record_id: str,
    content_hash: bytes,
    recipient: str,
    public_key: EncryptionPublicKey,
) -> WrappedKey:
    _check_identity(recipient)
    fingerprint = public_key.fingerprint()
    info = _info(public_key.suite, record_id, recipient, fingerprint, content_hash)
    sealed = public_key.suite.hpke().encrypt(data_key, public_key.hpke_key(), info=info)
    return WrappedKey(public_key.suite, record_id, recipient, fingerprint, content_hash, sealed)


def unwrap_key(
    wrapped: WrappedKey,
    record_id: str,
    content_hash: bytes,
    recipient: str,
    private_key: EncryptionPrivateKey,
) -> bytes:
    """The data key, after checking the wrapped key is for this record and recipient."""
    if wrapped.record_id != record_id:
        raise WrappedKeyBindingError(
            f"the wrapped key is for record {wrapped.record_id}, not {record_id}"
        )
    if wrapped.content_hash != content_hash:
        raise WrappedKeyBindingError(
            f"the wrapped key for record {record_id} was made for other content "
            f"({wrapped.content_hash.hex()[:16]}…, expected {content_hash.hex()[:16]}…)"
        )
    if wrapped.recipient != recipient:
        raise WrongRecipientError(
            f"the wrapped key of record {record_id} is for {wrapped.recipient!r}, not {recipient!r}"
        )
    if wrapped.suite is not private_key.suite:
        raise SuiteMismatchError(
            f"the wrapped key of record {record_id} uses {wrapped.suite.value}; the key "
            f"given is {private_key.suite.value}"
        )
    if wrapped.key_fingerprint != private_key.public_key().fingerprint():
        raise WrongRecipientError(
            f"the wrapped key of record {record_id} is for another encryption key of "
            f"{recipient!r} (rotated key? load the key it was wrapped for)"
        )
    try:
        data_key = wrapped.suite.hpke().decrypt(
            wrapped.sealed, private_key.hpke_key(), info=wrapped.info()
        )
    except InvalidTag:
        raise WrappedKeyTamperedError(
            f"the wrapped key of record {record_id} for {recipient!r} does not unwrap: its "
            "bytes or header were changed"
        ) from None
    if len(data_key) != DATA_KEY_SIZE:
        raise WrappedKeyTamperedError(f"the wrapped key of record {record_id} is not 32 bytes")
    return data_key


def _info(
    suite: HpkeSuite, record_id: str, recipient: str, fingerprint: bytes, content_hash: bytes
) -> bytes:
    # Hashed so `info` stays short whatever the identity's length (RFC 9180 lets
    # implementations bound it).
    binding = length_prefixed(
        suite.value.encode(), record_id.encode(), recipient.encode(), fingerprint, content_hash
    )
    return _INFO_LABEL + hashlib.sha256(binding).digest()


def _check_identity(identity: str) -> None:
    if not identity or len(identity.encode()) > MAX_IDENTITY_BYTES:
        raise ValueError(f"identity ids are 1-{MAX_IDENTITY_BYTES} bytes of UTF-8")


def _split(data: bytes, count: int) -> list[bytes]:
    try:
        parts = split_length_prefixed(data)
    except ValueError:
        raise WrappedKeyFormatError("wrapped key is truncated") from None
    if len(parts) != count:
        raise WrappedKeyFormatError(f"wrapped key has {len(parts)} fields, not {count}")
    return parts
