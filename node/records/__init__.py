"""Patient records: the client-side envelope (seal/open/grant), FHIR payload checks, and
the node-side vault that stores ciphertext and wrapped keys (DESIGN §6).

Modules: `suites` (HPKE suites), `encryption_keys` (identity key pairs and their files),
`chunks` (chunk AEAD, hashes, Merkle root), `manifest`, `wrapping` (HPKE key wrap),
`envelope` (seal, open, grant, streaming), `fhir`, `vault`, `errors`.
"""

from node.records.encryption_keys import (
    EncryptionPrivateKey,
    EncryptionPublicKey,
    load_private_key,
    load_public_key,
    write_key_pair,
)
from node.records.envelope import (
    RecordOpener,
    SealedRecord,
    StreamSealer,
    grant,
    open_record,
    seal,
)
from node.records.manifest import RecordManifest
from node.records.suites import DEFAULT_SUITE, HpkeSuite
from node.records.vault import Vault, VaultUpload, VaultUsage
from node.records.wrapping import WrappedKey

__all__ = [
    "DEFAULT_SUITE",
    "EncryptionPrivateKey",
    "EncryptionPublicKey",
    "HpkeSuite",
    "RecordManifest",
    "RecordOpener",
    "SealedRecord",
    "StreamSealer",
    "Vault",
    "VaultUpload",
    "VaultUsage",
    "WrappedKey",
    "grant",
    "load_private_key",
    "load_public_key",
    "open_record",
    "seal",
    "write_key_pair",
]
