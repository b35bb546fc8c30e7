"""The node-side vault: streaming storage of sealed records, grants, revocation, erasure,
and that nothing readable about a payload is ever on its disk."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.records import (
    EncryptionPrivateKey,
    RecordOpener,
    SealedRecord,
    StreamSealer,
    Vault,
    grant,
    seal,
)
from node.records.errors import (
    ChunkIntegrityError,
    ManifestError,
    RecordExistsError,
    RecordNotFoundError,
    VaultError,
    WrappedKeyNotFoundError,
    WrongRecipientError,
)
from node.records.fhir import MEDIA_TYPE, synthetic_bundle

from .conftest import encodings_of, vault_files

OWNER, PATIENT, OTHER, LATER = "hosp1-doctor1", "hosp1-patient1", "hosp2-doctor1", "hosp2-doctor2"
Keys = dict[str, EncryptionPrivateKey]
MiB = 1 << 20


def _record(keys: Keys, payload: bytes, chunk_size: int = 256) -> SealedRecord:
    recipients = {i: keys[i].public_key() for i in (OWNER, PATIENT)}
    return seal(payload, "application/octet-stream", recipients, chunk_size=chunk_size)


def _read(vault: Vault, record_id: str, identity: str, key: EncryptionPrivateKey) -> bytes:
    opener = RecordOpener(
        vault.manifest(record_id), vault.get_wrapped_key(record_id, identity), identity, key
    )
    return b"".join(opener.decrypt(vault.iter_chunks(record_id)))


def test_store_and_read_back(vault: Vault, hybrid_keys: Keys) -> None:
    payload = os.urandom(1000)
    record = _record(hybrid_keys, payload)
    vault.store(record, expected_content_hash=record.content_hash)
    assert vault.record_ids() == [record.record_id]
    assert vault.recipients(record.record_id) == sorted([OWNER, PATIENT])
    assert _read(vault, record.record_id, PATIENT, hybrid_keys[PATIENT]) == payload
    with pytest.raises(RecordExistsError):
        vault.store(record)


def _payload_blocks(total: int, seed: bytes) -> Iterator[bytes]:
    """Deterministic pseudo-random payload, produced 1 MiB at a time."""
    counter = 0
    while total > 0:
        block = b"".join(
            hashlib.sha256(seed + (counter * 4096 + i).to_bytes(8, "big")).digest()
            for i in range(MiB // 32)
        )[: min(MiB, total)]
        counter += 1
        total -= len(block)
        yield block


def test_20_mb_streams_chunk_by_chunk_in_bounded_memory(
    tmp_path: Path, vault: Vault, hybrid_keys: Keys
) -> None:
    size = 20 * MiB + 12345
    source = tmp_path / "scan.dcm"
    expected = hashlib.sha256()
    with source.open("wb") as f:
        for block in _payload_blocks(size, b"imaging"):
            expected.update(block)
            f.write(block)

    tracemalloc.start()
    try:
        sealer = StreamSealer("application/dicom")
        with source.open("rb") as f, vault.begin_upload(sealer.record_id) as upload:
            for chunk in sealer.encrypt(f):
                upload.add_chunk(chunk)
            manifest, wrapped = sealer.finish(
                {OWNER: hybrid_keys[OWNER].public_key(), PATIENT: hybrid_keys[PATIENT].public_key()}
            )
            upload.commit(manifest, wrapped.values())
        _, seal_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()

        got = hashlib.sha256()
        opener = RecordOpener(
            vault.manifest(manifest.record_id),
            vault.get_wrapped_key(manifest.record_id, PATIENT),
            PATIENT,
            hybrid_keys[PATIENT],
            expected_content_hash=manifest.content_hash,
        )
        for plaintext in opener.decrypt(vault.iter_chunks(manifest.record_id)):
            got.update(plaintext)
        _, open_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert got.digest() == expected.digest()
    assert manifest.chunk_count == 21
    # A handful of 1 MiB chunks at most, whatever the file size (here 20 MiB).
    print(f"peak traced memory: seal {seal_peak / MiB:.1f} MiB, open {open_peak / MiB:.1f} MiB")
    assert seal_peak < 6 * MiB, f"seal peak {seal_peak / MiB:.1f} MiB"
    assert open_peak < 6 * MiB, f"open peak {open_peak / MiB:.1f} MiB"
    usage = vault.usage(manifest.record_id)
    assert (usage.chunks, usage.wrapped_keys) == (21, 2)
    assert usage.bytes > manifest.ciphertext_size


def test_tampered_chunk_on_disk_is_detected_on_read(vault: Vault, hybrid_keys: Keys) -> None:
    record = _record(hybrid_keys, os.urandom(1000))
    vault.store(record)
    path = next(p for p, data in vault_files(vault.root) if data == record.chunks[1])
    data = bytearray(path.read_bytes())
    data[10] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(ChunkIntegrityError, match=r"copy of chunk 1 of record \w+ is corrupted"):
        _read(vault, record.record_id, OWNER, hybrid_keys[OWNER])


def test_upload_checks_every_chunk_and_leaves_nothing_on_refusal(
    vault: Vault, hybrid_keys: Keys
) -> None:
    record, other = _record(hybrid_keys, os.urandom(1000)), _record(hybrid_keys, os.urandom(1000))
    with (
        pytest.raises(ChunkIntegrityError, match="does not match the hash declared"),
        vault.begin_upload(record.record_id) as upload,
    ):
        upload.add_chunk(record.chunks[1], record.manifest.chunk_hashes[0])
    with (
        pytest.raises(ChunkIntegrityError, match="not the 4 the manifest lists"),
        vault.begin_upload(record.record_id) as upload,
    ):
        for chunk in (record.chunks[1], record.chunks[0], *record.chunks[2:]):
            upload.add_chunk(chunk)
        upload.commit(record.manifest, record.wrapped_keys.values())
    with (
        pytest.raises(VaultError, match="does not belong to record"),
        vault.begin_upload(record.record_id) as upload,
    ):
        for chunk in record.chunks:
            upload.add_chunk(chunk)
        upload.commit(record.manifest, other.wrapped_keys.values())
    with (
        pytest.raises(ManifestError, match="is not the expected"),
        vault.begin_upload(record.record_id) as upload,
    ):
        for chunk in record.chunks:
            upload.add_chunk(chunk)
        upload.commit(record.manifest, [], expected_content_hash=other.content_hash)
    assert vault.record_ids() == []
    assert list(vault_files(vault.root)) == []


def test_grant_then_revoke(vault: Vault, hybrid_keys: Keys) -> None:
    payload = os.urandom(700)
    record = _record(hybrid_keys, payload)
    vault.store(record)
    rid = record.record_id
    with pytest.raises(WrappedKeyNotFoundError, match="never granted, or revoked"):
        vault.get_wrapped_key(rid, LATER)
    new_key = grant(
        vault.manifest(rid),
        vault.get_wrapped_key(rid, PATIENT),
        PATIENT,
        hybrid_keys[PATIENT],
        LATER,
        hybrid_keys[LATER].public_key(),
    )
    chunk_files = {p: d for p, d in vault_files(vault.root) if "chunks" in p.parts}
    vault.put_wrapped_key(new_key)
    assert {p: d for p, d in vault_files(vault.root) if "chunks" in p.parts} == chunk_files
    assert _read(vault, rid, LATER, hybrid_keys[LATER]) == payload

    assert vault.remove_key(rid, LATER) is True
    with pytest.raises(WrappedKeyNotFoundError):
        vault.get_wrapped_key(rid, LATER)
    assert vault.remove_key(rid, LATER) is False
    assert LATER not in vault.recipients(rid)
    assert _read(vault, rid, OWNER, hybrid_keys[OWNER]) == payload


def test_wrapped_keys_cannot_be_moved_in_or_on_the_vault(vault: Vault, hybrid_keys: Keys) -> None:
    a, b = _record(hybrid_keys, b"a" * 300), _record(hybrid_keys, b"b" * 300)
    vault.store(a)
    vault.store(b)
    with pytest.raises(VaultError, match="does not belong to record"):
        vault.put_wrapped_key(dataclasses.replace(b.wrapped_keys[OWNER], record_id=a.record_id))
    # A key file copied on disk to another recipient's name is refused when served.
    folder = vault.root / "records" / a.record_id / "keys"
    owner_file = next(p for p, d in vault_files(folder) if d == a.wrapped_keys[OWNER].to_bytes())
    patient_file = next(p for p in folder.iterdir() if p != owner_file)
    shutil.copyfile(owner_file, patient_file)
    with pytest.raises(WrongRecipientError, match=f"holds a key for '{OWNER}'"):
        vault.get_wrapped_key(a.record_id, PATIENT)


def test_erase_deletes_every_byte_of_the_record_and_nothing_else(
    vault: Vault, hybrid_keys: Keys
) -> None:
    doomed, kept = _record(hybrid_keys, os.urandom(2000)), _record(hybrid_keys, os.urandom(2000))
    vault.store(doomed)
    vault.store(kept)
    vault.put_wrapped_key(
        grant(
            doomed.manifest,
            doomed.wrapped_keys[OWNER],
            OWNER,
            hybrid_keys[OWNER],
            LATER,
            hybrid_keys[LATER].public_key(),
        )
    )
    kept_files = {p: d for p, d in vault_files(vault.root) if kept.record_id in p.parts}
    assert vault.erase(doomed.record_id) is True

    secrets = [*doomed.chunks, *(w.to_bytes() for w in doomed.wrapped_keys.values())]
    secrets.append(doomed.wrapped_keys[OWNER].sealed)
    for path, data in vault_files(vault.root):
        assert doomed.record_id not in str(path)
        for secret in secrets:
            assert secret not in data, f"{path} still holds bytes of the erased record"
    assert {p: d for p, d in vault_files(vault.root)} == kept_files
    assert vault.record_ids() == [kept.record_id]
    with pytest.raises(RecordNotFoundError):
        vault.get_wrapped_key(doomed.record_id, OWNER)
    with pytest.raises(RecordNotFoundError):
        list(vault.iter_chunks(doomed.record_id))
    assert vault.erase(doomed.record_id) is False
    assert _read(vault, kept.record_id, OWNER, hybrid_keys[OWNER]) == _read(
        vault, kept.record_id, PATIENT, hybrid_keys[PATIENT]
    )


def test_interrupted_erase_and_upload_are_finished_on_open(
    tmp_path: Path, hybrid_keys: Keys
) -> None:
    vault = Vault(tmp_path / "vault")
    record = _record(hybrid_keys, os.urandom(600))
    vault.store(record)
    # A crash right after the rename of `erase`, and one in the middle of an upload:
    os.rename(vault.root / "records" / record.record_id, vault.root / "trash" / "x.1")
    upload = vault.begin_upload("half-written")
    upload.add_chunk(b"ciphertext")
    reopened = Vault(tmp_path / "vault")
    assert reopened.record_ids() == []
    assert list(vault_files(reopened.root)) == []


def test_record_ids_are_checked_before_touching_the_disk(vault: Vault) -> None:
    for bad in ("../etc", "a/b", "", ".hidden", "x" * 65):
        with pytest.raises(VaultError, match="invalid record id"):
            vault.manifest(bad)


def test_usage_accounting(vault: Vault, hybrid_keys: Keys) -> None:
    a, b = _record(hybrid_keys, os.urandom(1000)), _record(hybrid_keys, os.urandom(100))
    vault.store(a)
    vault.store(b)
    total = vault.usage()
    assert (total.records, total.chunks, total.wrapped_keys) == (2, 5, 4)
    assert total.bytes == vault.usage(a.record_id).bytes + vault.usage(b.record_id).bytes
    assert vault.usage(a.record_id).bytes >= a.manifest.ciphertext_size


def test_canary_never_reaches_the_vault_in_any_encoding(vault: Vault, hybrid_keys: Keys) -> None:
    canary = b"CANARY-7f3a9c-medledger-must-not-leak"
    payload = synthetic_bundle("canary-patient", note=canary.decode())
    assert canary in payload
    record = seal(
        payload,
        MEDIA_TYPE,
        {i: hybrid_keys[i].public_key() for i in (OWNER, PATIENT)},
        chunk_size=64,
    )
    vault.store(record)
    vault.put_wrapped_key(
        grant(
            record.manifest,
            record.wrapped_keys[PATIENT],
            PATIENT,
            hybrid_keys[PATIENT],
            LATER,
            hybrid_keys[LATER].public_key(),
        )
    )
    forms = encodings_of(canary)
    files = list(vault_files(vault.root))
    assert len(files) > 5
    for path, data in files:
        for form in forms:
            assert form not in data, f"canary found in {path}"
    # The payload itself (not only the canary) is nowhere either.
    assert all(payload[:32] not in data for _, data in files)
    assert _read(vault, record.record_id, LATER, hybrid_keys[LATER]) == payload
