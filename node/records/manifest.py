"""A record's manifest: what a reader needs to check ciphertext chunks as they stream.

Stored in the vault next to the chunks and sent before them. It holds no secret and no
patient data: the record id, media type, sizes, the ordered chunk hashes and their
Merkle root (the content hash recorded on chain).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from node.records.chunks import (
    MAX_CHUNK_SIZE,
    TAG_SIZE,
    check_record_id,
    chunk_hash,
    content_hash,
)
from node.records.errors import ChunkIntegrityError, ManifestError

FORMAT = "medledger-record-manifest/1"


@dataclass(frozen=True)
class RecordManifest:
    record_id: str
    media_type: str
    chunk_size: int
    size: int
    chunk_hashes: tuple[bytes, ...]
    content_hash: bytes

    def __post_init__(self) -> None:
        try:
            check_record_id(self.record_id)
        except ValueError as exc:
            raise ManifestError(str(exc)) from None
        if not 0 < self.chunk_size <= MAX_CHUNK_SIZE:
            raise ManifestError(f"chunk size must be 1..{MAX_CHUNK_SIZE} bytes")
        expected_chunks = max(1, -(-self.size // self.chunk_size))
        if self.size < 0 or len(self.chunk_hashes) != expected_chunks:
            raise ManifestError(
                f"record {self.record_id}: {self.size} bytes in chunks of {self.chunk_size} "
                f"make {expected_chunks} chunks, the manifest lists {len(self.chunk_hashes)}"
            )
        if any(len(h) != 32 for h in self.chunk_hashes) or len(self.content_hash) != 32:
            raise ManifestError(f"record {self.record_id}: hashes must be 32-byte SHA-256")
        if content_hash(self.chunk_hashes) != self.content_hash:
            raise ManifestError(
                f"record {self.record_id}: the chunk hashes do not give the content hash "
                "(manifest changed)"
            )

    @property
    def chunk_count(self) -> int:
        return len(self.chunk_hashes)

    @property
    def ciphertext_size(self) -> int:
        return self.size + TAG_SIZE * self.chunk_count

    def check_content_hash(self, expected: bytes | None) -> None:
        """Compare with the content hash recorded on chain, when the caller has it."""
        if expected is not None and expected != self.content_hash:
            raise ManifestError(
                f"record {self.record_id}: content hash {self.content_hash.hex()} is not the "
                f"expected {expected.hex()} (wrong or replaced record)"
            )

    def check_chunk(self, index: int, ciphertext: bytes) -> None:
        if not 0 <= index < self.chunk_count:
            raise ChunkIntegrityError(
                f"record {self.record_id} has {self.chunk_count} chunks; got chunk {index}"
            )
        if chunk_hash(ciphertext) != self.chunk_hashes[index]:
            raise ChunkIntegrityError(
                f"chunk {index} of record {self.record_id} does not match its hash in the "
                "manifest (changed, reordered or from another record); rejected before "
                "decryption"
            )

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "record_id": self.record_id,
            "media_type": self.media_type,
            "chunk_size": self.chunk_size,
            "size": self.size,
            "chunks": [h.hex() for h in self.chunk_hashes],
            "content_hash": self.content_hash.hex(),
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RecordManifest:
        try:
            doc = json.loads(data)
            if doc.get("format") != FORMAT:
                raise ManifestError(f"not a {FORMAT} document")
            return cls(
                record_id=str(doc["record_id"]),
                media_type=str(doc["media_type"]),
                chunk_size=int(doc["chunk_size"]),
                size=int(doc["size"]),
                chunk_hashes=tuple(bytes.fromhex(h) for h in doc["chunks"]),
                content_hash=bytes.fromhex(doc["content_hash"]),
            )
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(f"malformed record manifest: {exc!r}") from None
