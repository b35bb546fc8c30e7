"""The record envelope: seal a payload for its recipients, open it, grant it to more.

Client side only: the data key exists in the client's memory and in wrapped form; a node
stores what `seal` produces without being able to read it (DESIGN §6).

    sealed = seal(payload, "application/fhir+json", {"hosp1-doctor1": pub, ...})
    payload = open_record(sealed, "hosp1-doctor1", private_key)

Large payloads stream: `StreamSealer.encrypt` yields ciphertext chunks as it reads and
`RecordOpener.decrypt` yields plaintext chunks, each checked against the manifest before
it is decrypted, so memory stays at a few chunks whatever the file size.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO

from node.records.chunks import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    ChunkCipher,
    check_record_id,
    chunk_hash,
    content_hash,
    new_data_key,
    new_record_id,
)
from node.records.encryption_keys import EncryptionPrivateKey, EncryptionPublicKey
from node.records.errors import ChunkIntegrityError, SuiteMismatchError, WrongRecipientError
from node.records.manifest import RecordManifest
from node.records.suites import DEFAULT_SUITE, HpkeSuite
from node.records.wrapping import WrappedKey, unwrap_key, wrap_key


@dataclass(frozen=True)
class SealedRecord:
    """A whole sealed record in memory (small payloads; large ones stream)."""

    manifest: RecordManifest
    chunks: tuple[bytes, ...] = field(repr=False)
    wrapped_keys: Mapping[str, WrappedKey]

    @property
    def record_id(self) -> str:
        return self.manifest.record_id

    @property
    def content_hash(self) -> bytes:
        return self.manifest.content_hash


class StreamSealer:
    """Seals one record from a stream: `encrypt` the payload, then `finish` for recipients."""

    def __init__(
        self,
        media_type: str,
        *,
        record_id: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be 1..{MAX_CHUNK_SIZE} bytes")
        self.record_id = check_record_id(record_id) if record_id else new_record_id()
        self.media_type = media_type
        self.chunk_size = chunk_size
        self._data_key: bytes | None = new_data_key()
        self._cipher: ChunkCipher | None = ChunkCipher(self.record_id, self._data_key)
        self._hashes: list[bytes] = []
        self._size = 0
        self._encrypted = False
        self._complete = False

    def encrypt(self, source: BinaryIO | Iterable[bytes]) -> Iterator[bytes]:
        """Yield the ciphertext chunks of the payload read from `source`, in order."""
        if self._encrypted:
            raise RuntimeError("StreamSealer.encrypt may run once per record")
        self._encrypted = True
        read = getattr(source, "read", None)
        blocks: Iterable[bytes] = (
            iter(lambda: bytes(read(self.chunk_size)), b"") if callable(read) else source
        )
        # A full chunk is held back in `pending` until more input shows it is not the
        # last one: the last chunk is encrypted as final.
        pending: bytes | None = None
        buffer = bytearray()
        for block in blocks:
            if not buffer and len(block) == self.chunk_size:
                # Reads of exactly one chunk (files) pass through without a copy.
                if pending is not None:
                    yield self._seal_chunk(pending, final=False)
                pending = bytes(block)
                continue
            buffer += block
            while len(buffer) >= self.chunk_size:
                if pending is not None:
                    yield self._seal_chunk(pending, final=False)
                pending = bytes(buffer[: self.chunk_size])
                del buffer[: self.chunk_size]
        if pending is None:
            yield self._seal_chunk(bytes(buffer), final=True)
        elif buffer:
            yield self._seal_chunk(pending, final=False)
            yield self._seal_chunk(bytes(buffer), final=True)
        else:
            yield self._seal_chunk(pending, final=True)
        self._complete = True

    def _seal_chunk(self, plaintext: bytes, final: bool) -> bytes:
        if self._cipher is None:
            raise RuntimeError("this record is already finished")
        ciphertext = self._cipher.encrypt(len(self._hashes), plaintext, final)
        self._hashes.append(chunk_hash(ciphertext))
        self._size += len(plaintext)
        return ciphertext

    def finish(
        self,
        recipients: Mapping[str, EncryptionPublicKey],
        suite: HpkeSuite = DEFAULT_SUITE,
    ) -> tuple[RecordManifest, dict[str, WrappedKey]]:
        """The manifest and one wrapped key per recipient; forgets the data key."""
        if self._data_key is None or not self._complete:
            raise RuntimeError("finish() comes once, after encrypt() has been fully consumed")
        if not recipients:
            raise ValueError("a record needs at least one recipient, or nobody can read it")
        _check_suites(recipients, suite)
        manifest = RecordManifest(
            record_id=self.record_id,
            media_type=self.media_type,
            chunk_size=self.chunk_size,
            size=self._size,
            chunk_hashes=tuple(self._hashes),
            content_hash=content_hash(self._hashes),
        )
        wrapped = {
            identity: wrap_key(self._data_key, self.record_id, manifest.content_hash, identity, key)
            for identity, key in recipients.items()
        }
        self._data_key = None
        self._cipher = None
        return manifest, wrapped


class RecordOpener:
    """Unwraps a record's key for one reader and decrypts its chunks, checking each one."""

    def __init__(
        self,
        manifest: RecordManifest,
        wrapped_key: WrappedKey,
        identity: str,
        private_key: EncryptionPrivateKey,
        *,
        expected_content_hash: bytes | None = None,
    ) -> None:
        manifest.check_content_hash(expected_content_hash)
        self.manifest = manifest
        data_key = unwrap_key(
            wrapped_key, manifest.record_id, manifest.content_hash, identity, private_key
        )
        self._cipher = ChunkCipher(manifest.record_id, data_key)

    def decrypt_chunk(self, index: int, ciphertext: bytes) -> bytes:
        self.manifest.check_chunk(index, ciphertext)
        return self._cipher.decrypt(index, ciphertext, final=index == self.manifest.chunk_count - 1)

    def decrypt(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Yield plaintext chunk by chunk; raises as soon as a chunk is wrong or missing."""
        count = 0
        for index, ciphertext in enumerate(chunks):
            yield self.decrypt_chunk(index, ciphertext)
            count = index + 1
        if count != self.manifest.chunk_count:
            raise ChunkIntegrityError(
                f"record {self.manifest.record_id}: the stream ended after {count} of "
                f"{self.manifest.chunk_count} chunks"
            )


def seal(
    payload: bytes,
    media_type: str,
    recipients: Mapping[str, EncryptionPublicKey],
    suite: HpkeSuite = DEFAULT_SUITE,
    *,
    record_id: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> SealedRecord:
    """Encrypt `payload` under a fresh data key, wrapped for each recipient with `suite`
    (every recipient key must be of that suite)."""
    _check_suites(recipients, suite)
    sealer = StreamSealer(media_type, record_id=record_id, chunk_size=chunk_size)
    chunks = tuple(sealer.encrypt(io.BytesIO(payload)))
    manifest, wrapped = sealer.finish(recipients, suite)
    return SealedRecord(manifest, chunks, wrapped)


def open_record(
    record: SealedRecord,
    identity: str,
    private_key: EncryptionPrivateKey,
    *,
    expected_content_hash: bytes | None = None,
) -> bytes:
    wrapped = record.wrapped_keys.get(identity)
    if wrapped is None:
        raise WrongRecipientError(
            f"record {record.record_id} has no wrapped key for {identity!r}: ask the owner "
            "or the patient for a grant"
        )
    opener = RecordOpener(
        record.manifest,
        wrapped,
        identity,
        private_key,
        expected_content_hash=expected_content_hash,
    )
    return b"".join(opener.decrypt(record.chunks))


def grant(
    manifest: RecordManifest,
    granter_key: WrappedKey,
    granter: str,
    granter_private_key: EncryptionPrivateKey,
    recipient: str,
    recipient_public_key: EncryptionPublicKey,
) -> WrappedKey:
    """Wrap the record's data key for `recipient`, using the granter's own wrapped key.
    The chunks are not touched; the new key is bound to the same record and content."""
    data_key = unwrap_key(
        granter_key, manifest.record_id, manifest.content_hash, granter, granter_private_key
    )
    return wrap_key(
        data_key, manifest.record_id, manifest.content_hash, recipient, recipient_public_key
    )


def _check_suites(recipients: Mapping[str, EncryptionPublicKey], suite: HpkeSuite) -> None:
    for identity, key in recipients.items():
        if key.suite is not suite:
            raise SuiteMismatchError(
                f"recipient {identity!r} has a {key.suite.value} key; this record is sealed "
                f"with {suite.value} (pass suite={key.suite.name} to use it)"
            )
