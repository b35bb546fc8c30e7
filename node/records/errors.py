"""Errors of the record envelope and the vault.

Each names what was wrong and what to do; none ever carries plaintext, key bytes or a
FHIR field's value (messages end up in logs, and logs must never hold patient data).
"""

from __future__ import annotations

from typing import ClassVar


class RecordError(Exception):
    """Base class; `code` is a stable identifier for APIs and the CLI's --json output."""

    code: ClassVar[str] = "RECORD_ERROR"


class KeyFormatError(RecordError):
    """An encryption key (file, PEM or raw bytes) that cannot be used."""

    code = "BAD_ENCRYPTION_KEY"


class SuiteMismatchError(RecordError):
    """A key of another HPKE suite than the one required."""

    code = "SUITE_MISMATCH"


class ManifestError(RecordError):
    """A record manifest that is malformed or whose chunk hashes do not give its content hash."""

    code = "BAD_MANIFEST"


class ChunkIntegrityError(RecordError):
    """A ciphertext chunk whose hash is not the one the manifest lists at its position:
    changed bytes, chunks reordered, or a chunk of another record. Found before decryption."""

    code = "CHUNK_TAMPERED"


class ChunkDecryptionError(RecordError):
    """AES-GCM refused a chunk: it was not encrypted under this record's key, for this
    record id and position, or the stream was cut short."""

    code = "CHUNK_DECRYPTION_FAILED"


class WrappedKeyFormatError(RecordError):
    """Bytes that are not a wrapped record key."""

    code = "BAD_WRAPPED_KEY"


class WrongRecipientError(RecordError):
    """A wrapped key addressed to another identity or to another encryption key."""

    code = "WRONG_RECIPIENT"


class WrappedKeyBindingError(RecordError):
    """A wrapped key made for another record (or another content hash) than the one opened."""

    code = "WRAPPED_KEY_OTHER_RECORD"


class WrappedKeyTamperedError(RecordError):
    """HPKE refused to unwrap: the wrapped key's bytes or its header were changed."""

    code = "WRAPPED_KEY_TAMPERED"


class FhirValidationError(RecordError):
    """A payload that is not a valid FHIR R4B Bundle; `problems` lists each one as
    `location: message` (never the offending value, which may be patient data)."""

    code = "INVALID_FHIR"

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class VaultError(RecordError):
    """The vault refused or could not complete an operation."""

    code = "VAULT_ERROR"


class RecordNotFoundError(VaultError):
    code = "RECORD_NOT_FOUND"


class RecordExistsError(VaultError):
    code = "RECORD_EXISTS"


class WrappedKeyNotFoundError(VaultError):
    code = "WRAPPED_KEY_NOT_FOUND"
