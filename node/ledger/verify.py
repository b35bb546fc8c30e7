"""`medledger ledger verify`: re-derive every hash of a stored chain, offline.

The chain is replayed block by block into an in-memory ledger built from the stored
genesis block, with the same executor the node uses; every derived field (tx_root,
codes, results_root, state_hash, the hash chain) must match what is stored, and at the
end the stored world state, tx index and savepoint must equal the re-derived ones. A
value rewritten through LevelDB therefore shows up even with valid checksums.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import DecodeError

from node import genesis as genesis_mod
from node.chain import build_executor, load_contracts
from node.crypto.hashing import sha256
from node.execution.executor import Divergence
from node.execution.sandbox import SandboxEngine, Zygote
from node.execution.types import ContractEngine
from node.ledger import layout
from node.ledger.kvstore import KVStore, MemoryKV
from node.ledger.ledger import Ledger, LedgerError, decode_block


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    height: int
    last_block_hash: str
    bad_height: int | None = None
    problem: str = ""


def _fail(height: int, problem: str, tip_height: int) -> VerifyReport:
    return VerifyReport(False, tip_height, "", height, problem)


def verify(store: KVStore, engine: ContractEngine) -> VerifyReport:
    """`engine` runs the chain's contracts; they are loaded here from the stored genesis."""
    raw0 = store.get(layout.height_key(layout.BLOCK, 0))
    if raw0 is None:
        return _fail(0, "no genesis block: this is not a ledger data directory", 0)
    try:
        genesis = genesis_mod.parse(raw0)
    except genesis_mod.GenesisError as exc:
        return _fail(0, str(exc), 0)
    if store.get(layout.CHAIN_ID) != genesis.chain_id:
        return _fail(0, "stored chain id is not the hash of the stored genesis block", 0)
    tip_raw = store.get(layout.TIP)
    if tip_raw is None or len(tip_raw) != layout.TIP_SIZE:
        return _fail(0, "the savepoint (m/tip) is missing or damaged", 0)
    tip = layout.Tip.decode(tip_raw)

    memory = Ledger(MemoryKV(), genesis)
    executor = build_executor(genesis, memory, load_contracts(engine, genesis))

    blocks = list(store.scan(layout.BLOCK))
    top = len(blocks) - 1
    for expected, (key, _) in enumerate(blocks):
        if int.from_bytes(key[len(layout.BLOCK) :], "big") != expected:
            return _fail(expected, f"block {expected} is missing", tip.height)
    hashes: list[bytes] = []
    for height, (_, data) in enumerate(blocks):
        try:
            block, _header = decode_block(data)
        except DecodeError:
            return _fail(height, f"block {height} does not parse", tip.height)
        hashes.append(sha256(block.header))
    if hashes[0] != genesis.hash:
        return _fail(0, "genesis block hash changed", tip.height)
    for height in range(1, top + 1):
        following = hashes[height + 1] if height < top else None
        _, next_header = decode_block(blocks[height + 1][1]) if following else (None, None)
        expected_hash = next_header.prev_hash if next_header is not None else tip.hash
        if hashes[height] != expected_hash:
            return _fail(
                height,
                f"block {height}'s header was changed (its hash is not the one chained after it)",
                tip.height,
            )
        try:
            write = executor.replay(blocks[height][1])
        except Divergence as exc:
            return _fail(exc.height, str(exc), tip.height)
        except DecodeError:
            return _fail(height, f"block {height} does not parse", tip.height)
        stored_results = store.get(layout.height_key(layout.RESULTS, height))
        if stored_results != write.results_bytes:
            return _fail(
                height, f"stored results of block {height} differ from re-execution", tip.height
            )
        memory.commit(write)
        executor.activate(write)
    if tip.height != top or tip.hash != hashes[top]:
        return _fail(tip.height, "the savepoint (m/tip) does not name the last block", tip.height)
    problem = _compare_derived(store, memory)
    if problem is not None:
        return _fail(problem[0], problem[1], tip.height)
    return VerifyReport(True, tip.height, tip.hash.hex())


def _compare_derived(store: KVStore, memory: Ledger) -> tuple[int, str] | None:
    """The stored world state, history and tx index must equal the re-derived ones."""
    for prefix, what in (
        (layout.STATE, "state value"),
        (layout.TXINDEX, "tx index entry"),
        (layout.HISTORY, "history entry"),
        (layout.HASH, "block hash index"),
    ):
        stored = dict(store.scan(prefix))
        derived = dict(memory.store.scan(prefix))
        if stored == derived:
            continue
        for key in sorted(set(stored) | set(derived)):
            if stored.get(key) != derived.get(key):
                return _height_of(prefix, key, stored.get(key), derived.get(key)), (
                    f"{what} {key[len(prefix) :]!r} differs from the value re-derived from "
                    "the blocks"
                )
    return None


def _height_of(prefix: bytes, key: bytes, stored: bytes | None, derived: bytes | None) -> int:
    """The height that wrote the entry: from the stored version, else the derived one."""
    for value in (derived, stored):
        if value is None or len(value) < 8:
            continue
        if prefix in (layout.STATE, layout.TXINDEX, layout.HASH):
            return int.from_bytes(value[:8], "big")
    if prefix == layout.HISTORY:
        return int.from_bytes(key[-12:-4], "big")
    return 0


def verify_path(path: str) -> VerifyReport:
    from pathlib import Path

    from node.ledger.kvstore import LevelDBKV

    p = Path(path)
    ledger_dir = p / "ledger" if (p / "ledger").is_dir() else p
    if not (ledger_dir / "CURRENT").exists():
        raise LedgerError(f"{path} holds no ledger (no LevelDB CURRENT file under it)")
    store = LevelDBKV(ledger_dir, create=False)
    zygote = Zygote.start()
    try:
        with SandboxEngine(zygote) as engine:
            return verify(store, engine)
    finally:
        zygote.close()
        store.close()
