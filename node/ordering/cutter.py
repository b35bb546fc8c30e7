"""The block cutter (sans-IO): decides when the leader proposes the next batch.

A batch is cut when `max_block_txs` or `max_block_bytes` worth of transactions wait, or
when the oldest waiting one has waited `batch_timeout_ms`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CutterConfig:
    batch_timeout_ms: int
    max_block_txs: int
    max_block_bytes: int


class BlockCutter:
    def __init__(self, config: CutterConfig) -> None:
        self.config = config

    def should_cut(
        self, pending_txs: int, pending_bytes: int, oldest_ms: int | None, now_ms: int
    ) -> bool:
        if pending_txs == 0 or oldest_ms is None:
            return False
        c = self.config
        return (
            pending_txs >= c.max_block_txs
            or pending_bytes >= c.max_block_bytes
            or now_ms - oldest_ms >= c.batch_timeout_ms
        )

    def next_deadline_ms(self, oldest_ms: int | None) -> int | None:
        """When the cutter must be asked again if nothing else arrives."""
        return None if oldest_ms is None else oldest_ms + self.config.batch_timeout_ms
