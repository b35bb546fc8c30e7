"""The admin socket works in a data directory deeper than sun_path's 108 bytes (a real
install path, or pytest's temporary folders)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from node.ops.admin import call, serve_admin, socket_path


async def test_admin_socket_in_a_deep_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / ("d" * 60) / ("e" * 60)
    data_dir.mkdir(parents=True)
    path = socket_path(data_dir)
    assert len(str(path)) > 108

    async def handler(request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "echo": request["op"]}

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_admin, path, handler)
        assert path.exists() and (path.stat().st_mode & 0o777) == 0o600
        answer = await trio.to_thread.run_sync(call, path, {"op": "status"})
        nursery.cancel_scope.cancel()
    assert answer == {"ok": True, "echo": "status"}
    assert not path.exists()
