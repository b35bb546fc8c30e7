"""Two defects of py-libp2p 0.8.1 that take a loaded node down, and our guard for each
(docs/decisions/008-libp2p-hardening.md).

1. A write cancelled half-way corrupts the whole connection. Yamux serialises frames
   with a lock, but `secured_conn.write` (Noise: encrypt, then send) can be cancelled
   after part of a Noise message reached the socket — by any timeout around a stream
   write. The peer then reads garbage: "Failed authentication of message", Raft frames
   announcing 143 MB, pubsub RPCs that fail to parse. Guard: a frame, once started, is
   written in full (shielded); if the socket does not take it within WRITE_STALL_S, the
   connection is closed rather than left half-written.
2. Pubsub's stream handler catches only some errors: a `DecodeError` from one bad RPC
   escapes into the swarm and ends the node. Guard: every pubsub stream handler is
   wrapped; a stream that fails is reset and its peer handled as gone (it reconnects).

And one cost (not a defect): every pubsub RPC carries the sender's signed peer record.
Sending one rebuilds the host's address list (multiaddr parsing) to see whether the
cached record is still current; receiving one checks its signature and rewrites the
peerstore entry — per RPC, a fifth of a follower's trio time at 200 tx/s.
`cache_peer_records` reuses the sent record for RECORD_REUSE_S and accepts a record
byte-identical to the one last accepted from the same (Noise-authenticated) peer
without checking it again: the same bytes give the same answer.

And Yamux's receive-window policy (`tune_yamux`): py-libp2p 0.8.1 answers nearly every
read of a stream with a WINDOW_UPDATE frame, an extra Noise-encrypted write per message
received, and looks its PY_YAMUX_* settings up in the environment on every read. We use
go-yamux's policy (an update once half the window is consumed) and read the settings
once, at start-up.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

import structlog
import trio

log = structlog.get_logger("medledger.p2p")

WRITE_STALL_S = 30.0
RECORD_REUSE_S = 60.0
PATCHED_VERSION = "0.8.1"


def _pinned_version() -> bool:
    """Whether the installed py-libp2p is the one these patches were made for (a warning
    when it is not: the node then runs without them)."""
    version = metadata.version("libp2p")
    if version != PATCHED_VERSION:
        log.warning("libp2p_unpatched", version=version, expected=PATCHED_VERSION)
        return False
    return True


def harden_yamux() -> bool:
    """Replace Yamux._write_frame with the guarded version (once per process). False,
    with a warning, if the installed py-libp2p is not the version this was made for."""
    from libp2p.io.exceptions import IOException
    from libp2p.stream_muxer.yamux.yamux import Yamux

    if getattr(Yamux._write_frame, "_medledger_guard", False):
        return True
    if not _pinned_version():
        return False

    async def _write_frame(self: Any, data: bytes) -> None:
        async with self._write_lock:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(WRITE_STALL_S) as stalled:
                    await self.secured_conn.write(data)
                if stalled.cancelled_caught:
                    # Part of a frame may be on the wire: nothing after it could be read.
                    with trio.move_on_after(1):
                        await self.secured_conn.close()
                    raise IOException(f"write stalled for {WRITE_STALL_S} s; connection closed")
        await trio.lowlevel.checkpoint()

    _write_frame._medledger_guard = True  # type: ignore[attr-defined]
    Yamux._write_frame = _write_frame  # type: ignore[method-assign]
    return True


def tune_yamux() -> bool:
    """Give Yamux streams go-yamux's receive-window policy: a WINDOW_UPDATE only once half
    the receive window has been consumed (with go-yamux's window auto-tuning when one is
    sent), instead of one after (nearly) every read; and read py-libp2p's per-read
    PY_YAMUX_* debug and timeout settings once. False, with a warning, if the installed
    py-libp2p is not the version this was made for."""
    from libp2p.stream_muxer.yamux import yamux

    if not _pinned_version():
        return False
    if getattr(yamux, "_medledger_tuned", False):
        return True

    async def window_update(self: Any, *, bytes_read: int = 0) -> None:
        async with self.window_lock:
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            delta = self.target_recv_window - (self.recv_window + buffered)
            if delta < self.target_recv_window // 2:
                return  # the sender may still send at least half a window
            self.recv_window += delta
            delta += self._apply_autotune_epoch(buffered)
        await self.send_window_update(delta, skip_lock=True)

    window_update.replaced = yamux.YamuxStream._auto_tune_and_send_window_update  # type: ignore[attr-defined]
    yamux.YamuxStream._auto_tune_and_send_window_update = window_update  # type: ignore[method-assign]
    for name in ("_perf_yamux_debug_enabled", "_yamux_data_read_timeout"):
        value = getattr(yamux, name)()
        setattr(yamux, name, lambda value=value: value)
    yamux._medledger_tuned = True  # type: ignore[attr-defined]
    return True


def guard_pubsub_handlers(host: Any, pubsub: Any, protocols: list[Any]) -> None:
    """Re-register the pubsub stream handler for `protocols` so that no error of one
    stream escapes into the swarm."""
    handler: Callable[[Any], Awaitable[None]] = pubsub.stream_handler

    async def guarded(stream: Any) -> None:
        try:
            await handler(stream)
        except Exception as exc:  # one peer's bad stream must not end the node
            peer_id = getattr(getattr(stream, "muxed_conn", None), "peer_id", None)
            log.warning("gossip_stream_failed", reason=str(exc), kind=type(exc).__name__)
            with trio.move_on_after(1), contextlib.suppress(Exception):
                await stream.reset()
            if peer_id is not None:
                pubsub._handle_dead_peer(peer_id)

    for protocol in protocols:
        host.set_stream_handler(protocol, guarded)


def cache_peer_records() -> bool:
    """Patch pubsub's signed-peer-record handling as the module docstring says (once
    per process). False, with a warning, on another py-libp2p version."""
    from libp2p.pubsub import floodsub, gossipsub, pubsub

    modules: tuple[Any, ...] = (pubsub, gossipsub, floodsub)
    if getattr(modules[0].env_to_send_in_RPC, "_medledger_cache", False):
        return True
    if not _pinned_version():
        return False
    env_to_send_in_RPC, maybe_consume_signed_record = record_caches(
        modules[0].env_to_send_in_RPC, modules[0].maybe_consume_signed_record
    )
    env_to_send_in_RPC._medledger_cache = True  # type: ignore[attr-defined]
    for module in modules:
        module.env_to_send_in_RPC = env_to_send_in_RPC
        module.maybe_consume_signed_record = maybe_consume_signed_record
    return True


def record_caches(
    issue: Callable[[Any], tuple[bytes, bool]], consume: Callable[[Any, Any, Any], bool]
) -> tuple[Callable[[Any], tuple[bytes, bool]], Callable[[Any, Any, Any], bool]]:
    """Caching versions of py-libp2p's `env_to_send_in_RPC` and
    `maybe_consume_signed_record` (see the module docstring)."""
    issued: dict[int, tuple[bytes, float]] = {}  # id(host) -> (record, when)
    accepted: dict[Any, bytes] = {}  # peer id -> the record last accepted from it

    def env_to_send_in_RPC(host: Any) -> tuple[bytes, bool]:
        now = time.monotonic()
        cached = issued.get(id(host))
        if cached is not None and now - cached[1] < RECORD_REUSE_S:
            return cached[0], False
        record, fresh = issue(host)
        issued[id(host)] = (record, now)
        return record, fresh

    def maybe_consume_signed_record(msg: Any, host: Any, peer_id: Any) -> bool:
        if not msg.HasField("senderRecord"):
            return True
        record = msg.senderRecord
        if accepted.get(peer_id) == record:
            return True
        ok = consume(msg, host, peer_id)
        if ok:
            accepted[peer_id] = record
        return ok

    return env_to_send_in_RPC, maybe_consume_signed_record
