"""Raft storage in a write-ahead log of preallocated segment files (for production).

Why not LevelDB: every Raft entry is written once and deleted again soon after it is
applied, which is the worst case for an LSM tree. On this machine a synced LevelDB batch
had p99 1.3 ms, p99.9 6.9 ms and a 91 ms maximum (compaction stalls), and LevelDB's
background compaction of the Raft keys grew to 0.07-0.17 cores per node under load; an
`fdatasync` after writing into a zero-filled file has p99 0.46 ms and a 3.3 ms maximum
(a file grown by appending or by `fallocate` had 150-210 ms maxima: its size or extent
map is metadata the sync must commit). docs/performance.md has the measurements.

Layout: a directory of segments `<seq>.wal` (seq 1, 2, ... as 16 decimal digits), each
SEGMENT_BYTES long before use. The next segment waits as `spare.tmp`: a new log is made
with a zero-filled one, a segment that compaction released is renamed to it, and only
when there is none by the time the current segment is half full does a background
thread zero-fill a new one (a fill writes and syncs the whole file, which on a
shared disk delays every other sync: in the Raft benchmark the rounds with fills had
windows where all 64 requests in flight waited over 20 ms, rounds without none).

A segment is a sequence of records, then zeros or the bytes of the file's earlier use:

    body length u32 | CRC-32 of the body u32 | body = kind u8 | payload

and each CRC is chained from the previous record's (the first from the segment number),
so bytes left over from an older, longer record, or from the file's use as an earlier
segment, can never pass for a record. Kinds:

    CHECKPOINT  reset u8 | first index u64 | hard state | snapshot
                first in every segment: the state when the segment was started, and the
                index the next entry would have had. `reset` discards everything before.
    SAVE        flags u8 | [snapshot] | [hard state] | count u32 |
                count x (term u64 | index u64 | kind u8 | length u32 | data)
                one Ready: a crash keeps all of it or none of it.
    COMPACT     snapshot: entries up to its index are no longer needed.
    SEAL        segment u64: the segment ends here (written and synced before the next
                segment is started; what follows is left over from the file's last use).

    hard state = term u64 | commit u64 | vote length u16 | vote (utf-8)
    snapshot   = length u32 | index u64 | term u64 | membership length u32 |
                 membership (JSON) | data

Replay reads every segment in order and does what the records say (an entry record
replaces the log from its first index on, as `save` does). The last segment may end in a
torn record (a crash during a write), or end where the bytes of an earlier use begin:
replay stops there and the rest of the segment is zeroed before anything new is written.
Every other segment ends with its SEAL (segments written before seals existed end with
zeros). A damaged record anywhere else, or a log that does not reach from the snapshot to
its last entry, raises StorageCorrupted.

Segments are deleted after a compaction once every entry in them lies at or below the
compacted index: segment k goes when segment k+1 started at an index <= snapshot + 1.
The compaction record is synced before that, and a segment is synced before the next one
is started, so no synced record ever depends on one that was not.

Threads: `save`, `compact` and `close` run in one worker thread at a time (they are not
reentrant); `entries` may run on another thread at the same time (resident.py). The
directory belongs to one process: the node opens it only after it holds the ledger's
LevelDB lock in the same data directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from node.consensus.entry import EMPTY_SNAPSHOT, Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from node.consensus.errors import StorageCorrupted, UnavailableError
from node.consensus.membership import Membership, decode_membership, encode_membership
from node.consensus.resident import RESIDENT_BYTES, ResidentStorage
from node.stalls import SYNCS

SEGMENT_BYTES = 64 * 1024 * 1024
SUFFIX = ".wal"
SPARE = "spare.tmp"
# Between megabytes of the spare segment's zero fill: with it a 64 MiB spare takes about
# two seconds instead of a third of one, and the log's own syncs barely notice it.
SPARE_PAUSE_S = 0.02

_CHECKPOINT = 1
_SAVE = 2
_COMPACT = 3
_SEAL = 4
_HAS_SNAPSHOT = 1
_HAS_HARD_STATE = 2

_FRAME = struct.Struct(">II")
_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HS_HEAD = struct.Struct(">QQH")
_SNAP_HEAD = struct.Struct(">IQQI")
_ENTRY_HEAD = struct.Struct(">QQBI")
_CHECKPOINT_HEAD = struct.Struct(">BBQ")  # kind, reset, first index
_SAVE_HEAD = struct.Struct(">BB")  # kind, flags
_SEAL_BODY = struct.Struct(">BQ")  # kind, segment
_ZEROS = bytes(1024 * 1024)
# The record that ends a segment; room for it is kept in every one.
_SEAL_FRAME = _FRAME.size + _SEAL_BODY.size


def _encode_hard_state(hs: HardState) -> bytes:
    vote = (hs.vote or "").encode()
    return _HS_HEAD.pack(hs.term, hs.commit, len(vote)) + vote


def _encode_snapshot(s: Snapshot) -> bytes:
    members = encode_membership(s.meta.membership)
    size = 20 + len(members) + len(s.data)
    return _SNAP_HEAD.pack(size, s.meta.index, s.meta.term, len(members)) + members + s.data


def _checkpoint_body(reset: bool, first_index: int, hs: HardState, snapshot: Snapshot) -> bytes:
    return (
        _CHECKPOINT_HEAD.pack(_CHECKPOINT, 1 if reset else 0, first_index)
        + _encode_hard_state(hs)
        + _encode_snapshot(snapshot)
    )


def _save_body(
    hs: HardState | None, entries: Sequence[Entry], snapshot: Snapshot | None
) -> tuple[list[bytes], list[int]]:
    """The SAVE record's body in parts, and each entry's data offset within the body."""
    flags = (_HAS_SNAPSHOT if snapshot is not None else 0) | (
        _HAS_HARD_STATE if hs is not None else 0
    )
    parts = [_U8.pack(_SAVE), _U8.pack(flags)]
    if snapshot is not None:
        parts.append(_encode_snapshot(snapshot))
    if hs is not None:
        parts.append(_encode_hard_state(hs))
    parts.append(_U32.pack(len(entries)))
    pos = sum(len(p) for p in parts)
    offsets = []
    pack = _ENTRY_HEAD.pack
    for e in entries:
        parts.append(pack(e.term, e.index, e.kind, len(e.data)))
        parts.append(e.data)
        pos += _ENTRY_HEAD.size
        offsets.append(pos)
        pos += len(e.data)
    return parts, offsets


class _Reader:
    """Decodes one record body; every short read or bad value is StorageCorrupted."""

    def __init__(self, body: bytes, where: str) -> None:
        self.body = body
        self.pos = 0
        self.where = where

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.body):
            raise StorageCorrupted(f"{self.where}: record ends early")
        out = self.body[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        return fmt.unpack(self.take(fmt.size))

    def hard_state(self) -> HardState:
        term, commit, n = self.unpack(_HS_HEAD)
        try:
            vote = self.take(n).decode()
        except UnicodeDecodeError as exc:
            raise StorageCorrupted(f"{self.where}: vote is not utf-8") from exc
        return HardState(term, vote or None, commit)

    def snapshot(self) -> Snapshot:
        size, index, term, n = self.unpack(_SNAP_HEAD)
        if size < 20 + n:
            raise StorageCorrupted(f"{self.where}: snapshot sizes disagree")
        try:
            membership = decode_membership(self.take(n))
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageCorrupted(f"{self.where}: membership cannot be decoded: {exc}") from exc
        return Snapshot(SnapshotMeta(index, term, membership), self.take(size - 20 - n))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _zero_fill(path: Path, size: int, rest: Callable[[], bool] = lambda: True) -> None:
    """Write `size` zero bytes to a new file at `path`, durably. Synced every megabyte: a
    64 MiB burst of dirty pages written back at once delays the log's own syncs behind it.
    `rest()` runs between megabytes (it may sleep, to spread the disk work out); when it
    returns False the fill is abandoned, leaving a short file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        left = size
        while left > 0:
            left -= os.write(fd, _ZEROS[: min(left, len(_ZEROS))])
            os.fdatasync(fd)
            if left > 0 and not rest():
                return
        os.fsync(fd)
    finally:
        os.close(fd)


def _segment_name(seq: int) -> str:
    return f"{seq:016d}{SUFFIX}"


def _segments(directory: Path) -> list[int]:
    out = []
    for p in directory.glob("*" + SUFFIX):
        stem = p.name[: -len(SUFFIX)]
        if len(stem) != 16 or not stem.isdigit() or not p.is_file():
            raise StorageCorrupted(f"unexpected file in the Raft log: {p}")
        out.append(int(stem))
    return sorted(out)


class WalStorage(ResidentStorage):
    """Opens the log in `directory`; see `exists`, `initialize`, `initialize_at` and
    `migrate` for making one. Call `close` when done (a worker thread prepares segments)."""

    def __init__(
        self,
        directory: Path,
        resident_bytes: int = RESIDENT_BYTES,
        segment_bytes: int = SEGMENT_BYTES,
        prepare: bool = True,
    ) -> None:
        self._dir = Path(directory)
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()  # guards _fds against a read racing a deletion
        self._fds: dict[int, int] = {}
        # Raft index -> (segment, data offset, length, term, kind) of its stored entry.
        self._where: dict[int, tuple[int, int, int, int, EntryKind]] = {}
        self._starts: dict[int, int] = {}  # segment -> first index when it was started
        self._spare: threading.Thread | None = None  # a fill, running or done
        # SPARE is complete and no thread writes it: made with the log, left by an earlier
        # run, or a segment that compaction released.
        self._spare_ready = False
        self._sealed = False  # the current segment has its seal: the next write rotates
        self._spare_error: OSError | None = None
        self._closed = False
        self._prepare = prepare
        self._closing = threading.Event()
        self._seqs: list[int] = []  # the segments, oldest first; the last is written
        self._seq = self._fd = self._offset = self._size = self._crc = 0
        seqs = _segments(self._dir)
        if not seqs:
            raise StorageCorrupted(f"no Raft log in {self._dir}")
        spare = self._dir / SPARE
        with contextlib.suppress(FileNotFoundError):
            # A fill that the process's end cut short leaves a short file. A full-size one
            # is a good spare, whatever it holds: the next segment's CRC chain and its seal
            # keep old bytes from passing for records.
            if spare.stat().st_size == segment_bytes:
                self._spare_ready = True
            else:
                spare.unlink()
        super().__init__(EMPTY_SNAPSHOT, resident_bytes)
        try:
            self._replay(seqs)
        except BaseException:
            self._close_fds()
            raise
        self._loaded()
        self._maybe_prepare_spare()

    # -- making a log ----------------------------------------------------------------------

    @staticmethod
    def exists(directory: Path) -> bool:
        """Whether `directory` holds a log (made by `initialize` or `migrate`)."""
        return directory.is_dir() and bool(_segments(directory))

    @staticmethod
    def initialize(
        directory: Path,
        membership: Membership,
        resident_bytes: int = RESIDENT_BYTES,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> WalStorage:
        """A new log for a founding member; refuses a directory that holds one."""
        return WalStorage._build(
            directory,
            Snapshot(SnapshotMeta(0, 0, membership)),
            HardState(),
            (),
            resident_bytes,
            segment_bytes,
        )

    @staticmethod
    def initialize_at(
        directory: Path,
        snapshot: Snapshot,
        hard_state: HardState,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> WalStorage:
        """(Re)start the log of a member joining with a ledger it already holds: the log
        begins after `snapshot`. An existing log is replaced by one reset record."""
        if not WalStorage.exists(directory):
            return WalStorage._build(
                directory, snapshot, hard_state, (), RESIDENT_BYTES, segment_bytes
            )
        storage = WalStorage(directory, segment_bytes=segment_bytes)
        try:
            storage._reset(snapshot, hard_state)
        except BaseException:
            storage.close()
            raise
        return storage

    @staticmethod
    def migrate(
        directory: Path, old: ResidentStorage, segment_bytes: int = SEGMENT_BYTES
    ) -> WalStorage:
        """A log holding what `old` (e.g. a LevelDBStorage) holds: its snapshot, hard
        state and entries. All or nothing: the log is built aside and renamed into place."""
        first, last = old.first_index(), old.last_index()
        return WalStorage._build(
            directory,
            old.snapshot(),
            old.initial_state(),
            (old.entries(i, min(i + 256, last + 1)) for i in range(first, last + 1, 256)),
            RESIDENT_BYTES,
            segment_bytes,
        )

    @staticmethod
    def _build(
        directory: Path,
        snapshot: Snapshot,
        hard_state: HardState,
        batches: Iterable[Sequence[Entry]],
        resident_bytes: int,
        segment_bytes: int,
    ) -> WalStorage:
        directory = Path(directory)
        if WalStorage.exists(directory):
            raise StorageCorrupted(f"refusing to create a Raft log: {directory} holds one")
        aside = directory.with_name(directory.name + ".new")
        shutil.rmtree(aside, ignore_errors=True)
        aside.mkdir(parents=True, mode=0o700)
        first_segment = aside / _segment_name(1)
        _zero_fill(first_segment, segment_bytes)
        # And the spare, now, before the log is in use: filled later, beside the log's
        # own synced writes, it delayed them (on a shared disk, every member's).
        _zero_fill(aside / SPARE, segment_bytes)
        body = _checkpoint_body(True, snapshot.meta.index + 1, hard_state, snapshot)
        fd = os.open(first_segment, os.O_RDWR)
        try:
            _pwrite_all(fd, _frame(body, _chain_seed(1)), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(aside)
        storage = WalStorage(aside, resident_bytes, segment_bytes, prepare=False)
        try:
            for batch in batches:
                storage.save(None, batch, None, sync=False)
            storage.sync()
        finally:
            storage.close()
        if directory.exists():
            shutil.rmtree(directory)  # no segment in it (exists() said so): nothing to keep
        os.rename(aside, directory)
        _fsync_dir(directory.parent)
        return WalStorage(directory, resident_bytes, segment_bytes)

    # -- Storage ---------------------------------------------------------------------------

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        sync: bool = True,
    ) -> None:
        if hard_state is None and not entries and snapshot is None:
            return
        old_last = self.last_index()
        entries, new_snapshot = self._admit(entries, snapshot)
        parts, offsets = _save_body(hard_state, entries, snapshot if new_snapshot else None)
        seq, base = self._write(b"".join(parts))
        if sync:
            with SYNCS.timed("raft"):
                os.fdatasync(self._fd)
        where = self._where
        if new_snapshot:
            where.clear()
        elif entries and entries[-1].index < old_last:
            for i in range(entries[-1].index + 1, old_last + 1):
                where.pop(i, None)  # an overwritten, longer suffix
        for e, offset in zip(entries, offsets, strict=True):
            where[e.index] = (seq, base + offset, len(e.data), e.term, e.kind)
        self._remember(hard_state, entries, snapshot, new_snapshot)

    def compact(self, snapshot: Snapshot) -> None:
        first = self._snapshot.meta.index + 1
        index = snapshot.meta.index
        if index < first:
            return
        if index > self.last_index():
            raise UnavailableError(f"snapshot {index} beyond last index {self.last_index()}")
        self._write(_U8.pack(_COMPACT) + _encode_snapshot(snapshot))
        released = []
        for seq, nxt in zip(self._seqs, self._seqs[1:], strict=False):
            if self._starts[nxt] > index + 1:
                break  # only the oldest segments, in order
            released.append(seq)
        if released:
            os.fdatasync(self._fd)  # the record that makes them unnecessary first
        self._forget_compacted(snapshot)
        for i in range(first, index + 1):
            self._where.pop(i, None)
        self._delete(released)

    def _load(self, index: int) -> Entry | None:
        found = self._where.get(index)
        if found is None:
            return None
        seq, offset, length, term, kind = found
        with self._lock:
            fd = self._fds.get(seq)
            if fd is None:
                return None
            data = os.pread(fd, length, offset)
        if len(data) != length:
            raise StorageCorrupted(f"entry {index}: segment {seq} is shorter than its index")
        return Entry(term, index, kind, data)

    # -- the files -------------------------------------------------------------------------

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def close(self) -> None:
        """Stop the segment preparer and close the files (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()  # a spare being filled is abandoned (removed at the next open)
        if self._spare is not None:
            self._spare.join()
        self._close_fds()

    def _close_fds(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def _write(self, body: bytes) -> tuple[int, int]:
        """Append one record; returns (segment, offset of the body)."""
        if self._closed:
            raise StorageCorrupted("the Raft log is closed")
        frame = _frame(body, self._crc)
        if self._sealed or self._offset + len(frame) + _SEAL_FRAME > self._size:
            self._rotate(len(frame))
            frame = _frame(body, self._crc)
        at = self._put_frame(frame)
        self._maybe_prepare_spare()
        return self._seq, at + _FRAME.size

    def _put_frame(self, frame: bytes) -> int:
        at = self._offset
        _pwrite_all(self._fd, frame, at)
        self._offset = at + len(frame)
        self._crc = _FRAME.unpack_from(frame)[1]
        return at

    def _rotate(self, needed: int, reset: bool = False) -> None:
        """Seal the current segment and start the next with a checkpoint of the current
        state."""
        if not self._sealed:
            self._put_frame(_frame(_SEAL_BODY.pack(_SEAL, self._seq), self._crc))
            # Sealed from here on, even if the rest of the rotation fails (a full disk): a
            # record written after the seal would be lost on replay.
            self._sealed = True
        os.fdatasync(self._fd)  # nothing synced later may depend on an unsynced record
        seq = self._seq + 1
        first_index = self.last_index() + 1
        checkpoint = _checkpoint_body(reset, first_index, self._hard_state, self._snapshot)
        size = max(self._segment_bytes, needed + len(checkpoint) + _FRAME.size + _SEAL_FRAME)
        path = self._dir / _segment_name(seq)
        spare = self._dir / SPARE
        if self._spare is not None:
            self._spare.join()
            self._spare = None
        if self._spare_error is not None or size > self._segment_bytes or not spare.exists():
            self._spare_error = None
            _zero_fill(spare, size)
        self._spare_ready = False
        os.rename(spare, path)
        _fsync_dir(self._dir)
        fd = os.open(path, os.O_RDWR)
        with self._lock:
            self._fds[seq] = fd
        self._seqs.append(seq)
        self._starts[seq] = first_index
        self._seq, self._fd, self._offset, self._size = seq, fd, 0, size
        self._crc = _chain_seed(seq)
        self._sealed = False
        self._write(checkpoint)

    def _reset(self, snapshot: Snapshot, hard_state: HardState) -> None:
        self._hard_state = hard_state
        self._snapshot = snapshot
        self._entries = []
        self._where.clear()
        self._resident_from = snapshot.meta.index + 1
        self._resident_size = 0
        self._rotate(0, reset=True)
        os.fdatasync(self._fd)
        self._delete(self._seqs[:-1])

    def _delete(self, seqs: list[int]) -> None:
        """Drop segments that compaction released; one of them becomes the next segment
        when no spare is ready or being filled (no zero fill then: its old records cannot
        pass the new segment's CRC chain, and its seal ends it)."""
        for seq in seqs:
            with self._lock:
                fd = self._fds.pop(seq, None)
            if fd is not None:
                os.close(fd)
            path = self._dir / _segment_name(seq)
            with contextlib.suppress(FileNotFoundError):
                if self._can_recycle(path):
                    os.rename(path, self._dir / SPARE)
                    self._spare_ready = True
                else:
                    path.unlink()
            self._seqs.remove(seq)
            self._starts.pop(seq, None)

    def _no_spare(self) -> bool:
        """Spares are this log's to make, and none is filled, being filled or waiting
        recycled."""
        return self._prepare and self._spare is None and not self._spare_ready

    def _can_recycle(self, path: Path) -> bool:
        return self._no_spare() and path.stat().st_size == self._segment_bytes

    def _maybe_prepare_spare(self) -> None:
        """Once the current segment is half full, fill a spare in a thread if there is
        none."""
        if self._offset > self._size // 2 and self._no_spare():
            self._prepare_spare()

    def _spare_rest(self) -> bool:
        """Between megabytes of the spare's fill: rest SPARE_PAUSE_S while the current
        segment is less than three quarters full (then not at all: the spare must be
        ready before the segment is full); False once the log is closing."""
        if self._offset < self._size * 3 // 4:
            self._closing.wait(SPARE_PAUSE_S)
        return not self._closing.is_set()

    def _prepare_spare(self) -> None:
        def fill() -> None:
            try:
                _zero_fill(self._dir / SPARE, self._segment_bytes, self._spare_rest)
            except OSError as exc:  # _rotate fills the spare itself then
                self._spare_error = exc

        self._spare = threading.Thread(target=fill, name="raft-wal-spare", daemon=True)
        self._spare.start()

    # -- replay ----------------------------------------------------------------------------

    def _replay(self, seqs: list[int]) -> None:
        reset_seq = 0  # the newest segment that starts with a reset checkpoint
        snapshot: Snapshot | None = None
        hard_state = HardState()
        log: list[Entry] = []  # contiguous; log[0].index == start
        start = 0
        for n, seq in enumerate(seqs):
            path = self._dir / _segment_name(seq)
            fd = os.open(path, os.O_RDWR)
            self._fds[seq] = fd
            self._seqs.append(seq)
            data = _SegmentBytes(fd)
            last = n == len(seqs) - 1
            crc = _chain_seed(seq)
            offset = 0
            records = 0
            sealed = False
            while not sealed:
                head = data.get(offset, offset + _FRAME.size)
                if len(head) < _FRAME.size:
                    break
                length, stored = _FRAME.unpack(head)
                if length == 0 and stored == 0:
                    # The zeros after the last record, or a torn write whose first page
                    # never reached the disk: in the last segment, clear whatever follows
                    # before anything is written here again.
                    if last:
                        _zero_tail(fd, offset, data.size)
                    break
                fits = 0 < length <= data.size - offset - _FRAME.size
                # (A length read from leftover bytes can be anything: read no further.)
                body = (
                    data.get(offset + _FRAME.size, offset + _FRAME.size + length) if fits else b""
                )
                if not fits or zlib.crc32(body, crc) != stored:
                    if not last:
                        raise StorageCorrupted(
                            f"Raft log segment {path} is damaged at byte {offset}; the "
                            "segments after it cannot be trusted either"
                        )
                    _zero_tail(fd, offset, data.size)
                    break
                where = f"{path} byte {offset}"
                kind = body[0]
                reader = _Reader(body, where)
                if records == 0 and kind != _CHECKPOINT:
                    raise StorageCorrupted(f"{where}: a segment must start with a checkpoint")
                if kind == _CHECKPOINT:
                    _, reset, first_index = reader.unpack(_CHECKPOINT_HEAD)
                    self._starts[seq] = first_index
                    hard_state = reader.hard_state()
                    cp = reader.snapshot()
                    if reset or snapshot is None or cp.meta.index > snapshot.meta.index:
                        snapshot = cp
                    if reset:
                        log, start = [], 0
                        self._where.clear()
                        reset_seq = seq
                elif kind == _SAVE:
                    _, flags = reader.unpack(_SAVE_HEAD)
                    if flags & _HAS_SNAPSHOT:
                        snapshot = reader.snapshot()
                        log, start = [], 0
                        self._where.clear()
                    if flags & _HAS_HARD_STATE:
                        hard_state = reader.hard_state()
                    (count,) = reader.unpack(_U32)
                    batch = []
                    base = offset + _FRAME.size
                    for _ in range(count):
                        term, index, ekind, size = reader.unpack(_ENTRY_HEAD)
                        at = reader.pos
                        try:
                            entry_kind = EntryKind(ekind)
                        except ValueError:
                            raise StorageCorrupted(f"{where}: entry kind {ekind}") from None
                        batch.append(Entry(term, index, entry_kind, reader.take(size)))
                        self._where[index] = (seq, base + at, size, term, entry_kind)
                    if batch:
                        first = batch[0].index
                        if log and start <= first <= start + len(log):
                            del log[first - start :]
                        else:
                            log, start = [], first  # a gap: all before it is compacted
                        log.extend(batch)
                elif kind == _COMPACT:
                    reader.unpack(_U8)
                    compacted = reader.snapshot()
                    if snapshot is None or compacted.meta.index > snapshot.meta.index:
                        snapshot = compacted
                elif kind == _SEAL:
                    _, sealed_seq = reader.unpack(_SEAL_BODY)
                    if sealed_seq != seq:
                        raise StorageCorrupted(f"{where}: the seal of segment {sealed_seq}")
                    sealed = True  # what follows is left over from the file's last use
                else:
                    raise StorageCorrupted(f"{where}: unknown record kind {kind}")
                records += 1
                crc = stored
                offset += _FRAME.size + length
            if records == 0:
                if not last:
                    raise StorageCorrupted(f"Raft log segment {path} holds no records")
                self._starts[seq] = -1  # filled in below: a rotation that crashed
            self._seq, self._fd, self._offset, self._size = seq, fd, offset, data.size
            self._crc = crc
            self._sealed = sealed
        if snapshot is None:
            raise StorageCorrupted(f"the Raft log in {self._dir} has no checkpoint")
        # The log after the newest snapshot must be whole.
        keep = snapshot.meta.index + 1
        if log and start > keep:
            raise StorageCorrupted(
                f"Raft log entries {keep}..{start - 1} are missing (snapshot {keep - 1})"
            )
        log = log[max(0, keep - start) :]
        last_index = log[-1].index if log else snapshot.meta.index
        for i in [i for i in self._where if not keep <= i <= last_index]:
            del self._where[i]
        self._snapshot = snapshot
        self._hard_state = hard_state
        self._entries = log
        if self._starts[self._seq] == -1:
            # The newest segment was made but its checkpoint never written: write it now.
            self._starts[self._seq] = self.last_index() + 1
            self._write(_checkpoint_body(False, self.last_index() + 1, hard_state, snapshot))
            os.fdatasync(self._fd)
        stale = [seq for seq in self._seqs if seq < reset_seq]
        if stale:
            # A reset (initialize_at) stopped before it deleted the segments it replaced.
            os.fdatasync(self._fds[reset_seq])
            self._delete(stale)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    written = os.pwrite(fd, data, offset)
    if written != len(data):  # a regular file writes all or raises; never half silently
        raise OSError(f"short write to the Raft log: {written} of {len(data)} bytes")


def _frame(body: bytes, prev_crc: int) -> bytes:
    return _FRAME.pack(len(body), zlib.crc32(body, prev_crc)) + body


def _chain_seed(seq: int) -> int:
    return zlib.crc32(_U64.pack(seq))


class _SegmentBytes:
    """A segment, read from its start only as far as replay asks: not the zeros after
    the last record (most of a segment, most of the time)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self._buf = bytearray()

    def get(self, start: int, end: int) -> bytes:
        """Bytes start..end, fewer at the end of the file."""
        while len(self._buf) < min(end, self.size):
            want = min(max(end - len(self._buf), 1024 * 1024), self.size - len(self._buf))
            chunk = os.pread(self.fd, want, len(self._buf))
            if not chunk:
                break
            self._buf += chunk
        return bytes(self._buf[start:end])


def _zero_tail(fd: int, offset: int, size: int) -> None:
    """Zero what follows the last whole record (a torn write, or the bytes of the file's
    earlier use) up to the file's last non-zero byte, and sync it. Read from the end a
    megabyte at a time: a zero-filled segment's tail costs reads, not writes, and memory
    stays at a megabyte."""
    end = size
    while end > offset:
        start = max(offset, end - len(_ZEROS))
        left = os.pread(fd, end - start, start).rstrip(b"\0")
        if left:
            end = start + len(left)
            break
        end = start
    if end <= offset:
        return
    while offset < end:
        offset += os.pwrite(fd, _ZEROS[: min(end - offset, len(_ZEROS))], offset)
    os.fdatasync(fd)
