"""Commit events for one client: a StreamBlocks subscription to the node the client
submits to, opened at the current height before anything is sent. Each block's
transactions are matched by their exact bytes (the node stores a SignedTx as received),
so no transaction is parsed here, and the block's result code says committed or invalid."""

from __future__ import annotations

import threading
import time

import grpc
from medledger.v1 import gateway_pb2, gateway_pb2_grpc

from perf.suite.tracker import Tracker


class BlockListener:
    def __init__(
        self,
        stub: gateway_pb2_grpc.GatewayStub,
        from_height: int,
        index_of: dict[bytes, int],
        tracker: Tracker,
    ) -> None:
        self._call = stub.StreamBlocks(gateway_pb2.StreamBlocksRequest(from_height=from_height))
        self._index_of = index_of
        self._tracker = tracker
        self.blocks = 0
        self.error = ""
        self._thread = threading.Thread(target=self._run, name="block-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        index_of, finish = self._index_of, self._tracker.finish
        try:
            for info in self._call:
                now = time.monotonic()
                self.blocks += 1
                results = info.results.results
                for i, raw in enumerate(info.block.txs):
                    index = index_of.get(raw)
                    if index is not None:
                        finish(index, results[i].code if i < len(results) else 0, now)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = f"block stream ended: {exc.code().name}: {exc.details()}"

    def stop(self) -> None:
        self._call.cancel()  # type: ignore[no-untyped-call]
        self._thread.join(timeout=5)
