"""One member of a 3-member MedLedger Raft group, for the Raft-only benchmark.

    python -m perf.raft.member --id n1 --raft n1=7001,n2=7002,n3=7003 --client-port 7101 \
        --data /tmp/n1 [--storage wal|leveldb] [--tick-ms 50] [--async-save loop|writer|off]
        [--no-fsync] [--save-in-thread] [--profile out.prof]

Our RawNode over durable storage (the write-ahead log the nodes use, `--storage wal`, or
LevelDBStorage, `--storage leveldb`), driven by one trio task in the order the core
asks for: persist (synced when `must_sync`), send, apply, advance; except that a
leader's Ready marked `async_save` goes out before its save (Raft thesis §10.2.1: the
leader writes its log in parallel with replicating it and counts itself toward a commit
once the write is durable). `--async-save loop` (default) sends such a Ready's messages
and client acknowledgements, lets the sender tasks run, then saves on the event loop;
`writer` hands the save to one long-lived writer thread and takes the next Ready at once
(reported back with `RawNode.persisted`); `off` persists before sending everywhere.
Followers always persist before they acknowledge. Other saves run on the event loop: on
this 2-core machine a `trio.to_thread` hop per synced Ready (`--save-in-thread`, what
RaftOrderer does) cost ~35 us of CPU per op. Whatever arrives during a save goes into
the next Ready (group commit). Peers talk over one persistent TCP connection per
direction on 127.0.0.1; all messages to one peer from one Ready travel in one
length-prefixed frame (raft_wire). Clients send 300-byte commands on `--client-port`;
each is one proposal, acknowledged when its entry is applied here. The state machine
only counts. SIGTERM stops the member cleanly.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import json
import queue
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import plyvel
import trio

from node import gctune
from node.consensus import (
    CommitNotice,
    Entry,
    EntryKind,
    HardState,
    Membership,
    Message,
    NotLeader,
    ProposalDropped,
    RaftConfig,
    RawNode,
    Ready,
    Role,
    Snapshot,
)
from node.consensus.leveldb_storage import LevelDBStorage
from node.consensus.resident import ResidentStorage
from node.consensus.wal_storage import WalStorage
from node.ordering import raft_wire
from perf.raft.framing import FrameBuffer, Op, Status, frame, parse_head, response

HOST = "127.0.0.1"
RECV_BYTES = 1 << 18
# Compaction keeps the in-memory log bounded, as the real orderer does. Small steps
# (each is one synced LevelDB batch of deletes) keep the pause short; members compact
# at different indexes so that two of them never pause for the same entry.
COMPACT_EVERY = 2_000
COMPACT_KEEP = 1_000
# Frames queued for a peer that is down are dropped beyond this; Raft retransmits.
MAX_QUEUED_FRAMES = 1_000


class Pauses:
    """Saves, compactions and garbage collections longer than 20 ms, by kind: what can
    stop a member's event loop (perf/raft/README.md, the tail)."""

    LIMIT_S = 0.02

    def __init__(self) -> None:
        self.kinds: dict[str, list[float]] = {}
        self._gc_started = 0.0
        gc.callbacks.append(self._gc)

    def note(self, kind: str, seconds: float) -> None:
        if seconds > self.LIMIT_S:
            self.kinds.setdefault(kind, []).append(seconds)

    def _gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.note(f"gc{info.get('generation', '?')}", time.perf_counter() - self._gc_started)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            kind: {
                "n": len(xs),
                "max_ms": round(1e3 * max(xs), 1),
                "sum_ms": round(1e3 * sum(xs), 1),
            }
            for kind, xs in self.kinds.items()
        }


class PeerLink:
    """Outgoing connection to one peer: frames queued by the Ready loop, written (all
    pending ones in one send) by `run`, which reconnects after a failure."""

    def __init__(self, member: Member, peer: str, port: int) -> None:
        self.member = member
        self.peer = peer
        self.port = port
        self.frames: list[bytes] = []
        self.wake = trio.Event()

    def push(self, data: bytes) -> None:
        if len(self.frames) >= MAX_QUEUED_FRAMES:
            self.frames.clear()
        self.frames.append(data)
        self.wake.set()

    async def run(self) -> None:
        while True:
            try:
                stream = await trio.open_tcp_stream(HOST, self.port)
            except OSError:
                await trio.sleep(0.05)
                continue
            stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await stream.send_all(frame(self.member.node_id.encode()))
                while True:
                    await self.wake.wait()
                    self.wake = trio.Event()
                    batch, self.frames = self.frames, []
                    if batch:
                        await stream.send_all(b"".join(batch))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.frames.clear()
                self.member.node.report_unreachable(self.peer)
                self.member.wake.set()
            finally:
                await stream.aclose()
            await trio.sleep(0.05)


class Writer:
    """One long-lived thread that saves a leader's asynchronous Readys in order, so that
    the Ready loop goes on while LevelDB fsyncs (plyvel releases the GIL for the write).
    Completion is reported on the trio thread with `token.run_sync_soon`, in order."""

    def __init__(self, storage: ResidentStorage, token: trio.lowlevel.TrioToken) -> None:
        self.storage = storage
        self.token = token
        self.jobs: queue.SimpleQueue[
            tuple[HardState | None, tuple[Entry, ...], bool, Callable[[], None]] | None
        ] = queue.SimpleQueue()
        self.pending = 0  # submitted, not yet reported done (trio thread only)
        self.idle = trio.Event()
        self.idle.set()
        self.thread = threading.Thread(target=self._run, name="raft-writer", daemon=True)
        self.thread.start()

    def submit(
        self,
        hard_state: HardState | None,
        entries: tuple[Entry, ...],
        sync: bool,
        done: Callable[[], None],
    ) -> None:
        if self.pending == 0:
            self.idle = trio.Event()
        self.pending += 1
        self.jobs.put((hard_state, entries, sync, done))

    async def drain(self) -> None:
        """Wait until every submitted save is durable and reported."""
        while self.pending:
            await self.idle.wait()

    def close(self) -> None:
        self.jobs.put(None)
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            hard_state, entries, sync, done = job
            self.storage.save(hard_state, entries, None, sync)
            try:
                self.token.run_sync_soon(done)
            except trio.RunFinishedError:
                return  # the member is stopping

    def finished(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self.idle.set()


class ClientConn:
    """A client connection: acknowledgements are buffered and flushed once per Ready."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.out = bytearray()
        self.wake = trio.Event()
        self.closed = False

    def queue(self, data: bytes) -> None:
        self.out += data

    async def writer(self) -> None:
        while not self.closed:
            await self.wake.wait()
            self.wake = trio.Event()
            if self.out:
                data, self.out = bytes(self.out), bytearray()
                await self.stream.send_all(data)


class Member:
    def __init__(
        self,
        node_id: str,
        raft_ports: dict[str, int],
        client_port: int,
        data_dir: Path,
        tick_s: float,
        fsync: bool,
        save_in_thread: bool,
        apply_early: bool = False,
        async_save: str = "loop",
        commit_notice: CommitNotice | None = None,
        compact_every: int = COMPACT_EVERY,
        write_buffer_mb: int = 0,
        storage: str = "wal",
        segment_mb: int = 64,
    ) -> None:
        self.node_id = node_id
        self.raft_ports = raft_ports
        self.client_port = client_port
        self.tick_s = tick_s
        self.fsync = fsync
        self.save_in_thread = save_in_thread
        self.apply_early = apply_early
        self.async_save = async_save
        self.writer: Writer | None = None
        # LevelDB's 4 MiB memtable fills about every second here (300-byte commands at
        # ~17,000/s); each switch starts a new log file and a compaction beside the
        # synced writes. 0 keeps LevelDB's default.
        buffer = {"write_buffer_size": write_buffer_mb << 20} if write_buffer_mb else {}
        self.db: plyvel.DB | None = None
        self.storage: ResidentStorage
        if storage == "wal":
            self.storage = WalStorage.initialize(
                data_dir / "raft", Membership.of(raft_ports), segment_bytes=segment_mb << 20
            )
        else:
            self.db = plyvel.DB(
                str(data_dir), create_if_missing=True, error_if_exists=True, **buffer
            )
            self.storage = LevelDBStorage.initialize(self.db, Membership.of(raft_ports))
        config = RaftConfig(id=node_id, election_tick=10, heartbeat_tick=1)
        if commit_notice is not None:
            config = dataclasses.replace(config, commit_notice=commit_notice)
        self.node = RawNode(config, self.storage, random.Random(node_id))
        self.wake = trio.Event()
        self.links = {
            peer: PeerLink(self, peer, port) for peer, port in raft_ports.items() if peer != node_id
        }
        self.role = Role.FOLLOWER
        self.pending: dict[int, tuple[ClientConn, int]] = {}
        self.dirty: set[ClientConn] = set()
        self.applied_ops = 0
        self.pauses = Pauses()
        self.applied_index = 0
        self.snapshot_index = 0
        self.compact_every = compact_every
        self.compact_offset = sorted(raft_ports).index(node_id) * compact_every // 3
        self.readies = 0
        self.synced_saves = 0
        self.async_saves = 0

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            peer_port = self.raft_ports[self.node_id]
            await nursery.start(partial(trio.serve_tcp, self._serve_peer, peer_port, host=HOST))
            await nursery.start(
                partial(trio.serve_tcp, self._serve_client, self.client_port, host=HOST)
            )
            for link in self.links.values():
                nursery.start_soon(link.run)
            nursery.start_soon(self._ticker)
            nursery.start_soon(self._watch_loop)
            if self.async_save == "writer":
                self.writer = Writer(self.storage, trio.lowlevel.current_trio_token())
            nursery.start_soon(self._ready_loop)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
        if self.writer is not None:
            self.writer.close()

    # ---- network inputs ------------------------------------------------------------------

    async def _serve_peer(self, stream: trio.SocketStream) -> None:
        buf = FrameBuffer()
        sender: str | None = None
        node = self.node
        async with stream:
            while True:
                data = await stream.receive_some(RECV_BYTES)
                if not data:
                    return
                for body in buf.feed(data):
                    if sender is None:
                        sender = body.decode()
                        if sender not in self.links:
                            return
                        continue
                    try:
                        messages = raft_wire.decode(body, sender)
                    except raft_wire.WireError as exc:
                        print(f"dropping peer {sender}: {exc}", file=sys.stderr, flush=True)
                        return
                    for message in messages:
                        node.step(message)
                self.wake.set()

    async def _serve_client(self, stream: trio.SocketStream) -> None:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = ClientConn(stream)
        buf = FrameBuffer()
        node = self.node
        try:
            async with stream, trio.open_nursery() as nursery:
                nursery.start_soon(conn.writer)
                while True:
                    data = await stream.receive_some(RECV_BYTES)
                    if not data:
                        break
                    for body in buf.feed(data):
                        op, request_id, payload = parse_head(body)
                        if op == Op.IS_LEADER:
                            leader = self.role is Role.LEADER
                            conn.queue(
                                response(Status.LEADER if leader else Status.NOT_LEADER, request_id)
                            )
                            conn.wake.set()
                            continue
                        try:
                            index = node.propose([payload])
                        except NotLeader:
                            conn.queue(response(Status.NOT_LEADER, request_id))
                            conn.wake.set()
                            continue
                        except ProposalDropped:
                            conn.queue(response(Status.FAILED, request_id))
                            conn.wake.set()
                            continue
                        self.pending[index] = (conn, request_id)
                    self.wake.set()
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            conn.closed = True

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(self.tick_s)
            self.node.tick()
            self.wake.set()

    # ---- the Ready loop ------------------------------------------------------------------

    async def _ready_loop(self) -> None:
        node = self.node
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            while node.has_ready():
                await self._handle(node.ready())
                self._flush_acks()

    async def _handle(self, rd: Ready) -> None:
        self.readies += 1
        if rd.async_save and self.async_save != "off":
            await self._handle_async(rd)
            return
        if self.writer is not None:
            await self.writer.drain()  # a Ready that must be durable first waits for them
        committed = rd.committed_entries
        if self.apply_early and committed:
            # Diagnostic (not the documented loop order): entries committed in this Ready
            # that an earlier save already made durable here need not wait for this
            # Ready's fsync. Committed entries are never overwritten, so index <= the
            # stored last index means stored.
            stored = self.storage.last_index()
            n = 0
            while n < len(committed) and committed[n].index <= stored:
                n += 1
            self._apply(committed[:n])
            self._flush_acks()
            committed = committed[n:]
        if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
            sync = rd.must_sync and self.fsync
            self.synced_saves += sync
            if self.save_in_thread and sync:
                await trio.to_thread.run_sync(
                    self.storage.save, rd.hard_state, rd.entries, rd.snapshot, sync
                )
            else:
                self._save(rd.hard_state, rd.entries, rd.snapshot, sync)
        if rd.messages:
            self._send(rd.messages)
        if rd.soft_state is not None:
            self._role_changed(rd.soft_state.role)
        self._apply(committed)
        self.node.advance(rd)
        if rd.committed_entries:
            self.applied_index = rd.committed_entries[-1].index
            self._maybe_compact()

    async def _handle_async(self, rd: Ready) -> None:
        """A leader's Ready: its messages depend only on its entries, which followers
        may hold before it does; its committed entries are durable here already. Send
        and acknowledge first, save after (or in the writer thread)."""
        if rd.messages:
            self._send(rd.messages)
        if rd.soft_state is not None:
            self._role_changed(rd.soft_state.role)
        self._apply(rd.committed_entries)
        self._flush_acks()
        sync = rd.must_sync and self.fsync
        has_save = rd.hard_state is not None or bool(rd.entries)
        if self.writer is not None:
            if has_save:
                self.async_saves += 1
                self.synced_saves += sync
                self.writer.submit(rd.hard_state, rd.entries, sync, self._saved(rd.entries))
            self.node.advance_async(rd)
        else:
            if has_save:
                # Two checkpoints: the peer and client senders woken above run (their
                # sends reach the kernel) before the fsync blocks this thread.
                await trio.sleep(0)
                await trio.sleep(0)
                self.async_saves += 1
                self.synced_saves += sync
                self._save(rd.hard_state, rd.entries, None, sync)
            self.node.advance(rd)
        if rd.committed_entries:
            self.applied_index = rd.committed_entries[-1].index
            self._maybe_compact()

    def _saved(self, entries: tuple[Entry, ...]) -> Callable[[], None]:
        def done() -> None:
            assert self.writer is not None
            self.writer.finished()
            if entries:
                self.node.persisted(entries[-1].index, entries[-1].term)
            self.wake.set()

        return done

    def _apply(self, entries: Sequence[Entry]) -> None:
        """The no-op state machine: count, and acknowledge our clients' commands."""
        for entry in entries:
            if entry.kind is EntryKind.NORMAL:
                self.applied_ops += 1
                waiter = self.pending.pop(entry.index, None)
                if waiter is not None:
                    conn, request_id = waiter
                    conn.queue(response(Status.COMMITTED, request_id))
                    self.dirty.add(conn)

    def _flush_acks(self) -> None:
        for conn in self.dirty:
            conn.wake.set()
        self.dirty.clear()

    def _send(self, messages: Sequence[Message]) -> None:
        by_peer: dict[str, list[Message]] = {}
        for m in messages:
            by_peer.setdefault(m.to, []).append(m)
        for peer, batch in by_peer.items():
            link = self.links.get(peer)
            if link is not None:
                link.push(frame(raft_wire.encode(batch)))

    def _role_changed(self, role: Role) -> None:
        was_leader = self.role is Role.LEADER
        self.role = role
        if was_leader and role is not Role.LEADER:
            # Our proposals may never commit; tell their clients instead of hanging them.
            for conn, request_id in self.pending.values():
                conn.queue(response(Status.NOT_LEADER, request_id))
                self.dirty.add(conn)
            self.pending.clear()

    def _maybe_compact(self) -> None:
        index = self.applied_index - COMPACT_KEEP - self.compact_offset
        if index - self.snapshot_index < self.compact_every:
            return
        if self.writer is not None and self.writer.pending:
            return  # the storage's memory copy has one writer at a time; retry later
        started = time.perf_counter()
        self.storage.compact(self.node.make_snapshot(index, b""))
        self.pauses.note("compact", time.perf_counter() - started)
        self.snapshot_index = index

    async def _watch_loop(self) -> None:
        """Wakes every 5 ms; oversleeping by more than 20 ms means the loop was blocked
        (or this process not scheduled)."""
        while True:
            started = time.perf_counter()
            await trio.sleep(0.005)
            self.pauses.note("loop_lag", time.perf_counter() - started - 0.005)

    def _save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        sync: bool,
    ) -> None:
        """A save on the event loop, timed: a slow one stalls this member whole."""
        started = time.perf_counter()
        self.storage.save(hard_state, entries, snapshot, sync)
        self.pauses.note("save", time.perf_counter() - started)

    def stats(self) -> dict[str, object]:
        status = self.node.status()
        return {
            "pauses_over_20ms": self.pauses.summary(),
            "id": self.node_id,
            "role": status.role.name.lower(),
            "term": status.term,
            "applied_index": self.applied_index,
            "applied_ops": self.applied_ops,
            "readies": self.readies,
            "synced_saves": self.synced_saves,
            "async_saves": self.async_saves,
        }


def parse_ports(text: str) -> dict[str, int]:
    pairs = (item.split("=", 1) for item in text.split(","))
    return {name: int(port) for name, port in pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--id", required=True)
    parser.add_argument("--raft", required=True, help="id=port,... for every member")
    parser.add_argument("--client-port", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True, help="a new LevelDB directory")
    parser.add_argument("--tick-ms", type=float, default=50.0)
    parser.add_argument("--no-fsync", action="store_true", help="diagnostic: unsynced saves")
    parser.add_argument(
        "--save-in-thread", action="store_true", help="diagnostic: fsync in a worker thread"
    )
    parser.add_argument(
        "--gc-threshold", type=int, help="gc.set_threshold(N, 50, 100) after gc.freeze()"
    )
    parser.add_argument(
        "--apply-early",
        action="store_true",
        help="diagnostic: apply already-stored committed entries before this Ready's fsync",
    )
    parser.add_argument(
        "--async-save",
        choices=("loop", "writer", "off"),
        default="loop",
        help="how a leader saves a Ready it may send first (see the module docstring)",
    )
    parser.add_argument(
        "--commit-notice",
        choices=[c.value for c in CommitNotice],
        help="RaftConfig.commit_notice: when followers hear of commits (default: the core's)",
    )
    parser.add_argument(
        "--compact-every", type=int, default=COMPACT_EVERY, help="entries between compactions"
    )
    parser.add_argument(
        "--write-buffer-mb", type=int, default=0, help="LevelDB write_buffer_size (0: default)"
    )
    parser.add_argument(
        "--storage",
        choices=("wal", "leveldb"),
        default="wal",
        help="the Raft log: the nodes' write-ahead log, or LevelDB as earlier builds",
    )
    parser.add_argument(
        "--gc-defaults", action="store_true", help="Python's collector settings, untuned"
    )
    parser.add_argument("--segment-mb", type=int, default=64, help="WAL segment size")
    parser.add_argument("--profile", type=Path, help="write cProfile stats here on exit")
    args = parser.parse_args(argv)
    if args.gc_threshold and args.gc_defaults:
        parser.error("--gc-threshold and --gc-defaults exclude each other")
    member = Member(
        args.id,
        parse_ports(args.raft),
        args.client_port,
        args.data,
        args.tick_ms / 1000,
        fsync=not args.no_fsync,
        save_in_thread=args.save_in_thread,
        apply_early=args.apply_early,
        async_save=args.async_save,
        commit_notice=CommitNotice(args.commit_notice) if args.commit_notice else None,
        compact_every=args.compact_every,
        write_buffer_mb=args.write_buffer_mb,
        storage=args.storage,
        segment_mb=args.segment_mb,
    )
    if args.gc_threshold:
        gc.freeze()
        gc.set_threshold(args.gc_threshold, 50, 100)
    elif not args.gc_defaults:
        gctune.tune()  # the collector as the node sets it (node/gctune.py)
    profiler = cProfile.Profile() if args.profile else None
    try:
        if profiler is not None:
            profiler.enable()
        trio.run(member.run)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(args.profile))
        print(json.dumps(member.stats()), flush=True)
        if isinstance(member.storage, WalStorage):
            member.storage.close()
        if member.db is not None:
            member.db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
