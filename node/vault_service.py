"""The vault on the node (DESIGN §6): the `medledger.v1.Vault` gRPC service for the
hospital's own clients, the libp2p protocol `/medledger/vault/1` between nodes, and the
commit hook that carries out erasures and consent revocations on disk.

Who may do what, decided here from committed chain state and a *proof* (a SignedTx of
the end user, contract "vault", never ordered, checked like a transaction):

    upload     a registered, active doctor of this node's institution; the record must
               not be on chain yet; the regulator is never a recipient
    share      (add wrapped keys) the record's owner, its patient, or a reader with a
               committed `records.access`; recipients are registered doctors/patients
    fetch      the creator of a committed, VALID `records.access` of that record, within
               ACCESS_WINDOW_MS of its block time, whose basis still holds (a revoked
               grant stops the next fetch); the reply is that identity's wrapped key only

The node that the reader talks to forwards `fetch`/`share` to the record's vault node
over libp2p, passing the reader's proof through unchanged; the vault node checks it
again against its own copy of the chain. Nodes never cache ciphertext of records they
do not own, so an erasure has one place to act, plus keys: every node runs the commit
hook and `reconcile`, and a node that holds no copy does nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
import trio
from medledger.v1 import ledger_pb2, vault_pb2, vault_pb2_grpc

from node.codes import TxCode
from node.core import NodeCore
from node.crypto.certs import Identity
from node.crypto.hashing import sha256
from node.ledger.ledger import BlockWrite
from node.net import NetworkError, PeerNetwork
from node.records.errors import RecordError, RecordNotFoundError, WrappedKeyNotFoundError
from node.records.manifest import RecordManifest
from node.records.vault import Vault
from node.records.wrapping import WrappedKey
from node.tx import Rejection, decode_args, parse

log = structlog.get_logger("medledger.vault")

VAULT = "/medledger/vault/1"
ACCESS_WINDOW_MS = 10 * 60 * 1000  # an access tx opens the record for 10 minutes
TX_WAIT_S = 10.0  # how long a vault node waits to see a reader's fresh access tx
REMOTE_TIMEOUT_S = 30.0
ORPHAN_AFTER_MS = 60 * 60 * 1000  # uploads never registered on chain are dropped
SESSIONS = 1024
MAX_KEYS_PER_CALL = 64
MAX_UPLOAD_BYTES = 8 << 30  # 8 GiB of ciphertext per record (imaging series included)


class Refused(Exception):
    """A vault call that is not allowed or cannot be served; `status` says which."""

    def __init__(self, status: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.status = status


def denied(message: str) -> Refused:
    return Refused(grpc.StatusCode.PERMISSION_DENIED, message)


@dataclass(frozen=True)
class Proof:
    tx_id: bytes
    who: Identity
    args: dict[str, Any]


@dataclass(frozen=True)
class Session:
    """A checked fetch: the reader may read `record_id` until `until_ms`."""

    identity: str
    record_id: str
    until_ms: int


class VaultService(vault_pb2_grpc.VaultServicer):
    def __init__(
        self,
        core: NodeCore,
        vault: Vault,
        network: PeerNetwork,
        clock: Callable[[], int],
    ) -> None:
        self.core = core
        self.vault = vault
        self.network = network
        self.clock = clock
        self.name = core.name
        self.institution = core.genesis.node(core.name).institution
        self.token: trio.lowlevel.TrioToken | None = None
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()
        self._lock = threading.Lock()
        network.handle(VAULT, self.handle_p2p)
        core.commit_listeners.append(self.on_commit)

    # -- chain state -----------------------------------------------------------------------

    def _state(self, contract: str, key: str) -> Any:
        raw = self.core.ledger.state_get(f"{contract}/{key}".encode())
        return None if raw is None else json.loads(raw)

    def _record(self, record_id: str) -> dict[str, Any]:
        if not isinstance(record_id, str) or not record_id:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "record_id is required")
        record: dict[str, Any] | None = self._state("records", "record/" + record_id)
        if record is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"no record {record_id!r} on chain")
        if record["status"] != "active":
            raise Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"record {record_id} is {record['status']}: its ciphertext and keys are gone",
            )
        return record

    def _patient_identity(self, pseudonym: str) -> str | None:
        entry = self._state("consortium", "patient/" + pseudonym)
        return None if entry is None else str(entry["identity"])

    def _check_recipient(self, identity: str) -> None:
        regulator = self._state("consortium", "role/regulator")
        if regulator is not None and regulator["identity"] == identity:
            raise denied("the regulator never receives a wrapped key")
        if self._state("consortium", "revoked/" + identity) is not None:
            raise denied(f"recipient {identity[:16]}… is revoked")
        reg = self._state("consortium", "identity/" + identity)
        if reg is None or reg["role"] not in ("doctor", "patient") or reg["status"] != "active":
            raise denied(
                f"recipient {identity[:16]}… is not a registered, active doctor or patient"
            )

    def _has_accessed(self, identity: str, record_id: str) -> bool:
        prefix = f"records/hist/record/{record_id}/".encode()
        for _key, raw in self.core.ledger.state_scan(prefix):
            entry = json.loads(raw)
            if entry["action"] == "access" and entry["actor"] == identity:
                return True
        return False

    # -- proofs ----------------------------------------------------------------------------

    def check_proof(self, raw: bytes, function: str) -> Proof:
        try:
            tx, who = self.core.checker.check_request(raw, "vault", function, self.clock())
            args = decode_args(tx)
        except Rejection as rej:
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED, f"proof refused: {rej.message}"
            ) from None
        return Proof(tx.tx_id, who, args)

    # -- upload ------------------------------------------------------------------------------

    def upload(self, parts: Iterator[vault_pb2.UploadPart]) -> vault_pb2.UploadReply:
        first = next(parts, None)
        if first is None or not first.proof:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "the first part carries the proof")
        proof = self.check_proof(first.proof, "upload")
        who = proof.who
        record_id = proof.args.get("record_id")
        if who.role != "doctor" or who.institution != self.institution:
            raise denied(f"only doctors of {self.institution} upload to this node's vault")
        reg = self._state("consortium", "identity/" + who.identity)
        if reg is None or reg["status"] != "active" or reg["role"] != "doctor":
            raise denied("the uploader is not a registered, active doctor")
        if not isinstance(record_id, str):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "args.record_id is required")
        if self._state("records", "record/" + record_id) is not None:
            raise Refused(grpc.StatusCode.ALREADY_EXISTS, f"record {record_id} is on chain")
        try:
            with self.vault.begin_upload(record_id) as upload:
                last: vault_pb2.UploadPart | None = None
                received = 0
                for part in parts:
                    if part.chunk:
                        received += len(part.chunk)
                        if received > MAX_UPLOAD_BYTES:
                            raise Refused(
                                grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"a record may hold at most {MAX_UPLOAD_BYTES} bytes",
                            )
                        upload.add_chunk(part.chunk)
                    if part.manifest:
                        last = part
                        break
                if last is None:
                    raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "the upload has no manifest")
                manifest = RecordManifest.from_json(last.manifest)
                wrapped = [WrappedKey.from_bytes(w) for w in last.wrapped_keys]
                if who.identity not in {w.recipient for w in wrapped}:
                    raise Refused(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "the upload must carry a wrapped key for its owner",
                    )
                for w in wrapped:
                    if w.recipient != who.identity:
                        self._check_recipient(w.recipient)
                upload.commit(manifest, wrapped)
        except RecordError as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        except OSError as exc:  # disk full, permissions: the staged upload is gone
            log.error("vault_upload_failed", record=record_id, error=str(exc), alert=True)
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED, f"the vault cannot store it: {exc.strerror}"
            ) from None
        log.info("vault_upload", record=record_id, chunks=manifest.chunk_count, keys=len(wrapped))
        return vault_pb2.UploadReply(
            record_id=record_id,
            content_hash=manifest.content_hash,
            vault_node=self.name,
            size=manifest.size,
        )

    # -- share (add wrapped keys) --------------------------------------------------------------

    def add_keys_local(self, proof: Proof, raws: list[bytes]) -> list[str]:
        record_id = str(proof.args.get("record_id", ""))
        record = self._record(record_id)
        if record["vault_node"] != self.name:
            raise Refused(grpc.StatusCode.NOT_FOUND, f"record {record_id} is not in this vault")
        if len(raws) > MAX_KEYS_PER_CALL:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_KEYS_PER_CALL} keys")
        me = proof.who.identity
        allowed = me == record["owner"] or me == self._patient_identity(record["patient"])
        if not allowed and not self._has_accessed(me, record_id):
            raise denied("only the owner, the patient, or a reader with a recorded access shares")
        try:
            wrapped = [WrappedKey.from_bytes(raw) for raw in raws]
            for w in wrapped:
                if w.record_id != record_id:
                    raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "a key for another record")
                self._check_recipient(w.recipient)
            for w in wrapped:
                self.vault.put_wrapped_key(w)
        except RecordError as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        added = [w.recipient for w in wrapped]
        log.info("vault_keys_added", record=record_id, count=len(added))
        return added

    # -- fetch ---------------------------------------------------------------------------------

    def _wait_for_tx(self, tx_id: bytes, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self.core.new_block:
            while self.core.ledger.tx_location(tx_id) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Refused(
                        grpc.StatusCode.FAILED_PRECONDITION,
                        "the access transaction is not committed on the vault node",
                    )
                self.core.new_block.wait(min(left, 0.5))

    def open_session(self, proof: Proof) -> Session:
        """Checks a fetch proof against the committed access it names."""
        with self._lock:
            session = self._sessions.get(proof.tx_id)
        now = self.clock()
        if session is not None and session.until_ms > now:
            return session
        record_id = str(proof.args.get("record_id", ""))
        access_hex = str(proof.args.get("access_tx", ""))
        try:
            access_id = bytes.fromhex(access_hex)
        except ValueError:
            access_id = b""
        if len(access_id) != 32:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "args.access_tx is a 64-hex tx id")
        self._wait_for_tx(access_id, TX_WAIT_S)
        ledger = self.core.ledger
        location = ledger.tx_location(access_id)
        block = ledger.block(location.height) if location else None
        results = ledger.results(location.height) if location else None
        if location is None or block is None or results is None:
            raise Refused(grpc.StatusCode.NOT_FOUND, "the access transaction is not on chain")
        result = results.results[location.index]
        tx = parse(block.txs[location.index], 1 << 30)
        if result.code != int(TxCode.VALID) or (tx.contract, tx.function) != ("records", "access"):
            raise denied("access_tx is not a valid, committed records.access")
        if sha256(tx.body.creator.certificate).hex() != proof.who.identity:
            raise denied("access_tx was made by another identity")
        if decode_args(tx).get("record_id") != record_id:
            raise denied("access_tx is for another record")
        header = ledger_pb2.BlockHeader.FromString(block.header)
        until = header.timestamp_ms + ACCESS_WINDOW_MS
        if until <= now:
            raise denied("access_tx is older than 10 minutes: commit a new access")
        self._record(record_id)
        basis = str(json.loads(result.result or b"{}").get("basis", ""))
        if basis.startswith("grant:"):
            grant = self._state("consent", "grant/" + basis[len("grant:") :])
            if grant is None or grant["status"] != "active" or grant["expires_at"] <= now:
                raise denied("the consent grant behind this access was revoked or expired")
        session = Session(proof.who.identity, record_id, until)
        with self._lock:
            self._sessions[proof.tx_id] = session
            while len(self._sessions) > SESSIONS:
                self._sessions.popitem(last=False)
        return session

    def header_local(self, proof: Proof) -> tuple[bytes, bytes]:
        session = self.open_session(proof)
        try:
            manifest = self.vault.manifest(session.record_id)
            wrapped = self.vault.get_wrapped_key(session.record_id, session.identity)
        except WrappedKeyNotFoundError:
            raise denied(
                "this vault holds no wrapped key for the caller: the owner or the patient "
                "must share the record with you (consent grant or referral)"
            ) from None
        except RecordNotFoundError as exc:
            raise Refused(grpc.StatusCode.NOT_FOUND, str(exc)) from None
        except RecordError as exc:
            raise Refused(grpc.StatusCode.DATA_LOSS, str(exc)) from None
        log.info("vault_fetch", record=session.record_id, reader=session.identity[:16])
        return manifest.to_json(), wrapped.to_bytes()

    def chunk_local(self, proof: Proof, index: int) -> bytes:
        session = self.open_session(proof)
        try:
            return self.vault.read_chunk(session.record_id, index)
        except RecordError as exc:
            raise Refused(grpc.StatusCode.DATA_LOSS, str(exc)) from None

    # -- between nodes -------------------------------------------------------------------------

    def _serve_request(self, request: vault_pb2.VaultRequest) -> vault_pb2.VaultReply:
        kind = request.kind
        if kind == vault_pb2.VaultRequest.ADD_KEYS:
            proof = self.check_proof(request.proof, "share")
            return vault_pb2.VaultReply(
                added=self.add_keys_local(proof, list(request.wrapped_keys))
            )
        proof = self.check_proof(request.proof, "fetch")
        if kind == vault_pb2.VaultRequest.HEADER:
            manifest, wrapped = self.header_local(proof)
            return vault_pb2.VaultReply(manifest=manifest, wrapped_key=wrapped)
        if kind == vault_pb2.VaultRequest.CHUNK:
            return vault_pb2.VaultReply(chunk=self.chunk_local(proof, request.index))
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "unknown vault request kind")

    def serve_request(self, payload: bytes) -> bytes:
        try:
            reply = self._serve_request(vault_pb2.VaultRequest.FromString(payload))
        except Refused as exc:
            code = exc.status.value[0]
            reply = vault_pb2.VaultReply(error=str(exc), status=code)
        except Exception as exc:  # a malformed request must not take the node down
            log.warning("vault_request_failed", error=str(exc), kind=type(exc).__name__)
            reply = vault_pb2.VaultReply(error=f"bad vault request: {exc}", status=3)
        return reply.SerializeToString()

    async def handle_p2p(self, peer: str, payload: bytes) -> bytes:
        return await trio.to_thread.run_sync(self.serve_request, payload)

    def remote(self, node: str, request: vault_pb2.VaultRequest) -> vault_pb2.VaultReply:
        """From a gRPC thread: ask the record's vault node, through the trio loop."""
        if self.token is None:
            raise Refused(grpc.StatusCode.UNAVAILABLE, "the node is starting")
        try:
            data = trio.from_thread.run(
                self.network.request,
                node,
                VAULT,
                request.SerializeToString(),
                REMOTE_TIMEOUT_S,
                trio_token=self.token,
            )
        except NetworkError as exc:
            raise Refused(
                grpc.StatusCode.UNAVAILABLE, f"the record's vault node {node} is unreachable: {exc}"
            ) from None
        reply = vault_pb2.VaultReply.FromString(data)
        if reply.error:
            raise Refused(_status(reply.status), f"{node}: {reply.error}")
        return reply

    # -- gRPC ------------------------------------------------------------------------------------

    def Upload(
        self, request_iterator: Iterator[vault_pb2.UploadPart], context: grpc.ServicerContext
    ) -> vault_pb2.UploadReply:
        try:
            return self.upload(request_iterator)
        except Refused as exc:
            context.abort(exc.status, str(exc))
            raise

    def AddKeys(
        self, request: vault_pb2.AddKeysRequest, context: grpc.ServicerContext
    ) -> vault_pb2.AddKeysReply:
        try:
            proof = self.check_proof(request.proof, "share")
            record = self._record(str(proof.args.get("record_id", "")))
            if record["vault_node"] == self.name:
                added = self.add_keys_local(proof, list(request.wrapped_keys))
            else:
                reply = self.remote(
                    record["vault_node"],
                    vault_pb2.VaultRequest(
                        kind=vault_pb2.VaultRequest.ADD_KEYS,
                        proof=request.proof,
                        wrapped_keys=request.wrapped_keys,
                    ),
                )
                added = list(reply.added)
            return vault_pb2.AddKeysReply(added=added)
        except Refused as exc:
            context.abort(exc.status, str(exc))
            raise

    def Fetch(
        self, request: vault_pb2.FetchRequest, context: grpc.ServicerContext
    ) -> Iterator[vault_pb2.FetchPart]:
        try:
            proof = self.check_proof(request.proof, "fetch")
            record = self._record(str(proof.args.get("record_id", "")))
            node = record["vault_node"]
            local = node == self.name
            if local:
                manifest_bytes, wrapped = self.header_local(proof)
            else:
                header = self.remote(
                    node,
                    vault_pb2.VaultRequest(kind=vault_pb2.VaultRequest.HEADER, proof=request.proof),
                )
                manifest_bytes, wrapped = header.manifest, header.wrapped_key
            yield vault_pb2.FetchPart(manifest=manifest_bytes, wrapped_key=wrapped)
            if request.header_only:
                return
            count = RecordManifest.from_json(manifest_bytes).chunk_count
            for index in range(count):
                if local:
                    chunk = self.chunk_local(proof, index)
                else:
                    chunk = self.remote(
                        node,
                        vault_pb2.VaultRequest(
                            kind=vault_pb2.VaultRequest.CHUNK, proof=request.proof, index=index
                        ),
                    ).chunk
                yield vault_pb2.FetchPart(chunk=chunk, index=index)
        except Refused as exc:
            context.abort(exc.status, str(exc))
        except RecordError as exc:
            context.abort(grpc.StatusCode.DATA_LOSS, str(exc))

    # -- erasure and revocation ------------------------------------------------------------------

    def on_commit(self, write: BlockWrite, _latencies: list[float]) -> None:
        data = write.results_bytes
        if b"erase" not in data and b"consent_revoked" not in data:
            return
        for result in ledger_pb2.BlockResults.FromString(data).results:
            for event in result.events:
                try:
                    self._apply_event(event)
                except (RecordError, OSError) as exc:
                    # reconcile() retries at the next start and every few minutes
                    log.error("vault_event_failed", name=event.name, error=str(exc), alert=True)

    def _apply_event(self, event: ledger_pb2.Event) -> None:
        payload = json.loads(event.data or b"{}")
        if event.contract == "records" and event.name == "erase":
            record_id = str(payload["record"])
            if self.vault.has(record_id):
                self.vault.erase(record_id)
                log.info("vault_erased", record=record_id, height=event.height)
        elif event.contract == "consent" and event.name == "consent_revoked":
            self._revoke(str(payload["grant"]))

    def _revoke(self, grant_id: str) -> None:
        grant = self._state("consent", "grant/" + grant_id)
        if grant is None or str(grant["grantee"]).startswith("institution:"):
            return
        grantee = str(grant["grantee"])
        if grant["records"] == "*":
            prefix = f"records/by_patient/{grant['patient']}/".encode()
            ids = [key[len(prefix) :].decode() for key, _ in self.core.ledger.state_scan(prefix)]
        else:
            ids = list(grant["records"])
        for record_id in ids:
            record = self._state("records", "record/" + record_id)
            if record is None or not self.vault.has(record_id) or grantee == record["owner"]:
                continue
            if grantee == self._patient_identity(record["patient"]):
                continue
            if self.vault.remove_key(record_id, grantee):
                log.info("vault_key_removed", record=record_id, grant=grant_id)

    def reconcile(self) -> dict[str, int]:
        """Make the vault agree with the chain: erase what the chain says is erased (a
        crash between commit and `on_commit`), drop uploads never registered on chain
        within ORPHAN_AFTER_MS. Runs at start and periodically."""
        erased = dropped = 0
        now = self.clock()
        for record_id in self.vault.record_ids():
            record = self._state("records", "record/" + record_id)
            if record is not None and record["status"] == "erased":
                erased += self.vault.erase(record_id)
            elif record is None and now - self.vault.stored_at_ms(record_id) > ORPHAN_AFTER_MS:
                dropped += self.vault.erase(record_id)
        if erased or dropped:
            log.info("vault_reconciled", erased=erased, orphans_dropped=dropped)
        return {"erased": erased, "orphans_dropped": dropped}

    async def run(self, interval_s: float = 300.0) -> None:
        while True:
            await trio.to_thread.run_sync(self.reconcile)
            await trio.sleep(interval_s)


def _status(value: int) -> grpc.StatusCode:
    for status in grpc.StatusCode:
        if status.value[0] == value:
            return status
    return grpc.StatusCode.UNKNOWN
