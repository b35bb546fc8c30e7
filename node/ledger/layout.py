"""Key layout of the ledger's single LevelDB (docs/storage.md explains it in prose).

    m/tip                      savepoint: height(8) | block hash(32) | state_hash(32) | ts(8)
    m/chain_id                 genesis block hash
    m/raft_applied             last Raft index applied (written with the block it produced)
    b/<height:8>               Block bytes (source of truth)
    r/<height:8>               BlockResults bytes (derived)
    h/<hash:32>                height(8) (derived)
    t/<tx_id:32>               height(8) | index(4) | code(2) (derived; first occurrence)
    s/<key>                    height(8) | index(4) | value (world state; derived)
    y/<len:4><key><height:8><index:4>   0x01 | value, or 0x00 for a delete (history; derived)
    c/<height:8>               CommitCertificate bytes (a quorum of consenter signatures)

All integers are big-endian so byte order is numeric order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

TIP = b"m/tip"
CHAIN_ID = b"m/chain_id"
RAFT_APPLIED = b"m/raft_applied"
# Written by Ledger.sync(): the height the last synced write covered (informational).
SYNCED = b"m/synced"
BLOCK = b"b/"
RESULTS = b"r/"
HASH = b"h/"
TXINDEX = b"t/"
STATE = b"s/"
HISTORY = b"y/"
CERTIFICATE = b"c/"

_TIP = struct.Struct(">Q32s32sq")
TIP_SIZE = _TIP.size
_LOC = struct.Struct(">QIH")
_VERSION = struct.Struct(">QI")


def height_key(prefix: bytes, height: int) -> bytes:
    return prefix + height.to_bytes(8, "big")


def history_prefix(key: bytes) -> bytes:
    return HISTORY + len(key).to_bytes(4, "big") + key


def history_key(key: bytes, height: int, index: int) -> bytes:
    return history_prefix(key) + _VERSION.pack(height, index)


@dataclass(frozen=True)
class Tip:
    height: int
    hash: bytes
    state_hash: bytes
    timestamp_ms: int

    def encode(self) -> bytes:
        return _TIP.pack(self.height, self.hash, self.state_hash, self.timestamp_ms)

    @classmethod
    def decode(cls, data: bytes) -> Tip:
        return cls(*_TIP.unpack(data))


@dataclass(frozen=True)
class TxLocation:
    height: int
    index: int
    code: int

    def encode(self) -> bytes:
        return _LOC.pack(self.height, self.index, self.code)

    @classmethod
    def decode(cls, data: bytes) -> TxLocation:
        return cls(*_LOC.unpack(data))


@dataclass(frozen=True)
class VersionedValue:
    height: int
    index: int
    value: bytes

    def encode(self) -> bytes:
        return _VERSION.pack(self.height, self.index) + self.value

    @classmethod
    def decode(cls, data: bytes) -> VersionedValue:
        height, index = _VERSION.unpack_from(data)
        return cls(height, index, data[_VERSION.size :])
