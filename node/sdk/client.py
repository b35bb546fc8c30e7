"""A synchronous Gateway client for integrators and the CLI.

ident = Identity.load("consortium/identities/hosp1-doctor1")
with Client("127.0.0.1:7050") as client:
    res = client.submit(ident, "kv", "put", {"key": "a", "value": 1}, wait=True)
    client.query(ident, "kv", "get", {"key": "a"})
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from medledger.v1 import gateway_pb2, gateway_pb2_grpc, ledger_pb2

from node import tx as txlib
from node.codes import TxCode, TxStatus
from node.crypto import keys
from node.crypto.certs import load_pem_certificate_der


class ClientError(Exception):
    """The node could not be reached or refused the call; the message says which."""


@dataclass(frozen=True)
class Identity:
    name: str
    key: keys.PrivateKey
    certificate_der: bytes
    folder: Path | None = None

    @property
    def id(self) -> str:
        """The on-chain identity: hex SHA-256 of the certificate (DER)."""
        return hashlib.sha256(self.certificate_der).hexdigest()

    @classmethod
    def load(cls, folder: str | Path) -> Identity:
        path = Path(folder)
        try:
            cert = (path / "cert.pem").read_bytes()
        except OSError as exc:
            raise ClientError(
                f"{path} is not an identity folder (needs key.pem and cert.pem): {exc.strerror}"
            ) from exc
        try:
            key = keys.load_private(path / "key.pem")
        except keys.KeyFileError as exc:
            raise ClientError(str(exc)) from exc
        return cls(path.name, key, load_pem_certificate_der(cert), path)


class TxFailed(ClientError):
    """A transaction that was refused or committed with a non-VALID code."""

    def __init__(self, result: SubmitResult) -> None:
        super().__init__(f"{result.status}: {result.code}: {result.message}")
        self.result = result


class QueryRefused(ClientError):
    """A query the node ran and refused (e.g. PERMISSION_DENIED): the answer is no."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"query refused: {code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SubmitResult:
    tx_id: str
    status: str
    code: str
    message: str
    height: int

    def to_json(self) -> dict[str, Any]:
        return {
            "tx_id": self.tx_id,
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "height": self.height,
        }


def submit_result(resp: gateway_pb2.SubmitResponse) -> SubmitResult:
    return SubmitResult(
        tx_id=resp.tx_id.hex(),
        status=TxStatus(resp.status).name.lower(),
        code=TxCode(resp.code).name,
        message=resp.message,
        height=resp.height,
    )


class Client:
    def __init__(
        self,
        address: str,
        *,
        tls_ca: Path | None = None,
        tls_identity: tuple[Path, Path] | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        options = [
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
        if tls_ca is not None:
            key = cert = None
            if tls_identity is not None:
                cert, key = tls_identity[0].read_bytes(), tls_identity[1].read_bytes()
            creds = grpc.ssl_channel_credentials(tls_ca.read_bytes(), key, cert)
            self.channel = grpc.secure_channel(address, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)
        self._chain_id: bytes | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def _call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout or self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code()
            detail = exc.details()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise ClientError(f"cannot reach a node at {self.address}: {detail}") from exc
            raise ClientError(f"{code.name}: {detail}") from exc

    # -- reads ---------------------------------------------------------------------------

    def status(self) -> gateway_pb2.NodeStatus:
        status: gateway_pb2.NodeStatus = self._call(
            self.stub.GetStatus, gateway_pb2.GetStatusRequest()
        )
        self._chain_id = status.chain_id
        return status

    def chain_id(self) -> bytes:
        if self._chain_id is None:
            self.status()
        assert self._chain_id is not None
        return self._chain_id

    def block(self, height: int) -> gateway_pb2.BlockInfo:
        info: gateway_pb2.BlockInfo = self._call(
            self.stub.GetBlock, gateway_pb2.GetBlockRequest(height=height)
        )
        return info

    def transaction(self, tx_id: bytes) -> gateway_pb2.TransactionInfo:
        info: gateway_pb2.TransactionInfo = self._call(
            self.stub.GetTransaction, gateway_pb2.GetTransactionRequest(tx_id=tx_id)
        )
        return info

    def stream_blocks(self, from_height: int) -> Iterator[gateway_pb2.BlockInfo]:
        try:
            yield from self.stub.StreamBlocks(
                gateway_pb2.StreamBlocksRequest(from_height=from_height)
            )
        except grpc.RpcError as exc:
            raise ClientError(f"block stream ended: {exc.details()}") from exc

    def stream_events(
        self, from_height: int, contract: str = "", identity: Identity | None = None
    ) -> Iterator[ledger_pb2.Event]:
        """Events from `from_height` on, following the chain. Signed by `identity`, the
        node shows what that identity's role may see (docs/integrators.md); unsigned
        subscriptions work only on nodes with api.unsigned_events."""
        signed = b""
        if identity is not None:
            signed = self.build(identity, "gateway", "events", {}, ttl_ms=60_000)
        request = gateway_pb2.StreamEventsRequest(
            from_height=from_height, contract=contract, signed_request=signed
        )
        try:
            yield from self.stub.StreamEvents(request)
        except grpc.RpcError as exc:
            raise ClientError(f"event stream ended: {exc.details()}") from exc

    # -- transactions --------------------------------------------------------------------

    def build(
        self,
        identity: Identity,
        contract: str,
        function: str,
        args: Mapping[str, Any],
        ttl_ms: int = 120_000,
    ) -> bytes:
        return txlib.build(
            chain_id=self.chain_id(),
            contract=contract,
            function=function,
            args=args,
            key=identity.key,
            certificate_der=identity.certificate_der,
            now_ms=int(time.time() * 1000),
            ttl_ms=ttl_ms,
        )

    def submit_raw(self, raw: bytes, wait: bool = False, wait_timeout_ms: int = 0) -> SubmitResult:
        timeout = max(self.timeout_s, wait_timeout_ms / 1000 + 5)
        resp = self._call(
            self.stub.Submit,
            gateway_pb2.SubmitRequest(signed_tx=raw, wait=wait, wait_timeout_ms=wait_timeout_ms),
            timeout=timeout,
        )
        return submit_result(resp)

    def submit(
        self,
        identity: Identity,
        contract: str,
        function: str,
        args: Mapping[str, Any],
        wait: bool = False,
    ) -> SubmitResult:
        return self.submit_raw(self.build(identity, contract, function, args), wait=wait)

    def submit_batch(self, raws: list[bytes]) -> list[SubmitResult]:
        resp = self._call(self.stub.SubmitBatch, gateway_pb2.SubmitBatchRequest(signed_txs=raws))
        return [submit_result(r) for r in resp.responses]

    def submit_stream(self, batches: Iterator[list[bytes]]) -> Iterator[list[SubmitResult]]:
        """Admission outcomes of each batch, in order, over one long-lived stream."""
        requests = (gateway_pb2.SubmitBatchRequest(signed_txs=b) for b in batches)
        try:
            for resp in self.stub.SubmitStream(requests):
                yield [submit_result(r) for r in resp.responses]
        except grpc.RpcError as exc:
            raise ClientError(f"submit stream ended: {exc.details()}") from exc

    def call(
        self, identity: Identity, contract: str, function: str, args: Mapping[str, Any]
    ) -> Any:
        """Submit, wait for the commit, and return the function's result; raises
        TxFailed with the code and message when it is not committed as VALID."""
        res = self.submit(identity, contract, function, args, wait=True)
        return self.result_of(res)

    def result_of(self, res: SubmitResult) -> Any:
        if res.status != "committed" or res.code != "VALID":
            raise TxFailed(res)
        info = self.transaction(bytes.fromhex(res.tx_id))
        return json.loads(info.result) if info.result else None

    def submit_all(self, raws: list[bytes], timeout_s: float = 60.0) -> list[SubmitResult]:
        """Submit a batch, then wait until each is committed or refused (in order)."""
        admitted = self.submit_batch(raws)
        return [self.wait_for(r, timeout_s) for r in admitted]

    def wait_for(self, res: SubmitResult, timeout_s: float = 60.0) -> SubmitResult:
        """Poll until a pending transaction is committed or invalid, with a deadline."""
        deadline = time.monotonic() + timeout_s
        delay = 0.02
        while res.status == "pending":
            if time.monotonic() > deadline:
                raise ClientError(
                    f"transaction {res.tx_id[:16]}… still pending after {timeout_s} s"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
            info = self.transaction(bytes.fromhex(res.tx_id))
            res = SubmitResult(
                res.tx_id,
                TxStatus(info.status).name.lower(),
                TxCode(info.code).name,
                info.message,
                info.height,
            )
        return res

    def query(
        self, identity: Identity, contract: str, function: str, args: Mapping[str, Any]
    ) -> Any:
        raw = self.build(identity, contract, function, args, ttl_ms=60_000)
        resp: gateway_pb2.QueryResponse = self._call(
            self.stub.Query, gateway_pb2.QueryRequest(signed_query=raw)
        )
        if resp.code != int(TxCode.VALID):
            raise QueryRefused(TxCode(resp.code).name, resp.message)
        return json.loads(resp.result) if resp.result else None
