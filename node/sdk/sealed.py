"""Short text fields sealed "to the parties" (DESIGN §6: department and reason of a
referral, a rejection, an outcome, an MDT opinion, a follow-up note).

The text is encrypted once with a fresh AES-256-GCM key; that key is wrapped with HPKE
(node/records/wrapping.py) for each party's registered encryption key, fetched from the
chain and verified against the party's certificate. The result is one line of text the
contracts store opaquely (they accept at most MAX_SEALED_CHARS characters):

    "mls1:" + base64( b"MLSF\\x01" | length-prefixed(field id, nonce || ciphertext,
                                                   party 1, ..., party N) )
    party = suite wire id (1 byte) | length-prefixed(recipient, key fingerprint, HPKE sealed)

Each wrapped key is bound (HPKE `info`) to the field id, the SHA-256 of the ciphertext
and the recipient, so it cannot be moved to another field or party. With the default
hybrid ML-KEM-768 + X25519 suite each party costs about 1.3 kB (1.7 k characters): a
field holds nine parties at most, and `seal` refuses more with a clear error.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.crypto.hashing import length_prefixed, split_length_prefixed
from node.records.encryption_keys import EncryptionPrivateKey, EncryptionPublicKey
from node.records.errors import RecordError
from node.records.suites import HpkeSuite
from node.records.wrapping import WrappedKey, unwrap_key, wrap_key
from node.sdk.client import Client, ClientError, Identity

PREFIX = "mls1:"
MAX_SEALED_CHARS = 16384  # contracts/referral.py MAX_CIPHERTEXT
_MAGIC = b"MLSF\x01"
_AAD_LABEL = b"medledger/sealed-field/v1\x00"


class SealedError(ClientError):
    """A sealed field that cannot be made or opened; the message says why."""


class TooManyParties(SealedError):
    """The sealed text would exceed what a contract field holds."""


class NotAParty(SealedError):
    """The identity is not among the recipients of a sealed field."""


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def seal(text: str, recipients: Mapping[str, EncryptionPublicKey]) -> str:
    """`text` encrypted for each recipient identity id -> its encryption public key."""
    if not recipients:
        raise SealedError("a sealed field needs at least one party")
    field_id = "f" + secrets.token_hex(12)
    data_key = AESGCM.generate_key(bit_length=256)
    nonce = secrets.token_bytes(12)
    content = nonce + AESGCM(data_key).encrypt(nonce, text.encode(), _aad(field_id))
    digest = hashlib.sha256(content).digest()
    parties = []
    for recipient, public in sorted(recipients.items()):
        wrapped = wrap_key(data_key, field_id, digest, recipient, public)
        parties.append(
            bytes([wrapped.suite.wire_id])
            + length_prefixed(recipient.encode(), wrapped.key_fingerprint, wrapped.sealed)
        )
    raw = _MAGIC + length_prefixed(field_id.encode(), content, *parties)
    sealed = PREFIX + base64.b64encode(raw).decode()
    if len(sealed) > MAX_SEALED_CHARS:
        per_party = max(len(p) for p in parties) * 4 // 3
        fit = max(0, (MAX_SEALED_CHARS - len(sealed) + per_party * len(parties)) // per_party)
        raise TooManyParties(
            f"sealed for {len(recipients)} parties the field is {len(sealed)} characters; a "
            f"contract field holds {MAX_SEALED_CHARS} (about {fit} parties with these keys "
            "and this text): name fewer parties or shorten the text"
        )
    return sealed


def recipients_of(sealed: str) -> list[str]:
    """Identity ids a sealed field was made for."""
    _field_id, _content, parties = _parse(sealed)
    return [recipient for recipient, _suite, _fp, _blob in parties]


def open_sealed(
    sealed: str, identity_id: str, private_keys: Mapping[bytes, EncryptionPrivateKey]
) -> str:
    """The text, for `identity_id` holding `private_keys` (by public-key fingerprint)."""
    field_id, content, parties = _parse(sealed)
    mine = [p for p in parties if p[0] == identity_id]
    if not mine:
        raise NotAParty(
            f"identity {identity_id[:16]}… is not a party of this sealed field "
            f"(sealed for {len(parties)} other identities)"
        )
    _recipient, suite, fingerprint, blob = mine[0]
    private = private_keys.get(fingerprint)
    if private is None:
        raise NotAParty(
            f"this field was sealed for an encryption key of {identity_id[:16]}… "
            f"({fingerprint.hex()[:16]}…) that the identity folder does not hold "
            "(a rotated key whose enc.key.v<N> was removed?)"
        )
    digest = hashlib.sha256(content).digest()
    wrapped = WrappedKey(suite, field_id, identity_id, fingerprint, digest, blob)
    try:
        data_key = unwrap_key(wrapped, field_id, digest, identity_id, private)
        plain = AESGCM(data_key).decrypt(content[:12], content[12:], _aad(field_id))
    except (RecordError, InvalidTag) as exc:
        raise SealedError(f"the sealed field does not open: it was altered ({exc})") from None
    try:
        return plain.decode()
    except UnicodeDecodeError:
        raise SealedError("the sealed field does not hold UTF-8 text") from None


# -- with a node: verified public keys, the identity folder's private keys -----------------


def seal_text(client: Client, identity: Identity, text: str, party_ids: Iterable[str]) -> str:
    """`text` sealed for `party_ids` (duplicates ignored), each key fetched from the chain
    and verified against that identity's certificate."""
    from node.sdk.identity_keys import fetch_public_key

    keys = {who: fetch_public_key(client, identity, who) for who in dict.fromkeys(party_ids)}
    return seal(text, keys)


def open_text(identity: Identity, sealed: str) -> str:
    """The text of a sealed field, for a party; NotAParty for anyone else."""
    from node.sdk.identity_keys import private_keys

    return open_sealed(sealed, identity.id, private_keys(identity))


def try_open(identity: Identity, sealed: object) -> str | None:
    """The text, or None when `sealed` is empty or the identity cannot open it."""
    if not is_sealed(sealed):
        return None
    assert isinstance(sealed, str)
    try:
        return open_text(identity, sealed)
    except SealedError:
        return None


# -- format ------------------------------------------------------------------------------


def _aad(field_id: str) -> bytes:
    return _AAD_LABEL + field_id.encode()


_Party = tuple[str, HpkeSuite, bytes, bytes]


def _parse(sealed: str) -> tuple[str, bytes, list[_Party]]:
    if not is_sealed(sealed):
        raise SealedError(f"not a sealed field (it does not start with {PREFIX!r})")
    try:
        raw = base64.b64decode(sealed[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise SealedError("a sealed field is not valid base64") from None
    if not raw.startswith(_MAGIC):
        raise SealedError("not a sealed field of a version this SDK knows")
    parts = _split(raw[len(_MAGIC) :])
    if len(parts) < 3 or len(parts[1]) < 12 + 16:
        raise SealedError("a sealed field is truncated")
    parties: list[_Party] = []
    for blob in parts[2:]:
        if not blob:
            raise SealedError("a sealed field has an empty party entry")
        try:
            suite = HpkeSuite.from_wire_id(blob[0])
        except ValueError as exc:
            raise SealedError(f"sealed field: {exc}") from None
        fields = _split(blob[1:])
        if len(fields) != 3 or len(fields[1]) != 32:
            raise SealedError("a sealed field has a malformed party entry")
        parties.append((fields[0].decode(errors="replace"), suite, fields[1], fields[2]))
    return parts[0].decode(errors="replace"), parts[1], parties


def _split(data: bytes) -> Sequence[bytes]:
    try:
        return split_length_prefixed(data)
    except ValueError:
        raise SealedError("a sealed field is truncated") from None
