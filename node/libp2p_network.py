"""`PeerNetwork` over py-libp2p: the consortium's closed network (DESIGN §3.1, §4).

- One libp2p host per node with its Ed25519 `p2p.key`; Noise is the only security
  transport offered (py-libp2p's default also offers plaintext, NOTES.md); an optional
  consortium pre-shared key makes outsiders fail before the handshake.
- Permissioned: only the peer ids of the genesis block's nodes are admitted. Any other
  peer is disconnected as soon as its connection opens, and every stream handler checks
  the remote peer id again before it reads a byte.
- One-way frames (`send`) go through a bounded queue per peer and protocol, written on a
  long-lived stream that is reopened after failures; requests open a stream each.
- Frames are length-prefixed (4 bytes, big-endian) with a size limit; a peer that sends
  an oversize or truncated frame has its stream reset and is counted.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from node.net import Handler, NetworkError
from node.p2p_hardening import cache_peer_records, harden_yamux, tune_yamux

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("medledger.p2p")

MAX_FRAME = 64 * 1024 * 1024
QUEUE_FRAMES = 1024
# Bytes queued for one peer and protocol before `send` refuses more (one payload is
# always taken when nothing is queued); a peer that reads slowly then costs at most this,
# and Raft hears it as unreachable and probes instead of streaming.
QUEUE_BYTES = 16 * 1024 * 1024
# At most this much of the queue is framed into one write (a longer queue is several).
COALESCE_BYTES = 1024 * 1024


class _Outbox:
    """One peer's and protocol's queue of payloads, bounded by count and bytes."""

    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[bytes](QUEUE_FRAMES)
        self.bytes = 0

    def put(self, payload: bytes) -> bool:
        if self.bytes and self.bytes + len(payload) > QUEUE_BYTES:
            return False
        try:
            self.send.send_nowait(payload)
        except trio.WouldBlock:
            return False
        self.bytes += len(payload)
        return True

    async def take(self) -> bytes:
        """The framed bytes of the next payloads, at most COALESCE_BYTES unless one
        payload is larger; waits for the first."""
        payload = await self.receive.receive()
        batch = [frame(payload)]
        size = len(payload)
        while size < COALESCE_BYTES:
            try:
                payload = self.receive.receive_nowait()
            except trio.WouldBlock:
                break
            batch.append(frame(payload))
            size += len(payload)
        self.bytes -= size
        return batch[0] if len(batch) == 1 else b"".join(batch)


class FrameError(Exception):
    pass


@dataclass(frozen=True)
class Peer:
    name: str
    peer_id: str
    address: str  # multiaddr with /p2p/<peer id>


def libp2p_key_pair(key: ed25519.Ed25519PrivateKey) -> Any:
    from libp2p.crypto.ed25519 import Ed25519PrivateKey
    from libp2p.crypto.keys import KeyPair

    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    private = Ed25519PrivateKey.from_bytes(raw)
    return KeyPair(private, private.get_public_key())


class FrameReader:
    """Sans-IO: bytes in, frames out."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= 4:
            size = int.from_bytes(self._buffer[:4], "big")
            if size > self.max_frame:
                raise FrameError(f"frame of {size} bytes exceeds {self.max_frame}")
            if len(self._buffer) < 4 + size:
                break
            frames.append(bytes(self._buffer[4 : 4 + size]))
            del self._buffer[: 4 + size]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buffer)


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


async def frames(stream: Any, reader: FrameReader) -> AsyncIterator[bytes]:
    """Every frame of a stream, in order, until its clean end."""
    from libp2p.network.stream.exceptions import StreamEOF

    while True:
        try:
            data = await stream.read(65536)
        except StreamEOF:
            data = b""
        if not data:
            if reader.pending:
                raise FrameError("stream ended inside a frame")
            return
        for payload in reader.feed(data):
            yield payload


async def _next_frame(stream: Any, reader: FrameReader) -> bytes | None:
    """The next frame of a stream read with `reader` (which keeps what follows it), or
    None when the stream ends first."""
    async for payload in frames(stream, reader):
        return payload
    return None


async def _discard(stream: Any) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(Exception):
        await stream.reset()


class Libp2pNetwork:
    def __init__(
        self,
        name: str,
        key: ed25519.Ed25519PrivateKey,
        listen: str,
        peers: Mapping[str, Peer],
        psk: str = "",
    ) -> None:
        import libp2p
        from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
        from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
        from libp2p.security.noise.transport import Transport as NoiseTransport

        harden_yamux()
        tune_yamux()
        cache_peer_records()
        self.name = name
        self.listen = listen
        self.peers_by_name = {n: p for n, p in peers.items() if n != name}
        self.names_by_id = {p.peer_id: n for n, p in peers.items()}
        key_pair = libp2p_key_pair(key)
        noise = NoiseTransport(libp2p_keypair=key_pair, noise_privkey=x25519_key_pair().private_key)
        self.host = libp2p.new_host(key_pair=key_pair, sec_opt={NOISE: noise}, psk=psk or None)
        self.peer_id = self.host.get_id().to_base58()
        self.refused_peers = 0
        self.malformed = 0
        self._queues: dict[tuple[str, str], _Outbox] = {}
        # request(): an open stream and its reader per (peer, protocol), and a lock so
        # that one request at a time uses it.
        self._request_streams: dict[tuple[str, str], tuple[Any, FrameReader]] = {}
        self._request_locks: dict[tuple[str, str], trio.Lock] = {}
        self._nursery: trio.Nursery | None = None
        # Test hook (testing.p2p_capture): sees every payload this node sends, before
        # Noise encrypts it, as (peer, protocol, payload).
        self.tap: Callable[[str, str, bytes], None] | None = None

    # -- PeerNetwork -----------------------------------------------------------------------

    def handle(self, protocol: str, handler: Handler) -> None:
        async def on_stream(stream: Any) -> None:
            peer = self._admitted(stream)
            if peer is None:
                await stream.reset()
                return
            try:
                async for payload in frames(stream, FrameReader()):
                    reply = await handler(peer, payload)
                    if reply is not None:
                        if self.tap is not None:
                            self.tap(peer, protocol, reply)
                        await stream.write(frame(reply))
            except FrameError as exc:
                self.malformed += 1
                log.warning("frame_refused", peer=peer, protocol=protocol, reason=str(exc))
                await stream.reset()
            except Exception as exc:  # a broken stream ends this stream only
                log.debug("stream_ended", peer=peer, protocol=protocol, reason=str(exc))
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await stream.close()

        self.host.set_stream_handler(protocol, on_stream)  # type: ignore[arg-type]

    def send(self, peer: str, protocol: str, payload: bytes) -> bool:
        if peer not in self.peers_by_name or self._nursery is None:
            return False
        if self.tap is not None:
            self.tap(peer, protocol, payload)
        outbox = self._queues.get((peer, protocol))
        if outbox is None:
            self._queues[(peer, protocol)] = outbox = _Outbox()
            self._nursery.start_soon(self._writer, peer, protocol, outbox)
        return outbox.put(payload)

    async def request(self, peer: str, protocol: str, payload: bytes, timeout_s: float) -> bytes:
        """One request, one answer, on a stream kept open per (peer, protocol) and used by
        one request at a time: opening a stream costs a multistream-select negotiation
        and its close a FIN each way, several frames and task switches per request on
        both sides, many times the request itself (forwarding runs every 50 ms). A
        stream that fails or times out is reset and dropped, never reused: a late answer
        must not be read as the next request's."""
        info = self.peers_by_name.get(peer)
        if info is None:
            raise NetworkError(f"{peer} is not a consortium node")
        if self.tap is not None:
            self.tap(peer, protocol, payload)
        key = (peer, protocol)
        lock = self._request_locks.setdefault(key, trio.Lock())
        with trio.move_on_after(timeout_s):
            async with lock:
                held = self._request_streams.pop(key, None)
                if held is not None:
                    # A kept stream may have died with its peer's restart: one fresh try
                    # (every request of ours is idempotent: forwards, block sync).
                    with contextlib.suppress(NetworkError):
                        return await self._exchange(key, held, payload)
                try:
                    opened = (await self._open(info, protocol), FrameReader())
                except Exception as exc:
                    raise NetworkError(f"{protocol} to {peer} failed: {exc}") from exc
                return await self._exchange(key, opened, payload)
        raise NetworkError(f"{peer} did not answer {protocol} within {timeout_s} s")

    async def _exchange(
        self, key: tuple[str, str], held: tuple[Any, FrameReader], payload: bytes
    ) -> bytes:
        stream, reader = held
        peer, protocol = key
        try:
            await stream.write(frame(payload))
            reply = await _next_frame(stream, reader)
        except (FrameError, NetworkError):
            await _discard(stream)
            raise
        except Exception as exc:
            await _discard(stream)
            raise NetworkError(f"{protocol} to {peer} failed: {exc}") from exc
        except BaseException:  # cancelled (the caller's timeout): never reuse it
            await _discard(stream)
            raise
        if reply is None:
            await _discard(stream)
            raise NetworkError(f"{peer} closed {protocol} without answering")
        self._request_streams[key] = held
        return reply

    def peers(self) -> list[str]:
        connected = self.host.get_network().connections
        return sorted(
            self.names_by_id[str(pid.to_base58())]
            for pid, conns in connected.items()
            if conns and str(pid.to_base58()) in self.names_by_id
        )

    # -- running ---------------------------------------------------------------------------

    async def run(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from multiaddr import Multiaddr

        _refuse_taken_port(self.listen)
        self.host.get_network().register_notifee(_gatekeeper(self))
        async with (
            self.host.run(listen_addrs=[Multiaddr(self.listen)]),
            trio.open_nursery() as nursery,
        ):
            self._nursery = nursery
            for peer in self.peers_by_name.values():
                nursery.start_soon(self._keep_connected, peer)
            log.info("p2p_listening", listen=self.listen, peer_id=self.peer_id)
            task_status.started()
            await trio.sleep_forever()

    async def _keep_connected(self, peer: Peer) -> None:
        """Dial `peer` while it is not connected, with capped exponential back-off."""
        from libp2p.peer.id import ID

        delay = 0.1
        target = ID.from_base58(peer.peer_id)
        while True:
            if self.host.get_network().connections.get(target):
                delay = 0.1
                await trio.sleep(0.5)
                continue
            try:
                with trio.fail_after(5):
                    await self._connect(peer)
                log.info("peer_connected", peer=peer.name)
                delay = 0.1
            except Exception as exc:
                log.debug("peer_dial_failed", peer=peer.name, reason=str(exc))
                await trio.sleep(delay * (1 + random.random() / 2))
                delay = min(delay * 2, 5.0)

    async def _connect(self, peer: Peer) -> None:
        from libp2p.peer.peerinfo import info_from_p2p_addr
        from multiaddr import Multiaddr

        await self.host.connect(info_from_p2p_addr(Multiaddr(peer.address)))

    async def _open(self, peer: Peer, protocol: str) -> Any:
        from libp2p.peer.id import ID

        target = ID.from_base58(peer.peer_id)
        if not self.host.get_network().connections.get(target):
            await self._connect(peer)
        return await self.host.new_stream(target, [protocol])  # type: ignore[list-item]

    async def _writer(self, peer: str, protocol: str, outbox: _Outbox) -> None:
        info = self.peers_by_name[peer]
        stream: Any = None
        while True:
            data = await outbox.take()  # what is already queued goes in one write
            for _attempt in range(2):
                try:
                    if stream is None:
                        with trio.fail_after(5):
                            stream = await self._open(info, protocol)
                    with trio.fail_after(10):
                        await stream.write(data)
                    break
                except Exception as exc:
                    log.debug("send_failed", peer=peer, protocol=protocol, reason=str(exc))
                    if stream is not None:
                        # It may hold part of a frame: the receiver must drop it.
                        await _discard(stream)
                    stream = None  # reopen once, then drop: the caller's protocol retries

    def _admitted(self, stream: Any) -> str | None:
        try:
            remote = str(stream.muxed_conn.peer_id.to_base58())
        except Exception:
            return None
        name = self.names_by_id.get(remote)
        if name is None or name == self.name:
            self.refused_peers += 1
            log.warning("peer_refused", peer_id=remote)
            return None
        return name


def _refuse_taken_port(listen: str) -> None:
    """py-libp2p listens with SO_REUSEPORT, so a second node on a taken port would start
    silently and share it: bind once without it first, and refuse clearly."""
    import socket

    parts = listen.split("/")
    if len(parts) < 5 or parts[3] != "tcp":
        return
    family = socket.AF_INET6 if parts[1] == "ip6" else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR (not REUSEPORT): connections of a previous run of this node in
        # TIME_WAIT do not count; a live listener does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((parts[2], int(parts[4])))
        except OSError as exc:
            raise NetworkError(f"p2p.listen {listen} is not free: {exc.strerror}") from exc


def _gatekeeper(network: Libp2pNetwork) -> Any:
    """A notifee that closes connections of peers that are not consortium nodes as soon
    as they open."""
    from libp2p.abc import INotifee

    class Gatekeeper(INotifee):
        async def connected(self, _network: Any, conn: Any) -> None:
            try:
                remote = str(conn.muxed_conn.peer_id.to_base58())
            except Exception:
                remote = ""
            if remote not in network.names_by_id:
                network.refused_peers += 1
                log.warning("connection_refused", peer_id=remote)
                await conn.close()

        async def disconnected(self, _network: Any, _conn: Any) -> None:
            pass

        async def opened_stream(self, _network: Any, _stream: Any) -> None:
            pass

        async def closed_stream(self, _network: Any, _stream: Any) -> None:
            pass

        async def listen(self, _network: Any, _multiaddr: Any) -> None:
            pass

        async def listen_close(self, _network: Any, _multiaddr: Any) -> None:
            pass

    return Gatekeeper()
