"""The admin socket: authenticated operations on a running node.

A Unix socket at `<data_dir>/admin.sock`, mode 0600 inside the 0700 data directory, so only
the service user (and root) can connect; the peer's uid is checked again with
SO_PEERCRED. One JSON request per connection, one JSON answer:

    {"op": "status"}
    {"op": "log_level", "level": "debug"}
    {"op": "backup", "dest": "/var/backups/medledger/2026-11-28"}
    {"op": "heap", "top": 25}
    {"op": "transfer_leader", "to": "hosp2", "timeout_s": 10}   (at the leader; "to" optional)
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import trio

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("medledger.admin")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def socket_path(data_dir: Path) -> Path:
    return data_dir / "admin.sock"


# sun_path holds 108 bytes: a deep data directory would not fit. Longer paths are reached
# through the folder's open descriptor (/proc/self/fd/N/admin.sock), which stays short
# and names the same file; the socket still lives in the data directory.
MAX_SUN_PATH = 100


class _Addressable:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> str:
        if len(os.fsencode(self.path)) <= MAX_SUN_PATH:
            return str(self.path)
        self._fd = os.open(self.path.parent, os.O_PATH | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._fd}/{self.path.name}"

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)


def _peer_uid(sock: trio.socket.SocketType) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


async def serve_admin(
    path: Path, handler: Handler, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    if path.exists() or path.is_symlink():
        path.unlink()
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        with _Addressable(path) as address:
            await sock.bind(address)
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(8)
    listener = trio.SocketListener(sock)
    me = os.getuid()

    async def handle(stream: trio.SocketStream) -> None:
        try:
            uid = _peer_uid(stream.socket)
            if uid not in (me, 0):
                log.warning("admin_refused", uid=uid)
                return
            with trio.fail_after(300):
                data = b""
                while not data.endswith(b"\n") and len(data) < 65536:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    data += chunk
                try:
                    request = json.loads(data)
                    if not isinstance(request, dict):
                        raise ValueError("request must be a JSON object")
                    answer = await handler(request)
                except Exception as exc:  # every failure becomes an answer, never a crash
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                await stream.send_all(json.dumps(answer).encode() + b"\n")
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            pass
        finally:
            await stream.aclose()

    task_status.started()
    try:
        await trio.serve_listeners(handle, [listener])
    finally:
        with trio.CancelScope(shield=True):
            path.unlink(missing_ok=True)


def call(path: Path, request: dict[str, Any], timeout_s: float = 300) -> dict[str, Any]:
    """Client side (blocking), for the CLI."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            with _Addressable(path) as address:
                s.connect(address)
        except OSError as exc:
            raise ConnectionError(
                f"cannot reach the node's admin socket {path}: {exc.strerror} "
                "(is the node running, and are you its service user?)"
            ) from exc
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    answer: dict[str, Any] = json.loads(data)
    return answer
