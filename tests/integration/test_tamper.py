"""Tampering with a stopped node's LevelDB: through LevelDB itself (valid checksums) and
by flipping bytes in its files (issue 2, must show)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import plyvel
import pytest
from medledger.v1 import ledger_pb2
from netutil import Net, medledger

from node.ledger import layout
from node.sdk.client import Client, Identity

Tamper = Callable[[plyvel.DB], int]


@pytest.fixture(scope="module")
def stopped_chain(
    tmp_path_factory: pytest.TempPathFactory, consortium_template: Path
) -> tuple[Path, dict[str, int]]:
    """A chain of several blocks, one kv.put each; returns (data dir, key -> height)."""
    root = tmp_path_factory.mktemp("tamper") / "c"
    shutil.copytree(consortium_template, root)
    net = Net(root)
    net.start()
    doctor = Identity.load(net.identity("hosp1-doctor1"))
    heights: dict[str, int] = {}
    with Client(net.api) as client:
        for i in range(8):
            res = client.submit(doctor, "kv", "put", {"key": f"k{i}", "value": i}, wait=True)
            assert res.status == "committed"
            heights[f"k{i}"] = res.height
    assert net.stop() == 0
    return net.data_dir, heights


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite_block(db: plyvel.DB, height: int, change: Callable[[ledger_pb2.Block], None]) -> int:
    key = layout.height_key(layout.BLOCK, height)
    block = ledger_pb2.Block.FromString(db.get(key))
    change(block)
    db.put(key, block.SerializeToString(), sync=True)
    return height


def change_code(db: plyvel.DB) -> int:
    def flip(block: ledger_pb2.Block) -> None:
        block.codes[0] = ledger_pb2.CONTRACT_ERROR

    return _rewrite_block(db, 3, flip)


def change_arg(db: plyvel.DB) -> int:
    def edit(block: ledger_pb2.Block) -> None:
        signed = ledger_pb2.SignedTx.FromString(block.txs[0])
        body = ledger_pb2.TxBody.FromString(signed.body)
        body.args = b'{"key":"k3","value":999}'
        signed.body = body.SerializeToString()
        block.txs[0] = signed.SerializeToString()

    return _rewrite_block(db, 4, edit)


def change_timestamp(db: plyvel.DB) -> int:
    def edit(block: ledger_pb2.Block) -> None:
        header = ledger_pb2.BlockHeader.FromString(block.header)
        header.timestamp_ms += 1
        block.header = header.SerializeToString()

    return _rewrite_block(db, 2, edit)


def make_state_change(heights: dict[str, int]) -> Tamper:
    def change_state(db: plyvel.DB) -> int:
        key = layout.STATE + b"kv/k5"
        version = layout.VersionedValue.decode(db.get(key))
        db.put(
            key, layout.VersionedValue(version.height, version.index, b"12345").encode(), sync=True
        )
        return heights["k5"]

    return change_state


@pytest.mark.parametrize("kind", ["code", "arg", "timestamp", "state"])
def test_rewrite_through_leveldb_is_found_at_its_height(
    kind: str, stopped_chain: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    data, heights = stopped_chain
    tampers: dict[str, Tamper] = {
        "code": change_code,
        "arg": change_arg,
        "timestamp": change_timestamp,
        "state": make_state_change(heights),
    }
    copy = _copy(data, tmp_path / "data")
    db = plyvel.DB(str(copy / "ledger"))
    try:
        bad_height = tampers[kind](db)
    finally:
        db.close()
    run = medledger("ledger", "verify", "--data-dir", str(copy), "--json")
    assert run.rc == 1, run.out + run.err
    report = run.json()
    assert report["ok"] is False
    assert report["bad_height"] == bad_height, report
    assert "Traceback" not in run.err


def test_untampered_copy_verifies(
    stopped_chain: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    data, heights = stopped_chain
    run = medledger("ledger", "verify", "--data-dir", str(_copy(data, tmp_path / "d")), "--json")
    assert run.rc == 0, run.out
    assert run.json()["height"] == max(heights.values())


def test_flipped_bytes_fail_cleanly_and_do_no_more_damage(
    stopped_chain: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    data, _ = stopped_chain
    copy = _copy(data, tmp_path / "data")
    # The blocks are in a table (.ldb) or still in the write-ahead log (.log).
    files = sorted((copy / "ledger").glob("*.ldb")) + sorted((copy / "ledger").glob("*.log"))
    target = max(files, key=lambda p: p.stat().st_size)
    assert target.stat().st_size > 1000
    raw = bytearray(target.read_bytes())
    for i in range(len(raw) // 3, len(raw) // 3 + 16):
        raw[i] ^= 0xFF
    target.write_bytes(bytes(raw))
    damaged = target.read_bytes()

    run = medledger("ledger", "verify", "--data-dir", str(copy), "--json")
    assert run.rc == 1
    assert "checksum" in run.json()["error"]
    assert "Traceback" not in run.out + run.err

    config = tmp_path / "config.toml"
    genesis = data.parent.parent.parent / "genesis.block"
    config.write_text(
        f'[node]\nname = "hosp1"\ndata_dir = "{copy}"\ngenesis = "{genesis}"\n'
        '[api]\nlisten = "127.0.0.1:0"\n[log]\nformat = "json"\n'
    )
    start = medledger("node", "start", "--config", str(config), timeout=60)
    assert start.rc == 1
    assert "checksums" in start.err and "Traceback" not in start.out + start.err
    # The damaged table is left as it was (no repair, no rewrite).
    assert target.read_bytes() == damaged
