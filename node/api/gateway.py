"""medledger.v1.Gateway handlers.

grpcio has no trio support (NOTES.md), so the server is grpcio's thread-pool server and
each handler runs in a pool thread. Handlers only touch `NodeCore`, which is thread-safe;
the one thing they ask of the trio loop (waking the orderer) goes through
`TrioToken.run_sync_soon`, which never blocks the loop.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
from collections.abc import Callable, Iterator

import grpc
from medledger.v1 import gateway_pb2, gateway_pb2_grpc, ledger_pb2

import node
from node.api.event_filter import event_filter
from node.clock import now_ms
from node.codes import TxCode, TxStatus
from node.core import NodeCore, TxOutcome
from node.crypto.hashing import sha256
from node.tx import Rejection, parse

# Responses of the newest blocks kept for StreamBlocks subscribers (and GetBlock); they
# follow the tip together, so a few suffice (a block may hold 2,000 transactions).
RECENT_BLOCKS = 8


def _response(outcome: TxOutcome) -> gateway_pb2.SubmitResponse:
    return gateway_pb2.SubmitResponse(
        tx_id=outcome.tx_id,
        status=int(outcome.status),  # type: ignore[arg-type]
        code=int(outcome.code),  # type: ignore[arg-type]
        message=outcome.message,
        height=outcome.height,
    )


class Gateway(gateway_pb2_grpc.GatewayServicer):
    def __init__(
        self,
        core: NodeCore,
        wait_timeout_ms: int,
        role: Callable[[], tuple[str, str, int, list[str]]],
        clock: Callable[[], int] = now_ms,
        unsigned_events: bool = False,
    ) -> None:
        self.core = core
        self.wait_timeout_ms = wait_timeout_ms
        self.role = role
        self.clock = clock
        self.unsigned_events = unsigned_events
        self._recent_blocks: dict[int, gateway_pb2.BlockInfo] = {}

    def Submit(
        self, request: gateway_pb2.SubmitRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.SubmitResponse:
        outcome, future = self.core.submit(request.signed_tx, self.clock(), wait=request.wait)
        if future is not None:
            timeout = (request.wait_timeout_ms or self.wait_timeout_ms) / 1000
            try:
                outcome = future.result(timeout=timeout)
            except concurrent.futures.TimeoutError:
                outcome = TxOutcome(
                    outcome.tx_id,
                    TxStatus.PENDING,
                    TxCode.VALID,
                    "not committed within the wait timeout; still pending",
                )
        return _response(outcome)

    def SubmitBatch(
        self, request: gateway_pb2.SubmitBatchRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.SubmitBatchResponse:
        now = self.clock()
        return gateway_pb2.SubmitBatchResponse(
            responses=[_response(self.core.submit(raw, now)[0]) for raw in request.signed_txs]
        )

    def SubmitStream(
        self,
        request_iterator: Iterator[gateway_pb2.SubmitBatchRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[gateway_pb2.SubmitBatchResponse]:
        for request in request_iterator:
            yield self.SubmitBatch(request, context)

    def GetTransaction(
        self, request: gateway_pb2.GetTransactionRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.TransactionInfo:
        if len(request.tx_id) != 32:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "tx_id must be 32 bytes (SHA-256)")
        outcome = self.core.status_of(request.tx_id)
        info = gateway_pb2.TransactionInfo(
            tx_id=request.tx_id,
            status=int(outcome.status),  # type: ignore[arg-type]
            code=int(outcome.code),  # type: ignore[arg-type]
            height=outcome.height,
            message=outcome.message,
        )
        location = self.core.ledger.tx_location(request.tx_id)
        if location is not None:
            block = self.core.ledger.block(location.height)
            results = self.core.ledger.results(location.height)
            if block is not None:
                info.signed_tx = block.txs[location.index]
                info.index = location.index
            if results is not None:
                info.result = results.results[location.index].result
                info.message = results.results[location.index].message
        return info

    def Query(
        self, request: gateway_pb2.QueryRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.QueryResponse:
        try:
            tx = parse(request.signed_query, self.core.checker.rules.max_tx_bytes)
        except Rejection as rej:
            return gateway_pb2.QueryResponse(code=int(rej.code), message=rej.message)  # type: ignore[arg-type]
        height = self.core.ledger.tip.height
        outcome = self.core.executor.query(tx, self.clock())
        return gateway_pb2.QueryResponse(
            code=int(outcome.code),  # type: ignore[arg-type]
            message=outcome.message,
            result=outcome.result if outcome.code == TxCode.VALID else b"",
            height=height,
        )

    def _block_info(self, height: int) -> gateway_pb2.BlockInfo | None:
        """The response for a committed block, built once for all the subscribers that
        follow the chain (a committed block never changes; callers only read it)."""
        info = self._recent_blocks.get(height)
        if info is not None:
            return info
        ledger = self.core.ledger
        data = ledger.block_bytes(height)
        if data is None:
            return None
        block = ledger_pb2.Block.FromString(data)
        info = gateway_pb2.BlockInfo(
            block=block, hash=sha256(block.header), results=ledger.results(height)
        )
        recent = self._recent_blocks
        if len(recent) >= RECENT_BLOCKS:
            # Oldest first; another handler thread may have evicted it already.
            with contextlib.suppress(KeyError, StopIteration, RuntimeError):
                del recent[next(iter(recent))]
        recent[height] = info
        return info

    def GetBlock(
        self, request: gateway_pb2.GetBlockRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.BlockInfo:
        info = self._block_info(request.height)
        if info is None:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no block at height {request.height}; the chain is at height "
                f"{self.core.ledger.tip.height}",
            )
        return info

    def _follow(self, start: int, context: grpc.ServicerContext) -> Iterator[int]:
        """Heights from `start` on, waiting for new blocks, until the client goes away or
        the node stops."""
        height = start
        while context.is_active() and not self.core.closing:
            if height <= self.core.ledger.tip.height:
                yield height
                height += 1
                continue
            with self.core.new_block:
                if height > self.core.ledger.tip.height and not self.core.closing:
                    self.core.new_block.wait(timeout=1.0)

    def StreamBlocks(
        self, request: gateway_pb2.StreamBlocksRequest, context: grpc.ServicerContext
    ) -> Iterator[gateway_pb2.BlockInfo]:
        for height in self._follow(request.from_height, context):
            info = self._block_info(height)
            if info is not None:
                yield info

    def _subscriber(
        self, request: gateway_pb2.StreamEventsRequest
    ) -> tuple[Callable[[bytes], bool] | None, str]:
        """The event predicate of a subscription, or None and why it is refused."""
        if not request.signed_request:
            if self.unsigned_events:
                return (lambda _data: True), ""
            return None, "sign the subscription (signed_request: gateway.events)"
        try:
            _tx, who = self.core.checker.check_request(
                request.signed_request, "gateway", "events", self.clock()
            )
        except Rejection as rej:
            return None, f"signed_request refused: {rej.code.name}: {rej.message}"
        raw = self.core.ledger.state_get(f"consortium/identity/{who.identity}".encode())
        return event_filter(who, json.loads(raw) if raw else None), ""

    def StreamEvents(
        self, request: gateway_pb2.StreamEventsRequest, context: grpc.ServicerContext
    ) -> Iterator[ledger_pb2.Event]:
        visible, problem = self._subscriber(request)
        if visible is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, problem)
            return
        for height in self._follow(request.from_height, context):
            results = self.core.ledger.results(height)
            if results is None:
                continue
            # Transactions' events, then the end-of-block sweep's (e.g. referral_fail).
            for result in [*results.results, results.end_of_block]:
                for event in result.events:
                    if request.contract and event.contract != request.contract:
                        continue
                    if visible(event.data):
                        yield event

    def GetStatus(
        self, request: gateway_pb2.GetStatusRequest, context: grpc.ServicerContext
    ) -> gateway_pb2.NodeStatus:
        tip = self.core.ledger.tip
        role, leader, term, peers = self.role()
        return gateway_pb2.NodeStatus(
            node=self.core.name,
            height=tip.height,
            last_block_hash=tip.hash,
            role=role,
            leader=leader,
            term=term,
            peers=peers,
            chain_id=self.core.genesis.chain_id,
            mempool_size=len(self.core.mempool),
            version=node.__version__,
        )
