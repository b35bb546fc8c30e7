"""The record envelope: round trips, every tamper case, grants, wrong recipients."""

from __future__ import annotations

import dataclasses
import io
import os

import pytest

from node.records import (
    EncryptionPrivateKey,
    HpkeSuite,
    RecordOpener,
    SealedRecord,
    StreamSealer,
    grant,
    open_record,
    seal,
)
from node.records.chunks import ChunkCipher, chunk_hash, content_hash, new_data_key
from node.records.errors import (
    ChunkDecryptionError,
    ChunkIntegrityError,
    ManifestError,
    SuiteMismatchError,
    WrappedKeyBindingError,
    WrappedKeyFormatError,
    WrappedKeyTamperedError,
    WrongRecipientError,
)
from node.records.manifest import RecordManifest
from node.records.wrapping import WrappedKey

OWNER, PATIENT, OTHER, LATER = "hosp1-doctor1", "hosp1-patient1", "hosp2-doctor1", "hosp2-doctor2"
Keys = dict[str, EncryptionPrivateKey]


def _seal(keys: Keys, payload: bytes, chunk_size: int = 64) -> SealedRecord:
    suite = next(iter(keys.values())).suite
    recipients = {i: keys[i].public_key() for i in (OWNER, PATIENT)}
    return seal(payload, "application/octet-stream", recipients, suite, chunk_size=chunk_size)


@pytest.fixture(params=list(HpkeSuite), ids=lambda s: s.name)
def keys(request: pytest.FixtureRequest, hybrid_keys: Keys, x25519_keys: Keys) -> Keys:
    return hybrid_keys if request.param is HpkeSuite.MLKEM768_X25519 else x25519_keys


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 640, 1000])
def test_round_trip_every_recipient(keys: Keys, size: int) -> None:
    payload = os.urandom(size)
    record = _seal(keys, payload)
    assert record.manifest.size == size
    assert record.manifest.chunk_count == max(1, -(-size // 64))
    assert record.content_hash == content_hash([chunk_hash(c) for c in record.chunks])
    for identity in (OWNER, PATIENT):
        assert open_record(record, identity, keys[identity]) == payload


def test_default_suite_is_the_hybrid(hybrid_keys: Keys, x25519_keys: Keys) -> None:
    record = seal(b"x", "text/plain", {OWNER: hybrid_keys[OWNER].public_key()})
    assert record.wrapped_keys[OWNER].suite is HpkeSuite.MLKEM768_X25519
    with pytest.raises(SuiteMismatchError, match="pass suite=X25519"):
        seal(b"x", "text/plain", {OWNER: x25519_keys[OWNER].public_key()})


def test_fresh_key_and_id_per_record(keys: Keys) -> None:
    a, b = _seal(keys, b"same payload"), _seal(keys, b"same payload")
    assert a.record_id != b.record_id
    assert a.chunks[0] != b.chunks[0]


@pytest.mark.parametrize("block", [37, 128, 300, 1024])
def test_streaming_from_uneven_blocks(keys: Keys, block: int) -> None:
    payload = os.urandom(1024)
    sealer = StreamSealer("application/dicom", chunk_size=128)
    blocks = (payload[i : i + block] for i in range(0, len(payload), block))
    chunks = list(sealer.encrypt(blocks))
    manifest, wrapped = sealer.finish({OWNER: keys[OWNER].public_key()}, keys[OWNER].suite)
    assert manifest.chunk_count == 8
    opener = RecordOpener(manifest, wrapped[OWNER], OWNER, keys[OWNER])
    assert b"".join(opener.decrypt(chunks)) == payload
    with pytest.raises(RuntimeError):
        sealer.finish({OWNER: keys[OWNER].public_key()}, keys[OWNER].suite)


def test_finish_refuses_a_stream_not_read_to_its_end(keys: Keys) -> None:
    sealer = StreamSealer("application/dicom", chunk_size=128)
    chunks = sealer.encrypt(io.BytesIO(os.urandom(1000)))
    next(chunks)
    with pytest.raises(RuntimeError, match="fully consumed"):
        sealer.finish({OWNER: keys[OWNER].public_key()}, keys[OWNER].suite)


# -- chunk tampering: caught by the manifest's hashes before any decryption -------------


def test_changed_chunk_byte(keys: Keys) -> None:
    record = _seal(keys, os.urandom(300))
    chunks = list(record.chunks)
    chunks[2] = chunks[2][:5] + bytes([chunks[2][5] ^ 1]) + chunks[2][6:]
    with pytest.raises(ChunkIntegrityError, match=r"chunk 2 of record \w+ does not match"):
        open_record(dataclasses.replace(record, chunks=tuple(chunks)), OWNER, keys[OWNER])


def test_reordered_chunks(keys: Keys) -> None:
    record = _seal(keys, os.urandom(300))
    chunks = list(record.chunks)
    chunks[0], chunks[1] = chunks[1], chunks[0]
    with pytest.raises(ChunkIntegrityError, match="chunk 0"):
        open_record(dataclasses.replace(record, chunks=tuple(chunks)), OWNER, keys[OWNER])


def test_chunk_from_another_record(keys: Keys) -> None:
    record, other = _seal(keys, os.urandom(300)), _seal(keys, os.urandom(300))
    chunks = (*record.chunks[:1], other.chunks[1], *record.chunks[2:])
    with pytest.raises(ChunkIntegrityError, match="chunk 1"):
        open_record(dataclasses.replace(record, chunks=chunks), OWNER, keys[OWNER])


def test_missing_and_extra_chunks(keys: Keys) -> None:
    record = _seal(keys, os.urandom(300))
    with pytest.raises(ChunkIntegrityError, match="ended after 4 of 5"):
        open_record(dataclasses.replace(record, chunks=record.chunks[:4]), OWNER, keys[OWNER])
    longer = (*record.chunks, record.chunks[0])
    with pytest.raises(ChunkIntegrityError, match="has 5 chunks; got chunk 5"):
        open_record(dataclasses.replace(record, chunks=longer), OWNER, keys[OWNER])


def test_manifest_edited_to_match_swapped_chunks_is_refused(keys: Keys) -> None:
    record = _seal(keys, os.urandom(300))
    hashes = list(record.manifest.chunk_hashes)
    hashes[0], hashes[1] = hashes[1], hashes[0]
    forged = dataclasses.replace(
        record.manifest, chunk_hashes=tuple(hashes), content_hash=content_hash(hashes)
    )
    # Against the content hash recorded on chain:
    with pytest.raises(ManifestError, match="is not the expected"):
        RecordOpener(
            forged,
            record.wrapped_keys[OWNER],
            OWNER,
            keys[OWNER],
            expected_content_hash=record.content_hash,
        )
    # Without it, the wrapped key is bound to the real content hash:
    with pytest.raises(WrappedKeyBindingError, match="made for other content"):
        RecordOpener(forged, record.wrapped_keys[OWNER], OWNER, keys[OWNER])
    # And a manifest whose hashes do not give its root is refused when built or parsed.
    with pytest.raises(ManifestError, match="do not give the content hash"):
        dataclasses.replace(record.manifest, chunk_hashes=tuple(hashes))


# -- the layer beneath: AES-GCM binds record id, position and the end of the stream -----


def test_chunk_cipher_binds_record_position_and_end() -> None:
    key = new_data_key()
    cipher = ChunkCipher("rec-a", key)
    first, last = cipher.encrypt(0, b"first", final=False), cipher.encrypt(1, b"last", final=True)
    assert cipher.decrypt(0, first, final=False) == b"first"
    with pytest.raises(ChunkDecryptionError, match="chunk 1 of record rec-a"):
        cipher.decrypt(1, first, final=True)  # moved to another position
    with pytest.raises(ChunkDecryptionError):
        ChunkCipher("rec-b", key).decrypt(1, last, final=True)  # moved to another record
    with pytest.raises(ChunkDecryptionError):
        cipher.decrypt(0, first, final=True)  # stream cut after chunk 0
    with pytest.raises(ChunkDecryptionError):
        ChunkCipher("rec-a", new_data_key()).decrypt(1, last, final=True)


# -- wrapped keys -----------------------------------------------------------------------


def test_tampered_wrapped_key_bytes(keys: Keys) -> None:
    record = _seal(keys, b"payload")
    wrapped = record.wrapped_keys[OWNER]
    raw = bytearray(wrapped.to_bytes())
    raw[-20] ^= 1
    tampered = WrappedKey.from_bytes(bytes(raw))
    with pytest.raises(WrappedKeyTamperedError, match="bytes or header were changed"):
        RecordOpener(record.manifest, tampered, OWNER, keys[OWNER])
    with pytest.raises(WrappedKeyFormatError, match="magic"):
        WrappedKey.from_bytes(b"XXXX" + bytes(raw[4:]))
    with pytest.raises(WrappedKeyFormatError, match="truncated"):
        WrappedKey.from_bytes(bytes(raw[:-1]))


def test_wrapped_key_moved_to_another_recipient(keys: Keys) -> None:
    record = _seal(keys, b"payload")
    owners = record.wrapped_keys[OWNER]
    moved = {**record.wrapped_keys, PATIENT: owners}
    with pytest.raises(WrongRecipientError, match=f"is for '{OWNER}', not '{PATIENT}'"):
        open_record(dataclasses.replace(record, wrapped_keys=moved), PATIENT, keys[PATIENT])
    # Header rewritten to name the patient: the fingerprint still names the owner's key.
    relabelled = dataclasses.replace(owners, recipient=PATIENT)
    with pytest.raises(WrongRecipientError, match="another encryption key"):
        RecordOpener(record.manifest, relabelled, PATIENT, keys[PATIENT])
    # Fingerprint rewritten too: HPKE refuses (the header is bound in `info`).
    forged = dataclasses.replace(
        relabelled, key_fingerprint=keys[PATIENT].public_key().fingerprint()
    )
    with pytest.raises(WrappedKeyTamperedError):
        RecordOpener(record.manifest, forged, PATIENT, keys[PATIENT])


def test_wrapped_key_moved_to_another_record(keys: Keys) -> None:
    a, b = _seal(keys, b"record a"), _seal(keys, b"record b")
    with pytest.raises(WrappedKeyBindingError, match=f"is for record {a.record_id}"):
        RecordOpener(b.manifest, a.wrapped_keys[OWNER], OWNER, keys[OWNER])
    relabelled = dataclasses.replace(
        a.wrapped_keys[OWNER], record_id=b.record_id, content_hash=b.content_hash
    )
    with pytest.raises(WrappedKeyTamperedError):
        RecordOpener(b.manifest, relabelled, OWNER, keys[OWNER])


def test_wrong_recipient(keys: Keys) -> None:
    record = _seal(keys, b"payload")
    with pytest.raises(WrongRecipientError, match=f"no wrapped key for '{OTHER}'"):
        open_record(record, OTHER, keys[OTHER])
    with pytest.raises(WrongRecipientError, match=f"is for '{OWNER}', not '{OTHER}'"):
        RecordOpener(record.manifest, record.wrapped_keys[OWNER], OTHER, keys[OTHER])
    # Right name, wrong private key (someone else's key file):
    with pytest.raises(WrongRecipientError, match="another encryption key"):
        RecordOpener(record.manifest, record.wrapped_keys[OWNER], OWNER, keys[OTHER])


def test_wrong_suite_private_key(hybrid_keys: Keys, x25519_keys: Keys) -> None:
    record = _seal(hybrid_keys, b"payload")
    with pytest.raises(SuiteMismatchError):
        open_record(record, OWNER, x25519_keys[OWNER])


# -- grants -----------------------------------------------------------------------------


def test_recipient_added_later_reads_without_touching_chunks(keys: Keys) -> None:
    record = _seal(keys, os.urandom(500))
    new_key = grant(
        record.manifest,
        record.wrapped_keys[PATIENT],
        PATIENT,
        keys[PATIENT],
        LATER,
        keys[LATER].public_key(),
    )
    assert (new_key.record_id, new_key.recipient) == (record.record_id, LATER)
    extended = dataclasses.replace(record, wrapped_keys={**record.wrapped_keys, LATER: new_key})
    assert open_record(extended, LATER, keys[LATER]) == open_record(record, OWNER, keys[OWNER])


def test_grant_needs_a_key_the_granter_can_unwrap(keys: Keys) -> None:
    record = _seal(keys, b"payload")
    with pytest.raises(WrongRecipientError):
        grant(
            record.manifest,
            record.wrapped_keys[OWNER],
            OTHER,
            keys[OTHER],
            LATER,
            keys[LATER].public_key(),
        )


def test_grant_across_suites(hybrid_keys: Keys, x25519_keys: Keys) -> None:
    record = _seal(hybrid_keys, b"payload")
    wrapped = grant(
        record.manifest,
        record.wrapped_keys[OWNER],
        OWNER,
        hybrid_keys[OWNER],
        LATER,
        x25519_keys[LATER].public_key(),
    )
    assert wrapped.suite is HpkeSuite.X25519
    opener = RecordOpener(record.manifest, wrapped, LATER, x25519_keys[LATER])
    assert b"".join(opener.decrypt(record.chunks)) == b"payload"


def test_manifest_json_round_trip(keys: Keys) -> None:
    record = _seal(keys, os.urandom(200))
    assert RecordManifest.from_json(record.manifest.to_json()) == record.manifest
    with pytest.raises(ManifestError, match="malformed"):
        RecordManifest.from_json(b'{"format": "medledger-record-manifest/1"}')
