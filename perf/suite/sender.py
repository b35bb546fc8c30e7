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

from perf.suite.referral import Chains
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
        chains: Chains | None = None,
        dependents_drain_s: float = 0.0,
    ) -> None:
        self.stub = stub
        self.raws = raws
        self.kinds = kinds
        self.schedule = schedule
        self.tracker = tracker
        self.batch_max = batch_max
        self.tick_s = tick_s
        self.chains = chains
        self.dependents_drain_s = dependents_drain_s

    # -- pacing --------------------------------------------------------------------------

    def _batches(self, t0: float, max_len: int) -> Iterator[range | list[int]]:
        """Indices of due transactions, sent as their time comes, until the schedule or
        the deadline ends: ranges of the schedule, and with chains (the referral
        workload) the scheduled ones plus the dependents their predecessors released."""
        if self.chains is not None:
            yield from self._chained(t0, max_len, self.chains)
            return
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
            yield range(nxt, stop)
            nxt = stop

    def _chained(self, t0: float, max_len: int, chains: Chains) -> Iterator[range | list[int]]:
        """Scheduled transactions (a chain's first) on schedule until the round's deadline,
        and every released dependent at the next tick, until no chain can release more or
        the drain has passed too."""
        offsets = self.schedule.offsets
        deadline = t0 + self.schedule.deadline_s
        last_call = deadline + self.dependents_drain_s
        nxt = 0
        while True:
            now = time.monotonic()
            scheduled = nxt < len(offsets) and now < deadline
            if now >= last_call or not (scheduled or chains.open()):
                return
            batch: list[int] = []
            if scheduled and t0 + offsets[nxt] <= now:
                stop = bisect.bisect_right(offsets, now - t0, nxt, min(len(offsets), nxt + max_len))
                batch.extend(range(nxt, stop))
                nxt = stop
            batch.extend(chains.take(max_len - len(batch)))
            if batch:
                chains.on_sent(batch)
                yield batch
                continue
            wake = self.tick_s
            if scheduled:
                wake = min(wake, max(0.0, t0 + offsets[nxt] - now))
            time.sleep(wake)

    def _raws(self, indices: range | list[int]) -> list[bytes]:
        if isinstance(indices, range):
            return self.raws[indices.start : indices.stop]
        return [self.raws[i] for i in indices]

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

    def _admission(self, indices: range | list[int]) -> Callable[[Any], None]:
        tracker = self.tracker

        def done(future: Any) -> None:
            now = time.monotonic()
            try:
                responses = future.result().responses
            except grpc.RpcError as exc:
                for i in indices:
                    tracker.finish(i, _rpc_code(exc), now)
                return
            for offset, resp in enumerate(responses):
                if resp.status != PENDING:
                    tracker.finish(indices[offset], int(resp.code), now)

        return done

    def _unary(self, t0: float) -> None:
        tracker, stub = self.tracker, self.stub
        for indices in self._batches(t0, self.batch_max):
            for i in indices:
                tracker.mark_sent(range(i, i + 1), time.monotonic())
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
        for indices in self._batches(t0, self.batch_max):
            self.tracker.mark_sent(indices, time.monotonic())
            fut = self.stub.SubmitBatch.future(
                gateway_pb2.SubmitBatchRequest(signed_txs=self._raws(indices))
            )
            fut.add_done_callback(self._admission(indices))

    def _stream(self, t0: float) -> None:
        sent: collections.deque[range | list[int]] = collections.deque()
        lock = threading.Lock()

        def requests() -> Iterator[gateway_pb2.SubmitBatchRequest]:
            for indices in self._batches(t0, self.batch_max):
                with lock:
                    sent.append(indices)
                self.tracker.mark_sent(indices, time.monotonic())
                yield gateway_pb2.SubmitBatchRequest(signed_txs=self._raws(indices))

        call = self.stub.SubmitStream(requests())
        try:
            for resp in call:
                now = time.monotonic()
                with lock:
                    indices = sent.popleft()
                for offset, item in enumerate(resp.responses):
                    if item.status != PENDING:
                        self.tracker.finish(indices[offset], int(item.code), now)
        except grpc.RpcError as exc:
            now = time.monotonic()
            with lock:
                lost = list(sent)
            for indices in lost:
                for i in indices:
                    self.tracker.finish(i, _rpc_code(exc), now)
