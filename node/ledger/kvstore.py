"""The byte-level store under the ledger: a `typing.Protocol`, a dict-backed twin for tests,
and the plyvel one for production.

Contract of `KVStore`:
- `get` returns the stored bytes (the caller owns them) or None.
- `scan(prefix)` yields (key, value) with key starting with prefix, in byte order; it reads
  a consistent snapshot taken when it is called.
- `write(puts, deletes, sync)` applies all of them or none. With `sync=True` the data is on
  disk when it returns.
- Every method raises `StoreCorrupted` when the underlying files fail their checksums and
  `StoreError` for other IO failures; the ledger turns these into a clear halt, never a
  traceback.
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import plyvel

from node.stalls import SYNCS


class StoreError(Exception):
    pass


class StoreCorrupted(StoreError):
    pass


class KVStore(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]: ...

    def last(self, prefix: bytes) -> tuple[bytes, bytes] | None: ...

    def write(
        self, puts: Mapping[bytes, bytes], deletes: frozenset[bytes] | set[bytes], sync: bool
    ) -> None: ...

    def close(self) -> None: ...


class MemoryKV:
    """Dict-backed twin of LevelDBKV; a sorted key list keeps scans in byte order."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        keys = self._keys
        i = bisect.bisect_left(keys, max(prefix, start) if start is not None else prefix)
        snapshot = [(k, self._data[k]) for k in self._take(keys, i, prefix)]
        return iter(snapshot)

    @staticmethod
    def _take(keys: list[bytes], i: int, prefix: bytes) -> Iterator[bytes]:
        while i < len(keys) and keys[i].startswith(prefix):
            yield keys[i]
            i += 1

    def last(self, prefix: bytes) -> tuple[bytes, bytes] | None:
        items = list(self.scan(prefix))
        return items[-1] if items else None

    def write(
        self, puts: Mapping[bytes, bytes], deletes: frozenset[bytes] | set[bytes], sync: bool
    ) -> None:
        for key in deletes:
            if key in self._data:
                del self._data[key]
                self._keys.pop(bisect.bisect_left(self._keys, key))
        for key, value in puts.items():
            if key not in self._data:
                bisect.insort(self._keys, key)
            self._data[key] = bytes(value)

    def close(self) -> None:
        pass


def _translate(exc: Exception, path: Path) -> StoreError:
    if isinstance(exc, plyvel.CorruptionError):
        return StoreCorrupted(
            f"LevelDB files in {path} fail their checksums ({exc}). The ledger was not "
            "changed. Restore the data directory from a backup or re-sync it from the "
            "consortium; do not run a LevelDB repair, which silently drops data."
        )
    text = str(exc)
    if "lock" in text.lower():
        return StoreError(f"{path} is in use by another process (LevelDB lock held): {text}")
    return StoreError(f"LevelDB error in {path}: {text}")


class LevelDBKV:
    """plyvel-backed store. Thread-safe for concurrent readers and one writer; `close`
    must only be called once no other thread uses it (plyvel crashes otherwise)."""

    def __init__(self, path: Path, create: bool = True, memtable_mb: int = 16) -> None:
        self.path = path
        try:
            self._db: Any = plyvel.DB(
                str(path),
                create_if_missing=create,
                paranoid_checks=True,
                # Big enough for a block and its indexes; LevelDB's 4 MiB default is fine
                # for writes but the block cache helps the gateway's reads.
                lru_cache_size=64 * 1024 * 1024,
                # Most tx-index lookups (duplicate checks at admission and execution)
                # miss: a bloom filter answers those without reading a table block.
                bloom_filter_bits=10,
                # The memtable is written out as a table (and compacted) each time this
                # much has been written: about every 14 s at 1,000 kv tx/s with 16 MiB.
                # LevelDB's 4 MiB memtable and 2 MiB tables cost more background
                # compaction and no better latency (docs/performance.md). Nodes on one
                # disk get different sizes from `init-consortium`, so that they do not
                # all flush at the same height (docs/operations.md).
                write_buffer_size=memtable_mb * 1024 * 1024,
                max_file_size=8 * 1024 * 1024,
            )
        except (plyvel.Error, OSError) as exc:
            raise _translate(exc, path) from exc

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key, verify_checksums=True)
        except plyvel.Error as exc:
            raise _translate(exc, self.path) from exc
        return value

    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        # The iterator (and the LevelDB snapshot it reads) is made now, not at the first
        # next(): the contract says the view is the one at the time of the call.
        try:
            if start is None:
                it = self._db.iterator(prefix=prefix, verify_checksums=True)
            else:
                it = self._db.iterator(start=max(start, prefix), prefix=None, verify_checksums=True)
        except plyvel.Error as exc:
            raise _translate(exc, self.path) from exc
        return self._drain(it, prefix)

    def _drain(self, it: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        try:
            with it:
                for key, value in it:
                    if not key.startswith(prefix):
                        break
                    yield key, value
        except plyvel.Error as exc:
            raise _translate(exc, self.path) from exc

    def last(self, prefix: bytes) -> tuple[bytes, bytes] | None:
        try:
            with self._db.iterator(prefix=prefix, reverse=True, verify_checksums=True) as it:
                for key, value in it:
                    return key, value
        except plyvel.Error as exc:
            raise _translate(exc, self.path) from exc
        return None

    def write(
        self, puts: Mapping[bytes, bytes], deletes: frozenset[bytes] | set[bytes], sync: bool
    ) -> None:
        try:
            # A synced batch is timed under the store's folder name ("ledger").
            with (
                SYNCS.timed(self.path.name) if sync else contextlib.nullcontext(),
                self._db.write_batch(transaction=True, sync=sync) as batch,
            ):
                for key in deletes:
                    batch.delete(key)
                for key, value in puts.items():
                    batch.put(key, value)
        except plyvel.Error as exc:
            raise _translate(exc, self.path) from exc

    def prefixed(self, prefix: bytes) -> Any:
        """A plyvel prefixed DB over this store (for the Raft log under `raft/`)."""
        return self._db.prefixed_db(prefix)

    def is_empty(self, prefix: bytes) -> bool:
        with self._db.iterator(prefix=prefix, include_value=False) as it:
            return next(it, None) is None

    def snapshot(self) -> Any:
        """A plyvel snapshot (context manager): a consistent read view for backups."""
        return self._db.snapshot()

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()
