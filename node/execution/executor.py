"""Deriving a block from an ordered batch (DESIGN §3.1 step 4), and re-deriving a stored
one to check it (start-up replay, `ledger verify`, later block sync).

Every admission check is repeated here against committed state and block time: what a
node's admission let through is only a hint.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from medledger.v1 import ledger_pb2

from node.codes import TxCode
from node.crypto.hashing import EMPTY_ROOT, length_prefixed, merkle_root, sha256
from node.execution import consenter_gov, lifecycle
from node.execution.consenter_gov import ConsenterGovernance
from node.execution.lifecycle import Lifecycle
from node.execution.types import Caller, ContractEngine, Invocation, Outcome, overlay_range
from node.genesis import HEADER_VERSION
from node.ledger.layout import TxLocation
from node.ledger.ledger import BlockWrite, Ledger, StateWrite, decode_block
from node.tx import ParsedTx, Rejection, TxChecker, decode_args, parse

DEFAULT_GAS_LIMIT = 5_000_000

# Codes under which a tx id is recorded in the tx index, so that the same body can never
# commit again. A code reached before the signature was verified (BAD_SIGNATURE,
# UNKNOWN_CREATOR, ...) is not recorded: otherwise anyone who saw a body could burn its id
# by sending it with a garbage signature. Codes that no signature can ever cure are.
INDEXED_CODES = frozenset(
    {
        TxCode.VALID,
        TxCode.UNKNOWN_CONTRACT,
        TxCode.UNKNOWN_FUNCTION,
        TxCode.BAD_ARGUMENTS,
        TxCode.PERMISSION_DENIED,
        TxCode.CONTRACT_ERROR,
        TxCode.OUT_OF_GAS,
        TxCode.EXPIRED,
        TxCode.WRONG_CHAIN,
        TxCode.TTL_TOO_LONG,
    }
)


class Divergence(Exception):
    """A re-derived block differs from the stored or certified one."""

    def __init__(self, height: int, what: str) -> None:
        super().__init__(f"block {height}: {what}")
        self.height = height
        self.what = what


class BlockState:
    """Committed state with the writes of the block's earlier valid transactions on top."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self.writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        return self._ledger.state_get(key)

    def range(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return overlay_range(self._ledger.state_scan(prefix), self.writes, prefix)


def write_set_hash(writes: dict[bytes, bytes | None]) -> bytes:
    parts: list[bytes] = []
    for key in sorted(writes):
        value = writes[key]
        parts += [key, b"\x00" if value is None else b"\x01" + value]
    return sha256(length_prefixed(*parts))


def result_leaf(tx_id: bytes, result: ledger_pb2.TxResult) -> bytes:
    events = length_prefixed(
        *(length_prefixed(e.contract.encode(), e.name.encode(), e.data) for e in result.events)
    )
    return length_prefixed(
        tx_id,
        int(result.code).to_bytes(2, "big"),
        int(result.gas_used).to_bytes(8, "big"),
        result.write_set_hash,
        sha256(result.result),
        sha256(events),
    )


# Contract functions run by the node itself at the end of every block, in this order.
END_OF_BLOCK = (("referral", "sweep"),)
SWEEP_LIMIT = 100
SYSTEM = Caller(identity="system", name="system", role="system", institution="")


def sweep_id(height: int) -> bytes:
    return sha256(b"medledger/end-of-block/" + height.to_bytes(8, "big"))


def _guard(outcome: Outcome) -> Outcome:
    """Contract code never writes the lifecycle's records or the consenter set: only the
    node's governance functions do."""
    reserved = (
        lifecycle.RECORD_PREFIX,
        lifecycle.PROPOSAL_PREFIX,
        consenter_gov.CONSENTERS_KEY,
        consenter_gov.NODE_PREFIX,
    )
    if any(key.startswith(reserved) for key in outcome.writes):
        return Outcome(TxCode.PERMISSION_DENIED, "contract records are written by governance only")
    return outcome


@dataclass(frozen=True)
class _Prepared:
    tx_id: bytes
    contract: str
    outcome: Outcome | None  # set when the checks already decided it
    invocation: Invocation | None = None  # set when the contract must run
    unindexed: bool = False  # the ledger's tx index was read and has no entry for tx_id


@dataclass(frozen=True)
class _Executed:
    tx_ids: list[bytes]
    codes: list[int]
    results: ledger_pb2.BlockResults
    state: tuple[StateWrite, ...]
    locations: dict[bytes, TxLocation]
    state_hash: bytes
    results_root: bytes


class BlockExecutor:
    def __init__(
        self,
        ledger: Ledger,
        checker: TxChecker,
        engine: ContractEngine,
        gas_limit: int = DEFAULT_GAS_LIMIT,
        query_engine: ContractEngine | None = None,
        lifecycle: Lifecycle | None = None,
        consenters: ConsenterGovernance | None = None,
    ) -> None:
        self.ledger = ledger
        self.checker = checker
        self.engine = engine
        self.gas_limit = gas_limit
        # Queries arrive on gRPC threads while a block executes on another: they get their
        # own engine (a sandbox engine is not thread-safe), one query at a time.
        self.query_engine = query_engine or engine
        self._query_lock = threading.Lock()
        self.lifecycle = lifecycle
        self.consenters = consenters
        # Test-only (testing.fault_injection): from this height on, every VALID
        # transaction writes one extra key, so this node's state_hash differs.
        self.diverge_from_height: int | None = None

    def activate(self, write: BlockWrite) -> list[str]:
        """Load the contracts a committed block deployed or upgraded into the engines:
        they take effect from the next block. Returns their names."""
        names = []
        for sw in write.state:
            if sw.key.startswith(lifecycle.RECORD_PREFIX) and sw.value is not None:
                module = lifecycle.module_from_record(sw.value)
                self.engine.load(module)
                if self.query_engine is not self.engine:
                    with self._query_lock:
                        self.query_engine.load(module)
                names.append(module.name)
        return names

    # -- new blocks ----------------------------------------------------------------------

    def derive(
        self,
        txs: Sequence[bytes],
        leader_time_ms: int,
        proposer: str,
        raft_term: int = 0,
        raft_index: int = 0,
    ) -> BlockWrite:
        tip = self.ledger.tip
        height = tip.height + 1
        timestamp = max(tip.timestamp_ms, leader_time_ms)
        done = self._execute(txs, height, timestamp)
        header = ledger_pb2.BlockHeader(
            height=height,
            prev_hash=tip.hash,
            timestamp_ms=timestamp,
            tx_root=merkle_root(done.tx_ids),
            results_root=done.results_root,
            state_hash=done.state_hash,
            proposer=proposer,
            raft_term=raft_term,
            raft_index=raft_index,
            hash_algorithm=1,  # type: ignore[arg-type]
            version=HEADER_VERSION,
        )
        header_bytes = header.SerializeToString()
        block = ledger_pb2.Block(header=header_bytes, txs=list(txs), codes=done.codes)  # type: ignore[arg-type]
        return BlockWrite(
            header=header,
            block_hash=sha256(header_bytes),
            block_bytes=block.SerializeToString(),
            results_bytes=done.results.SerializeToString(),
            tx_locations=done.locations,
            state=done.state,
            tx_ids=tuple(done.tx_ids),
            codes=tuple(done.codes),
            messages=tuple(r.message for r in done.results.results),
        )

    # -- stored or received blocks -------------------------------------------------------

    def replay(self, block_bytes: bytes) -> BlockWrite:
        """Re-execute a block on top of the ledger's tip and check every derived field
        against the block's own header and codes. Raises Divergence naming what differs."""
        block, header = decode_block(block_bytes)
        tip = self.ledger.tip
        height = int(header.height)
        if height != tip.height + 1:
            raise Divergence(height, f"does not follow the tip at height {tip.height}")
        if header.prev_hash != tip.hash:
            raise Divergence(height, "prev_hash does not match the previous block's hash")
        if header.timestamp_ms < tip.timestamp_ms:
            raise Divergence(height, "timestamp goes backwards")
        done = self._execute(list(block.txs), height, int(header.timestamp_ms))
        if merkle_root(done.tx_ids) != header.tx_root:
            raise Divergence(height, "tx_root does not match the transactions")
        if list(block.codes) != done.codes:
            pairs = enumerate(zip(block.codes, done.codes, strict=False))
            bad = next((i for i, (a, b) in pairs if a != b), min(len(block.codes), len(done.codes)))
            raise Divergence(height, f"validation code of transaction {bad} differs")
        if done.results_root != header.results_root:
            raise Divergence(height, "results_root differs from the re-executed results")
        if done.state_hash != header.state_hash:
            raise Divergence(height, "state_hash differs from the re-executed writes")
        return BlockWrite(
            header=header,
            block_hash=sha256(block.header),
            block_bytes=block_bytes,
            results_bytes=done.results.SerializeToString(),
            tx_locations=done.locations,
            state=done.state,
            tx_ids=tuple(done.tx_ids),
            codes=tuple(done.codes),
            messages=tuple(r.message for r in done.results.results),
        )

    # -- the shared core -----------------------------------------------------------------

    def _execute(self, txs: Sequence[bytes], height: int, timestamp: int) -> _Executed:
        # Checks first, then every call that passed them in one engine batch: the sandbox
        # costs one pipe round per block, not per transaction.
        claimed: set[bytes] = set()
        governance: dict[bytes, bytes | None] = {}  # writes of governance calls so far
        prepared = [self._prepare(raw, height, timestamp, claimed, governance) for raw in txs]
        calls = [p.invocation for p in prepared if p.invocation is not None]
        outcomes = iter(self.engine.execute_batch(calls, BlockState(self.ledger)) if calls else [])
        results = ledger_pb2.BlockResults()
        tx_ids: list[bytes] = []
        codes: list[int] = []
        writes: list[StateWrite] = []
        locations: dict[bytes, TxLocation] = {}
        leaves: list[bytes] = []
        for index, item in enumerate(prepared):
            outcome = item.outcome if item.outcome is not None else _guard(next(outcomes))
            result = self._result(item, outcome, index, height)
            tx_ids.append(item.tx_id)
            codes.append(int(result.code))
            results.results.append(result)
            leaves.append(result_leaf(item.tx_id, result))
            if (
                int(result.code) in INDEXED_CODES
                and item.tx_id not in locations
                and (item.unindexed or self.ledger.tx_location(item.tx_id) is None)
            ):
                locations[item.tx_id] = TxLocation(height, index, int(result.code))
            if (
                self.diverge_from_height is not None
                and height >= self.diverge_from_height
                and outcome.code == TxCode.VALID
            ):
                outcome = dataclasses.replace(
                    outcome, writes={**outcome.writes, b"kv/diverged": b'"fault"'}
                )
                result = self._result(item, outcome, index, height)
                results.results[-1].CopyFrom(result)
                leaves[-1] = result_leaf(item.tx_id, result)
            if outcome.code == TxCode.VALID:
                for key in sorted(outcome.writes):
                    writes.append(StateWrite(key, index, outcome.writes[key]))
        write_hashes = b"".join(r.write_set_hash for r in results.results)
        swept = self._sweep(writes, height, timestamp, len(prepared))
        if swept is not None:
            sweep_result, sweep_writes = swept
            results.end_of_block.CopyFrom(sweep_result)
            writes.extend(sweep_writes)
            write_hashes += sweep_result.write_set_hash
            leaves.append(result_leaf(sweep_id(height), sweep_result))
        state_hash = sha256(self.ledger.tip.state_hash + sha256(write_hashes))
        return _Executed(
            tx_ids,
            codes,
            results,
            tuple(writes),
            locations,
            state_hash,
            merkle_root(leaves) if leaves else EMPTY_ROOT,
        )

    def _sweep(
        self, writes: list[StateWrite], height: int, timestamp: int, index: int
    ) -> tuple[ledger_pb2.TxResult, list[StateWrite]] | None:
        """Run each end-of-block sweep that is deployed, after the block's transactions,
        as the system: deadlines pass on every node at the same height."""
        state = BlockState(self.ledger)
        state.writes = {sw.key: sw.value for sw in writes}
        for contract, function in END_OF_BLOCK:
            invocation = Invocation(
                tx_id=sweep_id(height),
                contract=contract,
                function=function,
                args={"limit": SWEEP_LIMIT},
                caller=SYSTEM,
                block_time_ms=timestamp,
                height=height,
                gas_limit=self.gas_limit,
            )
            outcome = _guard(self.engine.execute_batch([invocation], state)[0])
            if outcome.code in (TxCode.UNKNOWN_CONTRACT, TxCode.UNKNOWN_FUNCTION):
                continue  # not deployed on this chain
            item = _Prepared(invocation.tx_id, contract, outcome)
            result = self._result(item, outcome, index, height)
            valid = outcome.code == TxCode.VALID
            return result, [
                StateWrite(k, index, outcome.writes[k]) for k in sorted(outcome.writes) if valid
            ]
        return None

    def _prepare(
        self,
        raw: bytes,
        height: int,
        timestamp: int,
        claimed: set[bytes],
        governance: dict[bytes, bytes | None],
    ) -> _Prepared:
        """Every check that does not need the contract: a refusal here is the tx's outcome."""
        try:
            tx = parse(raw, self.checker.rules.max_tx_bytes)
        except Rejection as rej:
            return _Prepared(sha256(raw), "", Outcome(rej.code, rej.message))
        if tx.tx_id in claimed or self.ledger.tx_location(tx.tx_id) is not None:
            return _Prepared(
                tx.tx_id,
                tx.contract,
                Outcome(TxCode.DUPLICATE_TXID, "transaction already committed"),
            )
        try:
            identity = self.checker.check(tx, timestamp)
            args = decode_args(tx)
        except Rejection as rej:
            if rej.code in INDEXED_CODES:
                claimed.add(tx.tx_id)
            return _Prepared(tx.tx_id, tx.contract, Outcome(rej.code, rej.message), unindexed=True)
        claimed.add(tx.tx_id)
        invocation = Invocation(
            tx_id=tx.tx_id,
            contract=tx.contract,
            function=tx.function,
            args=args,
            caller=Caller(identity.identity, identity.name, identity.role, identity.institution),
            block_time_ms=timestamp,
            height=height,
            gas_limit=self.gas_limit,
        )
        if self.lifecycle is not None and lifecycle.is_lifecycle(tx.contract, tx.function):
            outcome = self.lifecycle.execute(invocation, BlockState(self.ledger), governance)
            if outcome.code == TxCode.VALID:
                governance.update(outcome.writes)
            return _Prepared(tx.tx_id, tx.contract, outcome, unindexed=True)
        if self.consenters is not None and consenter_gov.is_consenter_governance(
            tx.contract, tx.function
        ):
            outcome = self.consenters.execute(invocation, BlockState(self.ledger), governance)
            if outcome.code == TxCode.VALID:
                governance.update(outcome.writes)
            return _Prepared(tx.tx_id, tx.contract, outcome, unindexed=True)
        return _Prepared(tx.tx_id, tx.contract, None, invocation, unindexed=True)

    @staticmethod
    def _result(item: _Prepared, outcome: Outcome, index: int, height: int) -> ledger_pb2.TxResult:
        valid = outcome.code == TxCode.VALID
        result = ledger_pb2.TxResult(
            code=int(outcome.code),  # type: ignore[arg-type]
            message=outcome.message,
            write_set_hash=write_set_hash(dict(outcome.writes) if valid else {}),
            result=outcome.result if valid else b"",
            gas_used=outcome.gas_used,
        )
        if valid:
            for event in outcome.events:
                result.events.append(
                    ledger_pb2.Event(
                        height=height,
                        tx_index=index,
                        tx_id=item.tx_id,
                        contract=item.contract,
                        name=event.name,
                        data=event.data,
                    )
                )
        return result

    def query(self, tx: ParsedTx, now_ms: int) -> Outcome:
        """A read-only call against committed state, by a caller whose signed query
        passed the same identity checks as a transaction."""
        try:
            identity = self.checker.check(tx, now_ms)
            args = decode_args(tx)
        except Rejection as rej:
            return Outcome(rej.code, rej.message)
        invocation = Invocation(
            tx_id=tx.tx_id,
            contract=tx.contract,
            function=tx.function,
            args=args,
            caller=Caller(identity.identity, identity.name, identity.role, identity.institution),
            block_time_ms=self.ledger.tip.timestamp_ms,
            height=self.ledger.tip.height,
            gas_limit=self.gas_limit,
            read_only=True,
        )
        with self._query_lock:
            return self.query_engine.execute(invocation, BlockState(self.ledger))
