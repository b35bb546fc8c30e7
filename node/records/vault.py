"""The node-side vault: off-chain storage of sealed records (ciphertext and wrapped keys).

The node never holds a key that opens what it stores (DESIGN §6). Layout under the
vault folder (`<data_dir>/vault`):

    records/<record id>/manifest.json          chunk hashes, sizes, media type
    records/<record id>/chunks/<sha256 hex>    ciphertext chunks, addressed by hash
    records/<record id>/keys/<sha256(identity) hex>.key   one wrapped key per recipient
    staging/<record id>.<random>/              an upload in progress (invisible to readers)
    trash/<record id>.<random>/                an erasure in progress

Chunks live in per-record folders rather than one shared, reference-counted pool:
with a fresh data key per record two records never share a ciphertext chunk, so a pool
would save nothing; it would need a refcount kept consistent across crashes, and
erasing a record would have to reason about other records. Per-record folders make
`erase` a single atomic rename (the record disappears for readers at once) followed by
deleting one folder that holds nothing of any other record; a crash in between is
finished when the vault is next opened.

Every file is made visible only once complete and on disk: an upload is staged, every
file fsynced, and the folder renamed into place; a grant is written to a temporary file,
fsynced and renamed. Every chunk hash is checked when written and again when read.

One `Vault` object per vault folder and process (opening one clears interrupted
uploads); its methods are synchronous file IO, for the node's trio shell to run in a
worker thread, one writer per record at a time.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from node.records.chunks import check_record_id, chunk_hash
from node.records.envelope import SealedRecord
from node.records.errors import (
    ChunkIntegrityError,
    ManifestError,
    RecordExistsError,
    RecordNotFoundError,
    VaultError,
    WrappedKeyFormatError,
    WrappedKeyNotFoundError,
    WrongRecipientError,
)
from node.records.manifest import RecordManifest
from node.records.wrapping import WrappedKey

VAULT_DIR_NAME = "vault"
_MANIFEST = "manifest.json"
_CHUNKS = "chunks"
_KEYS = "keys"
_KEY_SUFFIX = ".key"


@dataclass(frozen=True)
class VaultUsage:
    records: int
    chunks: int
    wrapped_keys: int
    bytes: int


class Vault:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._records = root / "records"
        self._staging = root / "staging"
        self._trash = root / "trash"
        for folder in (self._records, self._staging, self._trash):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Finish erasures and drop uploads that a crash interrupted.
        for leftover in [*self._trash.iterdir(), *self._staging.iterdir()]:
            shutil.rmtree(leftover, ignore_errors=True)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> Vault:
        return cls(data_dir / VAULT_DIR_NAME)

    # -- writing -------------------------------------------------------------------------

    def begin_upload(self, record_id: str) -> VaultUpload:
        folder = self._record_dir(record_id)
        if folder.exists():
            raise RecordExistsError(f"record {record_id} is already in the vault")
        staging = self._staging / f"{record_id}.{secrets.token_hex(8)}"
        (staging / _CHUNKS).mkdir(parents=True, mode=0o700)
        (staging / _KEYS).mkdir(mode=0o700)
        return VaultUpload(self, record_id, staging)

    def store(self, record: SealedRecord, *, expected_content_hash: bytes | None = None) -> None:
        """Store a whole sealed record held in memory."""
        with self.begin_upload(record.record_id) as upload:
            for index, chunk in enumerate(record.chunks):
                upload.add_chunk(chunk, record.manifest.chunk_hashes[index])
            upload.commit(
                record.manifest,
                record.wrapped_keys.values(),
                expected_content_hash=expected_content_hash,
            )

    def put_wrapped_key(self, wrapped: WrappedKey) -> None:
        """Add (a grant) or replace (a re-wrap after key rotation) one recipient's key."""
        manifest = self.manifest(wrapped.record_id)
        _check_binding(manifest, wrapped)
        path = self._key_path(wrapped.record_id, wrapped.recipient)
        _write_atomic(path, wrapped.to_bytes())

    def remove_key(self, record_id: str, identity: str) -> bool:
        """Consent revocation: delete `identity`'s wrapped key. False if there was none."""
        path = self._key_path(record_id, identity)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
        return True

    def erase(self, record_id: str) -> bool:
        """Crypto-shredding: delete the record's chunks, manifest and every wrapped key.
        Touches no other record. False if the record was not here."""
        folder = self._record_dir(record_id)
        if not folder.exists():
            return False
        doomed = self._trash / f"{record_id}.{secrets.token_hex(8)}"
        os.rename(folder, doomed)
        _fsync_dir(self._records)
        _fsync_dir(self._trash)
        shutil.rmtree(doomed)
        _fsync_dir(self._trash)
        return True

    # -- reading -------------------------------------------------------------------------

    def has(self, record_id: str) -> bool:
        return self._record_dir(record_id).is_dir()

    def manifest(self, record_id: str) -> RecordManifest:
        path = self._record_dir(record_id) / _MANIFEST
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise RecordNotFoundError(f"record {record_id} is not in this vault") from None
        manifest = RecordManifest.from_json(data)
        if manifest.record_id != record_id:
            raise ManifestError(f"the vault's manifest of {record_id} names {manifest.record_id}")
        return manifest

    def read_chunk(
        self, record_id: str, index: int, manifest: RecordManifest | None = None
    ) -> bytes:
        manifest = manifest or self.manifest(record_id)
        if not 0 <= index < manifest.chunk_count:
            raise ChunkIntegrityError(
                f"record {record_id} has {manifest.chunk_count} chunks; asked for chunk {index}"
            )
        path = self._record_dir(record_id) / _CHUNKS / manifest.chunk_hashes[index].hex()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise VaultError(
                f"chunk {index} of record {record_id} is missing from the vault"
            ) from None
        if chunk_hash(data) != manifest.chunk_hashes[index]:
            raise ChunkIntegrityError(
                f"the vault's copy of chunk {index} of record {record_id} is corrupted "
                "(hash mismatch); restore it from another node"
            )
        return data

    def iter_chunks(self, record_id: str) -> Iterator[bytes]:
        """The record's ciphertext chunks in order, one in memory at a time, each checked."""
        manifest = self.manifest(record_id)
        for index in range(manifest.chunk_count):
            yield self.read_chunk(record_id, index, manifest)

    def get_wrapped_key(self, record_id: str, identity: str) -> WrappedKey:
        if not self.has(record_id):
            raise RecordNotFoundError(f"record {record_id} is not in this vault")
        try:
            data = self._key_path(record_id, identity).read_bytes()
        except FileNotFoundError:
            raise WrappedKeyNotFoundError(
                f"no wrapped key of record {record_id} for {identity!r} (never granted, or revoked)"
            ) from None
        wrapped = WrappedKey.from_bytes(data)
        if wrapped.recipient != identity or wrapped.record_id != record_id:
            raise WrongRecipientError(
                f"the vault's key file for {identity!r} in record {record_id} holds a key for "
                f"{wrapped.recipient!r} in record {wrapped.record_id}: refused"
            )
        return wrapped

    def recipients(self, record_id: str) -> list[str]:
        if not self.has(record_id):
            raise RecordNotFoundError(f"record {record_id} is not in this vault")
        names = []
        for path in sorted((self._record_dir(record_id) / _KEYS).glob(f"*{_KEY_SUFFIX}")):
            try:
                names.append(WrappedKey.from_bytes(path.read_bytes()).recipient)
            except WrappedKeyFormatError:
                continue
        return sorted(names)

    def stored_at_ms(self, record_id: str) -> int:
        """When the record's upload completed (Unix ms, from its folder's mtime)."""
        try:
            return int(self._record_dir(record_id).stat().st_mtime * 1000)
        except FileNotFoundError:
            raise RecordNotFoundError(f"record {record_id} is not in this vault") from None

    def record_ids(self) -> list[str]:
        return sorted(p.name for p in self._records.iterdir() if p.is_dir())

    def usage(self, record_id: str | None = None) -> VaultUsage:
        """Counts and bytes on disk, of one record or of the whole vault."""
        ids = [record_id] if record_id is not None else self.record_ids()
        chunks = keys = size = 0
        for rid in ids:
            folder = self._record_dir(rid)
            if not folder.is_dir():
                raise RecordNotFoundError(f"record {rid} is not in this vault")
            for path in folder.rglob("*"):
                if path.is_file():
                    size += path.stat().st_size
                    chunks += path.parent.name == _CHUNKS
                    keys += path.parent.name == _KEYS
        return VaultUsage(records=len(ids), chunks=chunks, wrapped_keys=keys, bytes=size)

    # -- paths ---------------------------------------------------------------------------

    def _record_dir(self, record_id: str) -> Path:
        try:
            return self._records / check_record_id(record_id)
        except ValueError as exc:
            raise VaultError(str(exc)) from None

    def _key_path(self, record_id: str, identity: str) -> Path:
        # Identities are hashed into file names: any string is safe on disk.
        name = hashlib.sha256(identity.encode()).hexdigest() + _KEY_SUFFIX
        return self._record_dir(record_id) / _KEYS / name


class VaultUpload:
    """One record being written: chunks in order, then `commit` with manifest and keys.
    Nothing is visible to readers before commit; leaving the `with` block without commit
    (or with an exception) removes everything written."""

    def __init__(self, vault: Vault, record_id: str, staging: Path) -> None:
        self._vault = vault
        self.record_id = record_id
        self._staging = staging
        self._hashes: list[bytes] = []
        self._done = False

    def add_chunk(self, ciphertext: bytes, expected_hash: bytes | None = None) -> bytes:
        """Write the next chunk; returns its hash. `expected_hash`, when the uploader
        declared one, must match."""
        self._check_open()
        digest = chunk_hash(ciphertext)
        if expected_hash is not None and digest != expected_hash:
            raise ChunkIntegrityError(
                f"chunk {len(self._hashes)} of record {self.record_id} does not match the hash "
                "declared for it; upload refused"
            )
        path = self._staging / _CHUNKS / digest.hex()
        if not path.exists():
            _write_synced(path, ciphertext)
        self._hashes.append(digest)
        return digest

    def commit(
        self,
        manifest: RecordManifest,
        wrapped_keys: Iterable[WrappedKey],
        *,
        expected_content_hash: bytes | None = None,
    ) -> None:
        self._check_open()
        if manifest.record_id != self.record_id:
            raise ManifestError(
                f"manifest of {manifest.record_id} given for upload of {self.record_id}"
            )
        manifest.check_content_hash(expected_content_hash)
        if tuple(self._hashes) != manifest.chunk_hashes:
            raise ChunkIntegrityError(
                f"record {self.record_id}: the {len(self._hashes)} chunks uploaded are not the "
                f"{manifest.chunk_count} the manifest lists, in that order"
            )
        seen: set[str] = set()
        for wrapped in wrapped_keys:
            _check_binding(manifest, wrapped)
            if wrapped.recipient in seen:
                raise VaultError(f"two wrapped keys for {wrapped.recipient!r} in one upload")
            seen.add(wrapped.recipient)
            path = self._vault._key_path(self.record_id, wrapped.recipient)
            _write_synced(self._staging / _KEYS / path.name, wrapped.to_bytes())
        _write_synced(self._staging / _MANIFEST, manifest.to_json())
        for folder in (self._staging / _CHUNKS, self._staging / _KEYS, self._staging):
            _fsync_dir(folder)
        target = self._vault._record_dir(self.record_id)
        if target.exists():
            raise RecordExistsError(f"record {self.record_id} is already in the vault")
        os.rename(self._staging, target)
        _fsync_dir(target.parent)
        self._done = True

    def abort(self) -> None:
        if not self._done:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._done = True

    def __enter__(self) -> VaultUpload:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()

    def _check_open(self) -> None:
        if self._done:
            raise VaultError(f"upload of record {self.record_id} is already finished")


def _check_binding(manifest: RecordManifest, wrapped: WrappedKey) -> None:
    if wrapped.record_id != manifest.record_id or wrapped.content_hash != manifest.content_hash:
        raise VaultError(
            f"a wrapped key for record {wrapped.record_id} (content "
            f"{wrapped.content_hash.hex()[:16]}…) does not belong to record "
            f"{manifest.record_id}: refused"
        )


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        _write_synced(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
