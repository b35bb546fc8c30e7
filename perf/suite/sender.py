"""The three submit modes (and signed queries), each driving one client's schedule of
pre-signed transactions through the public Gateway API.

unary  - one `Submit` (or `Query`) per transaction, as a non-blocking call future, so
         that a slow answer does not delay the next send (open loop)
batch  - the transactions due within one tick in one `SubmitBatch` call future
stream - the same batches as messages of one long-lived `SubmitStream`
"""

from __future__ import annotations

import bisect
import collections
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from medledger.v1 import gateway_pb2, gateway_pb2_grpc

from perf.suite.schedule import Schedule
from perf.suite.tracker import RPC_ERROR, Tracker, rpc_failure
from perf.suite.workloads import QUERY

PENDING = 1  # medledger.v1.TxStatus.PENDING: admitted


def _rpc_code(exc: grpc.RpcError) -> int:
    status = exc.code() if callable(getattr(exc, "code", None)) else None
    return rpc_failure(status.value[0]) if isinstance(status, grpc.StatusCode) else RPC_ERROR


class Sender:
    def __init__(
        self,
        stub: gateway_pb2_grpc.GatewayStub,
        raws: list[bytes],
        kinds: list[int],
        schedule: Schedule,
        tracker: Tracker,
        batch_max: int,
        tick_s: float,
    ) -> None:
        self.stub = stub
        self.raws = raws
        self.kinds = kinds
        self.schedule = schedule
        self.tracker = tracker
        self.batch_max = batch_max
        self.tick_s = tick_s

    # -- pacing --------------------------------------------------------------------------

    def _batches(self, t0: float, max_len: int) -> Iterator[tuple[int, int]]:
        """[start, stop) ranges of due transactions, sent as their time comes, until the
        schedule or the deadline ends."""
        offsets, window = self.schedule.offsets, self.schedule.window
        deadline = t0 + self.schedule.deadline_s
        nxt = 0
        while nxt < len(offsets):
            now = time.monotonic()
            if now >= deadline:
                return
            due = offsets[nxt]
            if t0 + due > now:
                time.sleep(min(t0 + due - now, self.tick_s, deadline - now))
                continue
            stop = bisect.bisect_right(offsets, now - t0, nxt, min(len(offsets), nxt + max_len))
            if window:
                self.tracker.wait_window(window, deadline)
                room = window - self.tracker.in_flight()
                if room <= 0:
                    continue
                stop = min(stop, nxt + room)
            yield nxt, stop
            nxt = stop

    # -- modes ---------------------------------------------------------------------------

    def run(self, mode: str, t0: float) -> None:
        if mode == "unary":
            self._unary(t0)
        elif mode == "batch":
            self._batch(t0)
        elif mode == "stream":
            self._stream(t0)
        else:
            raise ValueError(f"unknown submit mode {mode!r}")

    def _admission(self, start: int, stop: int) -> Callable[[Any], None]:
        tracker = self.tracker

        def done(future: Any) -> None:
            now = time.monotonic()
            try:
                responses = future.result().responses
            except grpc.RpcError as exc:
                for i in range(start, stop):
                    tracker.finish(i, _rpc_code(exc), now)
                return
            for offset, resp in enumerate(responses):
                if resp.status != PENDING:
                    tracker.finish(start + offset, int(resp.code), now)

        return done

    def _unary(self, t0: float) -> None:
        tracker, stub = self.tracker, self.stub
        for start, stop in self._batches(t0, self.batch_max):
            for i in range(start, stop):
                tracker.mark_sent(i, i + 1, time.monotonic())
                if self.kinds[i] == QUERY:
                    query = gateway_pb2.QueryRequest(signed_query=self.raws[i])
                    stub.Query.future(query).add_done_callback(self._query_done(i))
                else:
                    submit = gateway_pb2.SubmitRequest(signed_tx=self.raws[i])
                    stub.Submit.future(submit).add_done_callback(self._submit_done(i))

    def _submit_done(self, index: int) -> Callable[[Any], None]:
        def done(future: Any) -> None:
            now = time.monotonic()
            try:
                resp = future.result()
            except grpc.RpcError as exc:
                self.tracker.finish(index, _rpc_code(exc), now)
                return
            if resp.status != PENDING:
                self.tracker.finish(index, int(resp.code), now)

        return done

    def _query_done(self, index: int) -> Callable[[Any], None]:
        def done(future: Any) -> None:
            now = time.monotonic()
            try:
                code = int(future.result().code)
            except grpc.RpcError as exc:
                code = _rpc_code(exc)
            self.tracker.finish(index, code, now)

        return done

    def _batch(self, t0: float) -> None:
        for start, stop in self._batches(t0, self.batch_max):
            self.tracker.mark_sent(start, stop, time.monotonic())
            fut = self.stub.SubmitBatch.future(
                gateway_pb2.SubmitBatchRequest(signed_txs=self.raws[start:stop])
            )
            fut.add_done_callback(self._admission(start, stop))

    def _stream(self, t0: float) -> None:
        sent: collections.deque[tuple[int, int]] = collections.deque()
        lock = threading.Lock()

        def requests() -> Iterator[gateway_pb2.SubmitBatchRequest]:
            for start, stop in self._batches(t0, self.batch_max):
                with lock:
                    sent.append((start, stop))
                self.tracker.mark_sent(start, stop, time.monotonic())
                yield gateway_pb2.SubmitBatchRequest(signed_txs=self.raws[start:stop])

        call = self.stub.SubmitStream(requests())
        try:
            for resp in call:
                now = time.monotonic()
                with lock:
                    start, stop = sent.popleft()
                for offset, item in enumerate(resp.responses):
                    if item.status != PENDING:
                        self.tracker.finish(start + offset, int(item.code), now)
        except grpc.RpcError as exc:
            now = time.monotonic()
            with lock:
                lost = list(sent)
            for start, stop in lost:
                for i in range(start, stop):
                    self.tracker.finish(i, _rpc_code(exc), now)
