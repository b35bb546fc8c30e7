"""The node's shared state between the gRPC handler threads and the trio tasks.

gRPC handlers run in threads (grpcio has no trio support, NOTES.md); they parse and verify
a transaction in their own thread, then take `lock` only to touch the mempool. The
orderer (a trio task) takes batches out and applies them in a worker thread. `lock`
guards the mempool, the in-flight set and the waiters; the ledger is only written by the
one applying thread.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
from collections.abc import Callable, Container
from dataclasses import dataclass

import structlog
from google.protobuf.message import DecodeError
from medledger.v1 import ledger_pb2

from node.codes import TxCode, TxStatus
from node.execution.executor import BlockExecutor
from node.genesis import Genesis
from node.ledger.layout import RAFT_APPLIED
from node.ledger.ledger import BlockWrite, Ledger
from node.mempool.mempool import Mempool, PendingTx
from node.tx import ParsedTx, Rejection, TxChecker, parse

log = structlog.get_logger("medledger.node")


@dataclass(frozen=True)
class TxOutcome:
    tx_id: bytes
    status: TxStatus
    code: TxCode
    message: str = ""
    height: int = 0


class NodeCore:
    def __init__(
        self,
        name: str,
        genesis: Genesis,
        ledger: Ledger,
        executor: BlockExecutor,
        checker: TxChecker,
        mempool: Mempool,
        wake_orderer: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name
        self.genesis = genesis
        self.ledger = ledger
        self.executor = executor
        self.checker = checker
        self.mempool = mempool
        self.wake_orderer = wake_orderer
        self.lock = threading.Lock()
        # tx id -> admission time (ms), from take_batch until its block is on disk.
        self._inflight: dict[bytes, int] = {}
        # Called after each block is on disk with the block and the admission-to-commit
        # latencies (s) of the transactions this node admitted (metrics hook).
        self.commit_listeners: list[Callable[[BlockWrite, list[float]], None]] = []
        self._waiters: dict[bytes, list[concurrent.futures.Future[TxOutcome]]] = {}
        self.new_block = threading.Condition()
        self.closing = False
        self.max_block_txs = int(genesis.config.params.max_block_txs)

    # -- admission (gRPC threads) --------------------------------------------------------

    def submit(
        self, raw: bytes, now_ms: int, wait: bool = False, local: bool = True
    ) -> tuple[TxOutcome, concurrent.futures.Future[TxOutcome] | None]:
        """Admission checks, then the mempool. Never raises: a refusal is an outcome with
        status INVALID and the specific code."""
        tx_id = b""
        try:
            if self.closing:
                raise Rejection(TxCode.SHUTTING_DOWN, "node is shutting down; submit elsewhere")
            tx = parse(raw, self.checker.rules.max_tx_bytes)
            tx_id = tx.tx_id
            # A copy of what is pending here (gossip brings each transaction from more
            # than one peer, forwarding once more) is refused before the checks and the
            # ledger lookup; _enqueue looks again under the lock.
            if tx_id in self.mempool:
                raise Rejection(TxCode.DUPLICATE_TXID, "transaction is already pending")
            if tx_id in self._inflight:
                raise Rejection(TxCode.DUPLICATE_TXID, "transaction is already being ordered")
            location = self.ledger.tx_location(tx.tx_id)
            if location is not None:
                raise Rejection(
                    TxCode.DUPLICATE_TXID,
                    f"transaction already in block {location.height} "
                    f"(code {TxCode(location.code).name})",
                )
            identity = self.checker.check(tx, now_ms)
            return self._enqueue(tx, identity.institution, now_ms, wait, local)
        except Rejection as rej:
            if rej.code is not TxCode.DUPLICATE_TXID:  # copies are routine: not logged
                log.debug("tx_rejected", code=rej.code.name, reason=rej.message)
            return TxOutcome(tx_id, TxStatus.INVALID, rej.code, rej.message), None

    def _enqueue(
        self, tx: ParsedTx, institution: str, now_ms: int, wait: bool, local: bool
    ) -> tuple[TxOutcome, concurrent.futures.Future[TxOutcome] | None]:
        pending = PendingTx(tx.tx_id, tx.raw, institution, tx.body.expires_at_ms, now_ms, local)
        with self.lock:
            if self.closing:
                raise Rejection(TxCode.SHUTTING_DOWN, "node is shutting down; submit elsewhere")
            if tx.tx_id in self._inflight:
                raise Rejection(TxCode.DUPLICATE_TXID, "transaction is already being ordered")
            # Checked again under the lock: the tx may have committed since the first look.
            if self.ledger.tx_location(tx.tx_id) is not None:
                raise Rejection(TxCode.DUPLICATE_TXID, "transaction already committed")
            self.mempool.add(pending)
            future: concurrent.futures.Future[TxOutcome] | None = None
            if wait:
                future = concurrent.futures.Future()
                self._waiters.setdefault(tx.tx_id, []).append(future)
            first = len(self.mempool) == 1 or len(self.mempool) >= self.max_block_txs
        if first:
            self.wake_orderer()
        return TxOutcome(tx.tx_id, TxStatus.PENDING, TxCode.VALID), future

    def fresh_local(self, limit: int, seen: Container[bytes]) -> list[tuple[bytes, bytes]]:
        """(tx id, bytes) of what this node's clients gave it since the newest one in
        `seen` (for gossip and forwarding), oldest first."""
        with self.lock:
            return self.mempool.newest_local(limit, seen)

    def pending_txs(self, limit: int, newest: bool = False) -> list[PendingTx]:
        """Up to `limit` pending transactions, oldest first (or newest first), left in
        the mempool (for the forwarder, which needs their origin and age)."""
        with self.lock:
            return self.mempool.newest(limit) if newest else self.mempool.oldest(limit)

    def expire(self, now_ms: int) -> None:
        """Drop pending transactions that expired, answering their waiters."""
        with self.lock:
            expired = self.mempool.drop_expired(now_ms)
            dropped = [(tx.tx_id, self._waiters.pop(tx.tx_id, [])) for tx in expired]
        for tx_id, futures in dropped:
            outcome = TxOutcome(tx_id, TxStatus.INVALID, TxCode.EXPIRED, "expired while pending")
            for future in futures:
                future.set_result(outcome)

    def drop(self, tx_id: bytes, code: TxCode, message: str) -> None:
        """A pending transaction that can never commit: remove it, answer its waiters."""
        with self.lock:
            self.mempool.remove(tx_id)
            futures = self._waiters.pop(tx_id, [])
        for future in futures:
            future.set_result(TxOutcome(tx_id, TxStatus.INVALID, code, message))

    def status_of(self, tx_id: bytes) -> TxOutcome:
        location = self.ledger.tx_location(tx_id)
        if location is not None:
            code = TxCode(location.code)
            status = TxStatus.COMMITTED if code == TxCode.VALID else TxStatus.INVALID
            return TxOutcome(tx_id, status, code, height=location.height)
        with self.lock:
            if tx_id in self.mempool or tx_id in self._inflight:
                return TxOutcome(tx_id, TxStatus.PENDING, TxCode.VALID)
        return TxOutcome(tx_id, TxStatus.UNKNOWN, TxCode.VALID, "this node has not seen it")

    # -- ordering (trio task + worker thread) --------------------------------------------

    def take_batch(self, now_ms: int, max_txs: int, max_bytes: int) -> list[PendingTx]:
        with self.lock:
            batch, expired = self.mempool.take(max_txs, max_bytes, now_ms)
            self._inflight.update((tx.tx_id, tx.received_ms) for tx in batch)
            dropped = [(tx.tx_id, self._waiters.pop(tx.tx_id, [])) for tx in expired]
        for tx_id, futures in dropped:
            outcome = TxOutcome(tx_id, TxStatus.INVALID, TxCode.EXPIRED, "expired while pending")
            for future in futures:
                future.set_result(outcome)
        return batch

    def requeue(self, batch: list[PendingTx]) -> None:
        """Put a batch that may never commit back at the head of the mempool."""
        with self.lock:
            for tx in batch:
                self._inflight.pop(tx.tx_id, None)
                if self.ledger.tx_location(tx.tx_id) is None and tx.tx_id not in self.mempool:
                    self.mempool.restore(tx)

    def precheck(self, entry_data: bytes) -> None:
        """Parse the transactions of an appended (not yet committed) Raft entry and verify
        their signatures, so that executing its block finds both done (worker thread; a
        follower's transactions that came by Raft before gossip). Decides nothing."""
        limit = self.checker.rules.max_tx_bytes
        try:
            txs = ledger_pb2.Batch.FromString(entry_data).txs
        except DecodeError:
            return  # applying it will say what is wrong
        for raw in txs:
            try:
                tx = parse(raw, limit)
            except Rejection:
                continue
            self.checker.preverify(tx)

    def apply_entry(
        self, batch: ledger_pb2.Batch, term: int, index: int, now_ms: int
    ) -> BlockWrite:
        """Derive, execute and durably commit the block of a committed Raft entry, with
        the applied index in the same write batch (worker thread)."""
        write = self.executor.derive(
            list(batch.txs), batch.leader_time_ms, batch.proposer, term, index
        )
        write = dataclasses.replace(write, extra={RAFT_APPLIED: index.to_bytes(8, "big")})
        self.ledger.commit(write)
        for name in self.executor.activate(write):
            log.info("contract_activated", contract=name, height=write.height)
        self.committed(write, now_ms)
        return write

    def apply_synced(
        self, block_bytes: bytes, cert: ledger_pb2.CommitCertificate, now_ms: int
    ) -> BlockWrite:
        """Re-execute and commit a certified block pulled from a peer (worker thread).
        Raises Divergence when the re-execution differs from the block's header."""
        write = self.executor.replay(block_bytes)
        index = int(write.header.raft_index)
        if index:
            write = dataclasses.replace(write, extra={RAFT_APPLIED: index.to_bytes(8, "big")})
        self.ledger.commit(write)
        self.ledger.put_certificate(write.height, cert)
        for name in self.executor.activate(write):
            log.info("contract_activated", contract=name, height=write.height)
        self.committed(write, now_ms)
        log.info("block_synced", height=write.height, hash=write.block_hash.hex()[:16])
        return write

    def record_applied(self, index: int) -> None:
        """A NOOP or CONFIG entry makes no block; only the applied index moves."""
        # Unsynced like a block (decision 010): Ledger.sync() precedes log compaction.
        self.ledger.store.write({RAFT_APPLIED: index.to_bytes(8, "big")}, set(), sync=False)

    def committed(self, write: BlockWrite, now_ms: int) -> None:
        """Resolve waiters and wake block streams after `write` is on disk."""
        outcomes: list[tuple[list[concurrent.futures.Future[TxOutcome]], TxOutcome]] = []
        latencies: list[float] = []
        with self.lock:
            for tx_id, raw_code, message in zip(
                write.tx_ids, write.codes, write.messages, strict=True
            ):
                received = self._inflight.pop(tx_id, None)
                self.mempool.remove(tx_id)  # ordered by another leader while pending here
                if received is not None:
                    latencies.append(max(0, now_ms - received) / 1000)
                futures = self._waiters.pop(tx_id, [])
                if futures:
                    code = TxCode(raw_code)
                    status = TxStatus.COMMITTED if code == TxCode.VALID else TxStatus.INVALID
                    outcomes.append(
                        (futures, TxOutcome(tx_id, status, code, message, write.height))
                    )
        # Listeners (metrics, votes) first: a client told "committed" then finds the
        # node's metrics and streams already showing the block.
        for listener in self.commit_listeners:
            listener(write, latencies)
        for futures, outcome in outcomes:
            for future in futures:
                future.set_result(outcome)
        with self.new_block:
            self.new_block.notify_all()

    def close(self) -> None:
        """Refuse further submissions; pending transactions are still ordered."""
        with self.lock:
            self.closing = True

    def release_waiters(self) -> None:
        """At the very end: answer every waiter that is left (their tx stays pending)."""
        with self.lock:
            waiters, self._waiters = self._waiters, {}
        for tx_id, futures in waiters.items():
            for future in futures:
                future.set_result(
                    TxOutcome(
                        tx_id,
                        TxStatus.PENDING,
                        TxCode.SHUTTING_DOWN,
                        "node stopped before the transaction committed",
                    )
                )
        with self.new_block:
            self.new_block.notify_all()
