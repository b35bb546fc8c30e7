"""The KVStore contract, checked on the dict-backed twin and on LevelDB alike, and the
key layout's encodings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.ledger import layout
from node.ledger.kvstore import KVStore, LevelDBKV, MemoryKV, StoreError


@pytest.fixture(params=["memory", "leveldb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KVStore]:
    if request.param == "memory":
        yield MemoryKV()
        return
    db = LevelDBKV(tmp_path / "db")
    yield db
    db.close()


def test_get_write_delete(store: KVStore) -> None:
    assert store.get(b"a") is None
    store.write({b"a": b"1", b"b": b"2"}, set(), sync=True)
    assert (store.get(b"a"), store.get(b"b")) == (b"1", b"2")
    store.write({b"a": b"3"}, {b"b", b"never-there"}, sync=False)
    assert (store.get(b"a"), store.get(b"b")) == (b"3", None)


def test_scan_is_in_byte_order_and_bounded_by_the_prefix(store: KVStore) -> None:
    keys = [b"p/\x02", b"p/\x01", b"p/\x01\x00", b"q/", b"p", b"o/\xff", b"p/\xff"]
    store.write({k: k[::-1] for k in keys}, set(), sync=True)
    assert [k for k, _ in store.scan(b"p/")] == [b"p/\x01", b"p/\x01\x00", b"p/\x02", b"p/\xff"]
    assert dict(store.scan(b"p/"))[b"p/\x02"] == b"\x02/p"
    assert [k for k, _ in store.scan(b"p/", start=b"p/\x02")] == [b"p/\x02", b"p/\xff"]
    assert [k for k, _ in store.scan(b"p/", start=b"a")] == [
        b"p/\x01",
        b"p/\x01\x00",
        b"p/\x02",
        b"p/\xff",
    ]
    assert list(store.scan(b"zz")) == []
    assert store.last(b"p/") == (b"p/\xff", b"\xff/p")
    assert store.last(b"zz") is None


def test_scan_reads_a_snapshot(store: KVStore) -> None:
    store.write({b"k/1": b"1", b"k/2": b"2"}, set(), sync=True)
    items = store.scan(b"k/")
    store.write({b"k/3": b"3"}, {b"k/1"}, sync=True)
    assert list(items) == [(b"k/1", b"1"), (b"k/2", b"2")]


def test_write_puts_win_over_deletes_of_the_same_key(store: KVStore) -> None:
    store.write({b"a": b"1"}, set(), sync=True)
    store.write({b"a": b"2"}, {b"a"}, sync=True)
    assert store.get(b"a") == b"2"


def test_leveldb_in_use_is_a_clear_error(tmp_path: Path) -> None:
    db = LevelDBKV(tmp_path / "db")
    try:
        with pytest.raises(StoreError, match="in use by another process"):
            LevelDBKV(tmp_path / "db")
    finally:
        db.close()
    with pytest.raises(StoreError):
        LevelDBKV(tmp_path / "absent", create=False)


def test_layout_encodings_round_trip() -> None:
    tip = layout.Tip(7, b"h" * 32, b"s" * 32, 1_700_000_000_000)
    assert layout.Tip.decode(tip.encode()) == tip
    loc = layout.TxLocation(2**40, 3, 19)
    assert layout.TxLocation.decode(loc.encode()) == loc
    value = layout.VersionedValue(5, 1, b'{"a":1}')
    assert layout.VersionedValue.decode(value.encode()) == value
    assert layout.height_key(layout.BLOCK, 1) == b"b/" + bytes(7) + b"\x01"


def test_history_keys_sort_by_version_and_never_mix_keys() -> None:
    ordered = [
        layout.history_key(b"a", 1, 5),
        layout.history_key(b"a", 2, 0),
        layout.history_key(b"a", 256, 0),
    ]
    assert sorted(reversed(ordered)) == ordered
    # "a" is a prefix of "ab", but their histories do not overlap.
    assert not layout.history_key(b"ab", 1, 0).startswith(layout.history_prefix(b"a"))


def test_the_memtable_size_sets_when_leveldb_writes_a_table(tmp_path: Path) -> None:
    # 6 MiB of puts: a 4 MiB memtable has been written out as a table, a 64 MiB one not.
    value = bytes(range(256)) * 16  # 4 KiB
    tables = {}
    for mb in (4, 64):
        store = LevelDBKV(tmp_path / f"m{mb}", memtable_mb=mb)
        try:
            for batch in range(24):
                store.write({b"s/%06d" % (batch * 64 + i): value for i in range(64)}, set(), False)
        finally:
            store.close()
        tables[mb] = len(list((tmp_path / f"m{mb}").glob("*.ldb")))
    assert tables[4] >= 1
    assert tables[64] == 0
