"""Building, parsing and checking transactions (DESIGN §3.1).

A transaction travels as `SignedTx{body, signature}` bytes. Nothing here re-serialises a
body: the id and the signature are over `SignedTx.body` exactly as received.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError
from medledger.v1 import ledger_pb2

from node.codes import TxCode
from node.crypto import keys
from node.crypto.certs import CertificateError, Identity, IdentityVerifier
from node.crypto.hashing import sha256

SHA256 = 1  # medledger.v1.HashAlgorithm.SHA256
MIN_NONCE_BYTES = 8


class Rejection(Exception):
    """A transaction refused with a specific code; `str()` is the human message."""

    def __init__(self, code: TxCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ParsedTx:
    raw: bytes  # the SignedTx bytes as received
    tx_id: bytes  # SHA-256 of body bytes
    body_bytes: bytes
    body: ledger_pb2.TxBody
    signature: bytes

    @property
    def contract(self) -> str:
        return self.body.contract

    @property
    def function(self) -> str:
        return self.body.function


# Admission parses every transaction, and every node parses it again when it executes
# the block (and again for each duplicate that arrives by forwarding or gossip). Parsing
# is a pure function of the bytes, so the result of a recent parse is reused: a bounded
# map from the SignedTx bytes to their ParsedTx, oldest dropped first. Refusals are not
# kept (they are cheap to reproduce and must not fill the map).
PARSE_MEMO_SIZE = 8_192
_parsed: dict[bytes, ParsedTx] = {}


def parse(raw: bytes, max_bytes: int) -> ParsedTx:
    """Structural checks only: size, protobuf shape, required fields."""
    if len(raw) > max_bytes:
        raise Rejection(
            TxCode.TOO_LARGE, f"transaction is {len(raw)} bytes; the limit is {max_bytes}"
        )
    if type(raw) is not bytes:  # only bytes are hashable keys (not bytearray, memoryview)
        return _parse(raw)
    tx = _parsed.get(raw)
    if tx is not None:
        return tx
    tx = _parse(raw)
    memo = _parsed
    if len(memo) >= PARSE_MEMO_SIZE:
        # Oldest first; several threads may evict at once (the memo is only a cache).
        with contextlib.suppress(KeyError, StopIteration, RuntimeError):
            del memo[next(iter(memo))]
    memo[raw] = tx
    return tx


def _parse(raw: bytes) -> ParsedTx:
    signed = ledger_pb2.SignedTx()
    try:
        signed.ParseFromString(raw)
    except DecodeError as exc:
        raise Rejection(TxCode.MALFORMED, f"bytes are not a SignedTx: {exc}") from exc
    body = ledger_pb2.TxBody()
    try:
        body.ParseFromString(signed.body)
    except DecodeError as exc:
        raise Rejection(TxCode.MALFORMED, f"SignedTx.body is not a TxBody: {exc}") from exc
    complete = (
        signed.body
        and signed.signature
        and body.chain_id
        and body.contract
        and body.function
        and body.nonce
        and body.created_at_ms > 0
        and body.expires_at_ms > 0
        and body.creator.certificate
        and body.signature_algorithm != 0
        and body.hash_algorithm != 0
    )
    if not complete:
        _missing_fields(signed, body)
    if len(body.nonce) < MIN_NONCE_BYTES:
        raise Rejection(TxCode.MALFORMED, f"nonce must be at least {MIN_NONCE_BYTES} bytes")
    if body.expires_at_ms <= body.created_at_ms:
        raise Rejection(TxCode.MALFORMED, "expires_at_ms must be later than created_at_ms")
    return ParsedTx(raw, sha256(signed.body), signed.body, body, signed.signature)


def _missing_fields(signed: ledger_pb2.SignedTx, body: ledger_pb2.TxBody) -> None:
    missing = [
        name
        for name, present in (
            ("body", bool(signed.body)),
            ("signature", bool(signed.signature)),
            ("body.chain_id", bool(body.chain_id)),
            ("body.contract", bool(body.contract)),
            ("body.function", bool(body.function)),
            ("body.nonce", bool(body.nonce)),
            ("body.created_at_ms", body.created_at_ms > 0),
            ("body.expires_at_ms", body.expires_at_ms > 0),
            ("body.creator.certificate", bool(body.creator.certificate)),
            ("body.signature_algorithm", body.signature_algorithm != 0),
            ("body.hash_algorithm", body.hash_algorithm != 0),
        )
        if not present
    ]
    if missing:
        raise Rejection(TxCode.MISSING_FIELD, "missing required field(s): " + ", ".join(missing))


def decode_args(tx: ParsedTx) -> dict[str, Any]:
    return decode_json_object(tx.body.args, "args")


MAX_JSON_NESTING = 64


def json_nesting(text: str) -> int:
    """Deepest bracket nesting outside strings, found without recursion, so that the
    answer (and therefore a transaction's code) never depends on the caller's stack."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return value


def decode_json_object(data: bytes, what: str) -> dict[str, Any]:
    if not data:
        return {}
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejection(TxCode.BAD_ARGUMENTS, f"{what} are not UTF-8: {exc}") from exc
    # Counting brackets is C-speed; the exact scan runs only when nesting could exceed.
    brackets = text.count("[") + text.count("{")
    if brackets > MAX_JSON_NESTING and json_nesting(text) > MAX_JSON_NESTING:
        raise Rejection(TxCode.BAD_ARGUMENTS, f"{what} nest deeper than {MAX_JSON_NESTING} levels")
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise Rejection(TxCode.BAD_ARGUMENTS, f"{what} are not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise Rejection(TxCode.BAD_ARGUMENTS, f"{what} must be a JSON object")
    return value


# More than a full mempool (50,000 by default) plus what is being ordered: oldest first
# out, so what falls out has almost always executed already; one that has not is only
# verified again. (200,000 took ~25 MB per node and 7 minutes at 480 tx/s to fill.)
VERIFIED_MEMO_SIZE = 64_000


@dataclass(frozen=True)
class ChainRules:
    chain_id: bytes
    max_tx_bytes: int
    max_tx_ttl_ms: int
    max_clock_skew_ms: int


class TxChecker:
    """The checks that admission runs at the node's clock and execution repeats at block
    time against committed state (DESIGN §3.1 step 2 and 4)."""

    def __init__(
        self,
        rules: ChainRules,
        verifier: IdentityVerifier,
        is_revoked: Callable[[str], bool],
    ) -> None:
        self.rules = rules
        self._verifier = verifier
        self._is_revoked = is_revoked
        # sha256(tx id | signature) of signatures already verified: every node verifies
        # a transaction once, at admission, not again when it executes. The tx id is the
        # SHA-256 of the body (which names the creator's key), so the digest names exactly
        # what `keys.verify` was given, and hashing it is cheaper than hashing the whole
        # SignedTx. Oldest dropped first beyond VERIFIED_MEMO_SIZE, so a full memo never
        # forces everything pending to be verified again at once.
        self._verified: dict[bytes, None] = {}

    def check_request(
        self, raw: bytes, contract: str, function: str, now_ms: int
    ) -> tuple[ParsedTx, Identity]:
        """A signed request that is never ordered (a vault proof, an event subscription):
        it must name `contract`.`function` and pass the checks of a transaction."""
        tx = parse(raw, self.rules.max_tx_bytes)
        if (tx.contract, tx.function) != (contract, function):
            raise Rejection(
                TxCode.MALFORMED,
                f"the request must name {contract}.{function}, not {tx.contract}.{tx.function}",
            )
        return tx, self.check(tx, now_ms)

    def check(self, tx: ParsedTx, now_ms: int) -> Identity:
        body = tx.body
        rules = self.rules
        if body.chain_id != rules.chain_id:
            raise Rejection(
                TxCode.WRONG_CHAIN,
                f"chain_id {body.chain_id.hex()[:16]}… is not this consortium's "
                f"({rules.chain_id.hex()[:16]}…)",
            )
        if body.hash_algorithm != SHA256:
            raise Rejection(TxCode.UNSUPPORTED_ALGORITHM, "hash_algorithm must be SHA256")
        if body.expires_at_ms <= now_ms:
            raise Rejection(
                TxCode.EXPIRED, f"expired at {body.expires_at_ms} ms; it is now {now_ms} ms"
            )
        if body.created_at_ms > now_ms + rules.max_clock_skew_ms:
            raise Rejection(
                TxCode.NOT_YET_VALID,
                f"created_at {body.created_at_ms} ms is more than "
                f"{rules.max_clock_skew_ms} ms ahead of this node's clock ({now_ms} ms)",
            )
        if body.expires_at_ms - body.created_at_ms > rules.max_tx_ttl_ms:
            raise Rejection(
                TxCode.TTL_TOO_LONG,
                f"expires_at - created_at must be at most {rules.max_tx_ttl_ms} ms",
            )
        try:
            identity = self._verifier.identify(body.creator.certificate)
        except CertificateError as exc:
            raise Rejection(TxCode.UNKNOWN_CREATOR, str(exc)) from exc
        if not identity.not_before_ms <= now_ms <= identity.not_after_ms:
            raise Rejection(
                TxCode.UNKNOWN_CREATOR, f"certificate of {identity.name!r} is not valid now"
            )
        if self._is_revoked(identity.identity):
            raise Rejection(
                TxCode.CREATOR_REVOKED, f"certificate of {identity.name!r} has been revoked"
            )
        if keys.signature_code(identity.public_key, body.signature_algorithm) != TxCode.VALID:
            raise Rejection(
                TxCode.UNSUPPORTED_ALGORITHM,
                "signature_algorithm does not match the creator's key",
            )
        if not self._verify_once(tx, identity):
            raise Rejection(TxCode.BAD_SIGNATURE, "signature does not verify over the body bytes")
        return identity

    def preverify(self, tx: ParsedTx) -> None:
        """Verify the signature ahead of `check` (a follower, for the transactions of a
        Raft entry it appended but has not yet seen committed), so that `check` at
        execution finds it in the memo. Decides nothing: every refusal is left to
        `check`, which runs all the rules at block time."""
        try:
            identity = self._verifier.identify(tx.body.creator.certificate)
        except CertificateError:
            return
        if keys.signature_code(identity.public_key, tx.body.signature_algorithm) == TxCode.VALID:
            self._verify_once(tx, identity)

    def _verify_once(self, tx: ParsedTx, identity: Identity) -> bool:
        """Whether the signature verifies; a good one is remembered and never verified
        again by this node."""
        verified = self._verified
        digest = sha256(tx.tx_id + tx.signature)
        if digest in verified:
            return True
        if not keys.verify(identity.public_key, tx.signature, tx.body_bytes):
            return False
        if len(verified) >= VERIFIED_MEMO_SIZE:
            # Oldest first; another thread may have evicted it already.
            with contextlib.suppress(KeyError, StopIteration, RuntimeError):
                del verified[next(iter(verified))]
        verified[digest] = None
        return True


def build(
    *,
    chain_id: bytes,
    contract: str,
    function: str,
    args: Mapping[str, Any],
    key: keys.PrivateKey,
    certificate_der: bytes,
    now_ms: int,
    ttl_ms: int = 120_000,
    nonce: bytes | None = None,
) -> bytes:
    """A signed transaction's bytes, ready for Gateway.Submit."""
    body = ledger_pb2.TxBody(
        chain_id=chain_id,
        contract=contract,
        function=function,
        args=json.dumps(dict(args), sort_keys=True, separators=(",", ":")).encode(),
        nonce=nonce if nonce is not None else os.urandom(16),
        created_at_ms=now_ms,
        expires_at_ms=now_ms + ttl_ms,
        creator=ledger_pb2.Creator(certificate=certificate_der),
        signature_algorithm=keys.algorithm_of(key),  # type: ignore[arg-type]
        hash_algorithm=SHA256,  # type: ignore[arg-type]
    )
    body_bytes = body.SerializeToString()
    signed = ledger_pb2.SignedTx(body=body_bytes, signature=keys.sign(key, body_bytes))
    return signed.SerializeToString()


def tx_id_of(raw: bytes) -> bytes:
    signed = ledger_pb2.SignedTx()
    signed.ParseFromString(raw)
    return sha256(signed.body)
