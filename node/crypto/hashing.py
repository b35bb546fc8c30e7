"""SHA-256 helpers and the Merkle root used for tx_root and results_root."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Binary Merkle root with domain-separated leaves and nodes (RFC 6962 style).

    Leaves are hashed with a 0x00 prefix and inner nodes with 0x01, so a leaf can never be
    passed off as an inner node; an odd node is promoted unchanged (no duplication, which
    would let two different lists share a root).
    """
    if not leaves:
        return EMPTY_ROOT
    level = [hashlib.sha256(b"\x00" + leaf).digest() for leaf in leaves]
    while len(level) > 1:
        nxt = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def length_prefixed(*parts: bytes) -> bytes:
    """Unambiguous concatenation: each part preceded by its 4-byte big-endian length."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def split_length_prefixed(data: bytes) -> list[bytes]:
    """The parts of `length_prefixed(*parts)`; ValueError when `data` is truncated."""
    parts: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise ValueError("truncated length prefix")
        size = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        if pos + size > len(data):
            raise ValueError("truncated part")
        parts.append(data[pos : pos + size])
        pos += size
    return parts
