"""Chunk encryption of a record payload under its data key.

Every record has its own fresh AES-256-GCM data key, so a nonce needs to be unique only
within one record: it is the chunk index (96-bit big-endian), never reused. The
associated data binds the record id, the index and whether the chunk is the last one
(the STREAM construction), so chunks cannot be reordered, moved to another record, or
the stream cut short, even by someone holding the data key's ciphertexts but not the
manifest. A chunk is addressed by the SHA-256 of its ciphertext; the record's content
hash is the Merkle root (node.crypto.hashing) over those hashes, so each chunk can be
checked as it streams, before decryption.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.crypto.hashing import length_prefixed, merkle_root
from node.records.errors import ChunkDecryptionError

DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 16 << 20
TAG_SIZE = 16
DATA_KEY_SIZE = 32
_AAD_LABEL = b"medledger/record-chunk/v1\x00"
_RECORD_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def new_record_id() -> str:
    """128 random bits, hex: unguessable, and safe as a file name."""
    return secrets.token_hex(16)


def check_record_id(record_id: str) -> str:
    if not _RECORD_ID.fullmatch(record_id):
        raise ValueError(
            f"invalid record id {record_id!r}: use 1-64 letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return record_id


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def chunk_nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def chunk_aad(record_id: str, index: int, final: bool) -> bytes:
    return _AAD_LABEL + length_prefixed(
        record_id.encode(), index.to_bytes(8, "big"), b"\x01" if final else b"\x00"
    )


def chunk_hash(ciphertext: bytes) -> bytes:
    return hashlib.sha256(ciphertext).digest()


def content_hash(chunk_hashes: Sequence[bytes]) -> bytes:
    return merkle_root(chunk_hashes)


class ChunkCipher:
    """Encrypts and decrypts the chunks of one record under its data key."""

    def __init__(self, record_id: str, data_key: bytes) -> None:
        if len(data_key) != DATA_KEY_SIZE:
            raise ValueError("a record data key is 32 bytes (AES-256)")
        self.record_id = check_record_id(record_id)
        self._aead = AESGCM(data_key)

    def encrypt(self, index: int, plaintext: bytes, final: bool) -> bytes:
        return self._aead.encrypt(
            chunk_nonce(index), plaintext, chunk_aad(self.record_id, index, final)
        )

    def decrypt(self, index: int, ciphertext: bytes, final: bool) -> bytes:
        try:
            return self._aead.decrypt(
                chunk_nonce(index), ciphertext, chunk_aad(self.record_id, index, final)
            )
        except InvalidTag:
            raise ChunkDecryptionError(
                f"chunk {index} of record {self.record_id} does not decrypt: it was not "
                "encrypted under this record's key at this position (moved, reordered, or "
                "the record was truncated)"
            ) from None
