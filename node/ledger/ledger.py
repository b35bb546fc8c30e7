"""The ledger: committed blocks and everything derived from them, in one KVStore.

One block = one synced, atomic write batch holding the block, its results, the tx index,
world state, history, the savepoint (`m/tip`) and, when consensus gives one, the applied
Raft index. A crash therefore leaves either the whole block or none of it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from medledger.v1 import ledger_pb2

from node.crypto.hashing import sha256
from node.genesis import Genesis, genesis_state
from node.ledger import layout
from node.ledger.kvstore import KVStore
from node.ledger.layout import Tip, TxLocation, VersionedValue

# How many of the newest blocks start-up re-checks hash by hash (the full check is
# `medledger ledger verify`).
STARTUP_CHECK_BLOCKS = 1000


class LedgerError(Exception):
    """The ledger cannot be used as it is; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class StateWrite:
    key: bytes
    tx_index: int
    value: bytes | None  # None: delete


@dataclass(frozen=True)
class BlockWrite:
    """Everything one block adds to the ledger, ready for one atomic write."""

    header: ledger_pb2.BlockHeader
    block_hash: bytes
    block_bytes: bytes
    results_bytes: bytes
    tx_locations: Mapping[bytes, TxLocation]
    state: tuple[StateWrite, ...]
    tx_ids: tuple[bytes, ...] = ()
    codes: tuple[int, ...] = ()
    messages: tuple[str, ...] = ()
    extra: Mapping[bytes, bytes] = field(default_factory=dict)  # e.g. m/raft_applied

    @property
    def height(self) -> int:
        return int(self.header.height)


def decode_block(data: bytes) -> tuple[ledger_pb2.Block, ledger_pb2.BlockHeader]:
    block = ledger_pb2.Block()
    header = ledger_pb2.BlockHeader()
    block.ParseFromString(data)
    header.ParseFromString(block.header)
    return block, header


class Ledger:
    def __init__(self, store: KVStore, genesis: Genesis) -> None:
        self.store = store
        self.genesis = genesis
        chain_id = store.get(layout.CHAIN_ID)
        if chain_id is None:
            self._write_genesis()
        elif chain_id != genesis.chain_id:
            raise LedgerError(
                f"this data directory belongs to chain {chain_id.hex()[:16]}…, not to the "
                f"genesis block given ({genesis.chain_id.hex()[:16]}…); point node.data_dir "
                "at an empty directory or at this chain's data"
            )
        tip = store.get(layout.TIP)
        if tip is None or len(tip) != layout.TIP_SIZE:
            raise LedgerError(
                "the ledger's savepoint (m/tip) is missing or damaged: restore the data "
                "directory from a backup (medledger restore) or re-sync it"
            )
        self.tip = Tip.decode(tip)

    def _write_genesis(self) -> None:
        g = self.genesis
        tip = Tip(0, g.hash, g.header.state_hash, g.header.timestamp_ms)
        puts = {
            layout.height_key(layout.BLOCK, 0): g.block_bytes,
            layout.height_key(layout.RESULTS, 0): b"",
            layout.HASH + g.hash: (0).to_bytes(8, "big"),
            layout.CHAIN_ID: g.chain_id,
            layout.TIP: tip.encode(),
        }
        for key, value in genesis_state(g.config).items():
            puts[layout.STATE + key] = VersionedValue(0, 0, value).encode()
            puts[layout.history_key(key, 0, 0)] = b"\x01" + value
        self.store.write(puts, set(), sync=True)

    # -- start-up recovery ---------------------------------------------------------------

    def check_recent(self, count: int = STARTUP_CHECK_BLOCKS) -> list[int]:
        """Re-check the newest `count` blocks' hash chain against the savepoint; return the
        heights of stored blocks above the savepoint whose derived stores must be replayed.
        Raises LedgerError naming the first bad height."""
        tip = self.tip
        data = self.block_bytes(tip.height)
        if data is None:
            raise LedgerError(f"savepoint names height {tip.height} but that block is missing")
        expected_hash = tip.hash
        for height in range(tip.height, max(-1, tip.height - count), -1):
            data = self.block_bytes(height)
            if data is None:
                raise LedgerError(f"block {height} is missing from the block store")
            try:
                _, header = decode_block(data)
            except DecodeError as exc:
                raise LedgerError(f"block {height} does not parse: {exc}") from exc
            if sha256(ledger_pb2.Block.FromString(data).header) != expected_hash:
                raise LedgerError(f"block {height} does not hash to the hash chained after it")
            if height == tip.height and header.state_hash != tip.state_hash:
                raise LedgerError(f"block {height}'s state_hash differs from the savepoint")
            expected_hash = header.prev_hash
        last = self.store.last(layout.BLOCK)
        top = int.from_bytes(last[0][len(layout.BLOCK) :], "big") if last else 0
        return list(range(tip.height + 1, top + 1))

    # -- reads ---------------------------------------------------------------------------

    def block_bytes(self, height: int) -> bytes | None:
        return self.store.get(layout.height_key(layout.BLOCK, height))

    def block(self, height: int) -> ledger_pb2.Block | None:
        data = self.block_bytes(height)
        return None if data is None else ledger_pb2.Block.FromString(data)

    def results(self, height: int) -> ledger_pb2.BlockResults | None:
        data = self.store.get(layout.height_key(layout.RESULTS, height))
        return None if data is None else ledger_pb2.BlockResults.FromString(data)

    def height_of(self, block_hash: bytes) -> int | None:
        data = self.store.get(layout.HASH + block_hash)
        return None if data is None else int.from_bytes(data, "big")

    def tx_location(self, tx_id: bytes) -> TxLocation | None:
        data = self.store.get(layout.TXINDEX + tx_id)
        return None if data is None else TxLocation.decode(data)

    def state_get(self, key: bytes) -> bytes | None:
        data = self.store.get(layout.STATE + key)
        return None if data is None else VersionedValue.decode(data).value

    def state_versioned(self, key: bytes) -> VersionedValue | None:
        data = self.store.get(layout.STATE + key)
        return None if data is None else VersionedValue.decode(data)

    def state_scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        cut = len(layout.STATE)
        for key, value in self.store.scan(layout.STATE + prefix):
            yield key[cut:], VersionedValue.decode(value).value

    def state_items(self) -> Iterator[tuple[bytes, VersionedValue]]:
        cut = len(layout.STATE)
        for key, value in self.store.scan(layout.STATE):
            yield key[cut:], VersionedValue.decode(value)

    def history(self, key: bytes) -> list[tuple[int, int, bytes | None]]:
        prefix = layout.history_prefix(key)
        out: list[tuple[int, int, bytes | None]] = []
        for hkey, value in self.store.scan(prefix):
            version = VersionedValue.decode(hkey[len(prefix) :] + value)
            stored = version.value[1:] if version.value[:1] == b"\x01" else None
            out.append((version.height, version.index, stored))
        return out

    def certificate(self, height: int) -> ledger_pb2.CommitCertificate | None:
        data = self.store.get(layout.height_key(layout.CERTIFICATE, height))
        return None if data is None else ledger_pb2.CommitCertificate.FromString(data)

    def put_certificate(self, height: int, cert: ledger_pb2.CommitCertificate) -> None:
        """Certificates arrive after their block; they are evidence, not derived state."""
        self.store.write(
            {layout.height_key(layout.CERTIFICATE, height): cert.SerializeToString()},
            set(),
            sync=False,
        )

    def block_with_certificate(self, height: int) -> ledger_pb2.Block | None:
        block = self.block(height)
        if block is not None:
            cert = self.certificate(height)
            if cert is not None:
                block.certificate.CopyFrom(cert)
        return block

    def raft_applied(self) -> int:
        data = self.store.get(layout.RAFT_APPLIED)
        return 0 if data is None else int.from_bytes(data, "big")

    # -- the one write -------------------------------------------------------------------

    def commit(self, write: BlockWrite) -> Tip:
        height = write.height
        if height != self.tip.height + 1 or write.header.prev_hash != self.tip.hash:
            raise LedgerError(f"block {height} does not extend the tip (height {self.tip.height})")
        puts: dict[bytes, bytes] = {
            layout.height_key(layout.BLOCK, height): write.block_bytes,
            layout.height_key(layout.RESULTS, height): write.results_bytes,
            layout.HASH + write.block_hash: height.to_bytes(8, "big"),
        }
        for tx_id, location in write.tx_locations.items():
            puts[layout.TXINDEX + tx_id] = location.encode()
        deletes: set[bytes] = set()
        for sw in write.state:
            skey = layout.STATE + sw.key
            hkey = layout.history_key(sw.key, height, sw.tx_index)
            if sw.value is None:
                puts.pop(skey, None)
                deletes.add(skey)
                puts[hkey] = b"\x00"
            else:
                deletes.discard(skey)
                puts[skey] = VersionedValue(height, sw.tx_index, sw.value).encode()
                puts[hkey] = b"\x01" + sw.value
        tip = Tip(height, write.block_hash, write.header.state_hash, write.header.timestamp_ms)
        puts[layout.TIP] = tip.encode()
        puts.update(write.extra)
        # One atomic batch, not synced (decision 010): a block and its applied Raft index
        # land together or not at all, and after a power loss the ledger is a consistent
        # earlier prefix; the Raft log, synced before the entry committed, is applied
        # again from there. `sync()` runs before that log is compacted.
        self.store.write(puts, deletes, sync=False)
        self.tip = tip
        return tip

    def sync(self) -> None:
        """Make every write so far durable (one synced LevelDB write: its log is synced,
        and with it every earlier unsynced write)."""
        self.store.write({layout.SYNCED: self.tip.height.to_bytes(8, "big")}, set(), sync=True)
