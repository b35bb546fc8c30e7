"""Consistent online backup of the ledger, and restore.

A backup is a LevelDB snapshot copied key by key into a new LevelDB (so blocks keep
committing while it runs), plus `backup.json` naming the height and block hash it holds.
Restore copies a backup into an empty data directory and verifies it before it is used.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import plyvel

from node.ledger import layout
from node.ledger.kvstore import LevelDBKV

BATCH_BYTES = 4 * 1024 * 1024


class BackupError(Exception):
    pass


def backup(store: LevelDBKV, dest: Path) -> dict[str, Any]:
    """Copy a consistent snapshot of `store` into `dest` (must not exist or be empty)."""
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} exists and is not empty; choose a new folder")
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    started = time.monotonic()
    target = plyvel.DB(str(dest / "ledger"), create_if_missing=True, error_if_exists=True)
    keys = 0
    try:
        with store.snapshot() as snap:
            tip = layout.Tip.decode(snap.get(layout.TIP))
            batch = target.write_batch()
            size = 0
            for key, value in snap.iterator():
                batch.put(key, value)
                keys += 1
                size += len(key) + len(value)
                if size >= BATCH_BYTES:
                    batch.write()
                    batch = target.write_batch()
                    size = 0
            batch.write()
        target.put(b"m/backup", b"1", sync=True)
        target.delete(b"m/backup", sync=True)
    finally:
        target.close()
    manifest = {
        "height": tip.height,
        "last_block_hash": tip.hash.hex(),
        "keys": keys,
        "seconds": round(time.monotonic() - started, 3),
    }
    (dest / "backup.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def restore(source: Path, data_dir: Path) -> dict[str, Any]:
    """Copy the backup at `source` into `data_dir` (must be empty) and verify it."""
    from node.ledger.verify import verify_path

    if not (source / "ledger" / "CURRENT").exists():
        raise BackupError(f"{source} is not a backup made by `medledger backup`")
    ledger_dir = data_dir / "ledger"
    if ledger_dir.exists() and any(ledger_dir.iterdir()):
        raise BackupError(f"{ledger_dir} is not empty; restore only into an empty data dir")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copytree(source / "ledger", ledger_dir, dirs_exist_ok=True)
    report = verify_path(str(data_dir))
    if not report.ok:
        shutil.rmtree(ledger_dir)
        raise BackupError(
            f"the backup fails verification at height {report.bad_height}: {report.problem}; "
            "nothing was restored"
        )
    return {"height": report.height, "last_block_hash": report.last_block_hash}
