"""Patient records in the SDK (DESIGN §6): encrypt in the client, store in the vault,
register on chain, read through a recorded access, share the key, erase.

    with Client(api) as client:
        put = records.put(client, doctor, "pt-1a2b3c4d5e6f7a8b", Path("emr.json"))
        records.get(client, reader, put.record_id, out=Path("copy.json"), grant=grant_id)

Nothing readable leaves the client: the payload is sealed here (AES-256-GCM chunks,
the data key wrapped with HPKE for the owner and the patient), and the node's vault
only ever holds ciphertext and wrapped keys. A reader verifies every chunk against the
content hash that the chain holds, and writes its output only once all of it checked.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import grpc
from medledger.v1 import vault_pb2, vault_pb2_grpc

from node.records import fhir
from node.records.envelope import RecordOpener, StreamSealer
from node.records.envelope import grant as rewrap
from node.records.errors import RecordError
from node.records.manifest import RecordManifest
from node.records.wrapping import WrappedKey
from node.sdk import identity_keys
from node.sdk.client import Client, ClientError, Identity, SubmitResult

PROOF_TTL_MS = 120_000
DEFAULT_MEDIA_TYPE = "application/octet-stream"


class RecordAccessError(ClientError):
    """The vault refused or could not serve; `status` is the gRPC status name."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status


@dataclass(frozen=True)
class PutResult:
    record_id: str
    tx_id: str
    status: str
    code: str
    height: int
    content_hash: str
    size: int
    vault_node: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class GetResult:
    record_id: str
    access_tx: str
    basis: str
    size: int
    media_type: str
    content_hash: str
    vault_node: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _vault(client: Client) -> vault_pb2_grpc.VaultStub:
    return vault_pb2_grpc.VaultStub(client.channel)


def _proof(client: Client, identity: Identity, function: str, args: dict[str, Any]) -> bytes:
    return client.build(identity, "vault", function, args, ttl_ms=PROOF_TTL_MS)


def _rpc_error(exc: grpc.RpcError) -> RecordAccessError:
    code = exc.code()
    return RecordAccessError(code.name if code else "UNKNOWN", exc.details() or "")


def patient_identity(client: Client, caller: Identity, pseudonym: str) -> str:
    entry = client.query(caller, "consortium", "get_patient", {"pseudonym": pseudonym})
    if entry is None:
        raise ClientError(f"no registered patient with pseudonym {pseudonym!r}")
    return str(entry["identity"])


def _media_type(path: Path | None, payload_head: bytes) -> str:
    if path is not None and path.suffix == ".json" and payload_head.lstrip().startswith(b"{"):
        return fhir.MEDIA_TYPE
    return DEFAULT_MEDIA_TYPE


def put(
    client: Client,
    identity: Identity,
    patient: str,
    source: bytes | Path,
    media_type: str | None = None,
    *,
    record_id: str | None = None,
) -> PutResult:
    """Seal `source` for the calling doctor and the patient, upload the ciphertext to
    the doctor's node's vault, then register the record on chain (`records.put`).
    A FHIR payload (application/fhir+json) is validated first (R4B Bundle)."""
    path = source if isinstance(source, Path) else None
    payload = source if isinstance(source, bytes) else None
    try:
        head = path.open("rb").read(64) if path is not None else (payload or b"")[:64]
    except OSError as exc:
        raise ClientError(f"cannot read {path}: {exc.strerror}") from None
    media = media_type or _media_type(path, head)
    if media == fhir.MEDIA_TYPE:
        data = path.read_bytes() if path is not None else (payload or b"")
        try:
            fhir.validate_bundle(data)
        except RecordError as exc:
            raise ClientError(f"not a valid FHIR R4B Bundle: {exc}") from None
    recipients = {
        identity.id: identity_keys.current_public_key(identity),
    }
    patient_id = patient_identity(client, identity, patient)
    recipients[patient_id] = identity_keys.fetch_public_key(client, identity, patient_id)
    sealer = StreamSealer(media, record_id=record_id)
    proof = _proof(client, identity, "upload", {"record_id": sealer.record_id})

    def parts(stream: BinaryIO) -> Iterator[vault_pb2.UploadPart]:
        yield vault_pb2.UploadPart(proof=proof)
        for chunk in sealer.encrypt(stream):
            yield vault_pb2.UploadPart(chunk=chunk)
        manifest, wrapped = sealer.finish(recipients, next(iter(recipients.values())).suite)
        yield vault_pb2.UploadPart(
            manifest=manifest.to_json(), wrapped_keys=[w.to_bytes() for w in wrapped.values()]
        )

    stream: BinaryIO = path.open("rb") if path is not None else io.BytesIO(payload or b"")
    with stream:
        try:
            reply = _vault(client).Upload(parts(stream), timeout=client.timeout_s * 10)
        except grpc.RpcError as exc:
            raise _rpc_error(exc) from None
    args = {
        "record_id": reply.record_id,
        "patient": patient,
        "content_hash": reply.content_hash.hex(),
        "size": reply.size,
        "media_type": media,
        "vault_node": reply.vault_node,
    }
    res: SubmitResult = client.submit(identity, "records", "put", args, wait=True)
    return PutResult(
        record_id=reply.record_id,
        tx_id=res.tx_id,
        status=res.status,
        code=res.code,
        height=res.height,
        content_hash=reply.content_hash.hex(),
        size=reply.size,
        vault_node=reply.vault_node,
    )


def access(
    client: Client, identity: Identity, record_id: str, *, grant: str = "", referral: str = ""
) -> tuple[str, dict[str, Any]]:
    """Commit a `records.access` (the recorded read); returns its tx id and the record's
    on-chain metadata (content hash, size, media type, vault node, basis)."""
    args: dict[str, Any] = {"record_id": record_id}
    if grant:
        args["grant"] = grant
    if referral:
        args["referral"] = referral
    res = client.submit(identity, "records", "access", args, wait=True)
    meta = client.result_of(res)
    return res.tx_id, dict(meta)


def _fetch(
    client: Client, identity: Identity, record_id: str, access_tx: str, header_only: bool
) -> tuple[RecordManifest, WrappedKey, Iterator[vault_pb2.FetchPart]]:
    proof = _proof(client, identity, "fetch", {"record_id": record_id, "access_tx": access_tx})
    try:
        stream = cast(
            Iterator[vault_pb2.FetchPart],
            _vault(client).Fetch(
                vault_pb2.FetchRequest(proof=proof, header_only=header_only),
                timeout=client.timeout_s * 10,
            ),
        )
        first = next(stream)
    except grpc.RpcError as exc:
        raise _rpc_error(exc) from None
    try:
        manifest = RecordManifest.from_json(first.manifest)
        wrapped = WrappedKey.from_bytes(first.wrapped_key)
    except RecordError as exc:
        raise RecordAccessError("DATA_LOSS", f"the vault sent a damaged header: {exc}") from None
    return manifest, wrapped, stream


def _opener(
    identity: Identity, manifest: RecordManifest, wrapped: WrappedKey, content_hash: str
) -> RecordOpener:
    keys = identity_keys.private_keys(identity)
    key = keys.get(wrapped.key_fingerprint)
    if key is None:
        raise ClientError(
            "the wrapped key was made for an encryption key this identity folder does not "
            "hold (rotated away and not archived?)"
        )
    return RecordOpener(
        manifest, wrapped, identity.id, key, expected_content_hash=bytes.fromhex(content_hash)
    )


def _chunks(stream: Iterator[vault_pb2.FetchPart]) -> Iterable[bytes]:
    try:
        for part in stream:
            yield part.chunk
    except grpc.RpcError as exc:
        raise _rpc_error(exc) from None


def get(
    client: Client,
    identity: Identity,
    record_id: str,
    out: Path,
    *,
    grant: str = "",
    referral: str = "",
) -> GetResult:
    """Recorded read: commit `records.access`, fetch the ciphertext and this identity's
    wrapped key from the record's vault node, verify every chunk, decrypt into `out`.
    `out` appears only when everything checked; on any error nothing is written."""
    access_tx, meta = access(client, identity, record_id, grant=grant, referral=referral)
    manifest, wrapped, stream = _fetch(client, identity, record_id, access_tx, False)
    try:
        opener = _opener(identity, manifest, wrapped, meta["content_hash"])
    except RecordError as exc:
        raise ClientError(f"record {record_id}: {exc}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            for plaintext in opener.decrypt(_chunks(stream)):
                f.write(plaintext)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except RecordError as exc:
        os.unlink(tmp)
        raise ClientError(f"record {record_id} failed verification: {exc}") from None
    except BaseException:
        os.unlink(tmp)
        raise
    return GetResult(
        record_id=record_id,
        access_tx=access_tx,
        basis=str(meta.get("basis", "")),
        size=manifest.size,
        media_type=manifest.media_type,
        content_hash=meta["content_hash"],
        vault_node=str(meta["vault_node"]),
    )


def share(
    client: Client,
    identity: Identity,
    record_id: str,
    recipients: Sequence[str],
    *,
    grant: str = "",
    referral: str = "",
) -> list[str]:
    """Wrap the record's data key for each recipient identity id and store the keys in
    the record's vault node. The caller must be able to read the record (owner,
    patient, or through `grant` / `referral`): this commits a `records.access` and
    unwraps the caller's own key, so the sharing itself is on the ledger."""
    wanted = [r for r in dict.fromkeys(recipients) if r != identity.id]
    if not wanted:
        return []
    access_tx, meta = access(client, identity, record_id, grant=grant, referral=referral)
    manifest, own, _ = _fetch(client, identity, record_id, access_tx, True)
    manifest.check_content_hash(bytes.fromhex(meta["content_hash"]))
    keys = identity_keys.private_keys(identity)
    private = keys.get(own.key_fingerprint)
    if private is None:
        raise ClientError("this identity folder does not hold the key its wrapped key needs")
    wrapped = []
    for who in wanted:
        public = identity_keys.fetch_public_key(client, identity, who)
        wrapped.append(rewrap(manifest, own, identity.id, private, who, public))
    proof = _proof(client, identity, "share", {"record_id": record_id})
    try:
        reply = _vault(client).AddKeys(
            vault_pb2.AddKeysRequest(proof=proof, wrapped_keys=[w.to_bytes() for w in wrapped]),
            timeout=client.timeout_s,
        )
    except grpc.RpcError as exc:
        raise _rpc_error(exc) from None
    return list(reply.added)


def erase(client: Client, identity: Identity, record_id: str) -> SubmitResult:
    """`records.erase`: every node deletes the ciphertext and wrapped keys it holds."""
    return client.submit(identity, "records", "erase", {"record_id": record_id}, wait=True)


def info(client: Client, identity: Identity, record_id: str) -> dict[str, Any]:
    """On-chain metadata (for the owner, the patient, the institution, the regulator)."""
    result = client.query(identity, "records", "get", {"record_id": record_id})
    return dict(result) if result else {}
