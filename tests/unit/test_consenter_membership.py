"""Consensus membership by governance (issue 3): the `consortium.add_consenter` /
`remove_consenter` transactions, the consenter set by height, the leader's plan of
Raft configuration changes, and the Raft log of a node that becomes a consenter."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from node.codes import TxCode
from node.consensus import ConfChange, ConfChangeType, Membership
from node.execution.consenter_gov import CONSENTERS_KEY
from node.execution.executor import BlockExecutor
from node.genesis import Genesis
from node.ledger.kvstore import LevelDBKV
from node.ledger.ledger import BlockWrite, Ledger
from node.ordering.consenter_set import ConsenterHistory
from node.ordering.reconfig import next_change
from node.replication.roles import open_raft
from node.sdk.client import Identity

from .builders import TxFactory


def commit(
    executor: BlockExecutor, ledger: Ledger, txs: list[bytes], t0: int, index: int = 0
) -> BlockWrite:
    write = executor.derive(txs, t0, "hosp1", raft_term=2 if index else 0, raft_index=index)
    ledger.commit(write)
    return write


def change(make_tx: TxFactory, who: Identity, function: str, node: str, **extra: object) -> bytes:
    return make_tx(who, function, {"node": node, **extra}, contract="consortium")


def test_leader_adds_an_observer_and_removes_it_again(
    executor: BlockExecutor,
    ledger: Ledger,
    make_tx: TxFactory,
    identities: Callable[[str], Identity],
    t0: int,
) -> None:
    leader = identities("leader")
    write = commit(executor, ledger, [change(make_tx, leader, "add_consenter", "hosp2")], t0)
    assert write.codes == (TxCode.VALID,), write.messages
    assert json.loads(ledger.state_get(CONSENTERS_KEY) or b"")["consenters"] == ["hosp1", "hosp2"]
    assert json.loads(ledger.state_get(b"consortium/node/hosp2") or b"")["consenter"] is True

    write = commit(executor, ledger, [change(make_tx, leader, "remove_consenter", "hosp1")], t0)
    assert write.codes == (TxCode.VALID,), write.messages
    assert json.loads(ledger.state_get(CONSENTERS_KEY) or b"")["consenters"] == ["hosp2"]
    assert json.loads(ledger.state_get(b"consortium/node/hosp1") or b"")["consenter"] is False


def test_refusals_name_what_is_wrong(
    executor: BlockExecutor,
    ledger: Ledger,
    make_tx: TxFactory,
    identities: Callable[[str], Identity],
    t0: int,
) -> None:
    leader = identities("leader")
    txs = [
        change(make_tx, identities("hosp1-admin"), "add_consenter", "hosp2"),
        change(make_tx, identities("hosp1-doctor1"), "remove_consenter", "hosp1"),
        change(make_tx, leader, "add_consenter", "hosp9"),
        change(make_tx, leader, "add_consenter", "hosp1"),
        change(make_tx, leader, "remove_consenter", "hosp2"),
        change(make_tx, leader, "remove_consenter", "hosp1"),
        change(make_tx, leader, "add_consenter", "hosp2", force=True),
        make_tx(leader, "add_consenter", {"node": 3}, contract="consortium"),
    ]
    write = commit(executor, ledger, txs, t0)
    assert [TxCode(c).name for c in write.codes] == [
        "PERMISSION_DENIED",
        "PERMISSION_DENIED",
        "BAD_ARGUMENTS",
        "CONTRACT_ERROR",
        "CONTRACT_ERROR",
        "CONTRACT_ERROR",
        "BAD_ARGUMENTS",
        "BAD_ARGUMENTS",
    ]
    assert "unknown node 'hosp9'" in write.messages[2]
    assert "already a consenter" in write.messages[3]
    assert "not a consenter" in write.messages[4]
    assert "last consenter" in write.messages[5]
    assert ledger.state_get(CONSENTERS_KEY) is None  # nothing changed


def test_changes_in_one_block_see_each_other(
    executor: BlockExecutor,
    ledger: Ledger,
    make_tx: TxFactory,
    identities: Callable[[str], Identity],
    t0: int,
) -> None:
    leader = identities("leader")
    txs = [
        change(make_tx, leader, "add_consenter", "hosp2"),
        change(make_tx, leader, "add_consenter", "hosp2"),
        change(make_tx, leader, "remove_consenter", "hosp1"),
    ]
    write = commit(executor, ledger, txs, t0)
    assert [TxCode(c).name for c in write.codes] == ["VALID", "CONTRACT_ERROR", "VALID"]
    assert json.loads(ledger.state_get(CONSENTERS_KEY) or b"")["consenters"] == ["hosp2"]


def test_contract_code_cannot_write_the_consenter_set(
    executor: BlockExecutor, ledger: Ledger, make_tx: TxFactory, t0: int
) -> None:
    # kv writes under its own namespace only; the guard is for the consortium contract,
    # whose namespace holds the set: check the guard itself.
    from node.execution.executor import _guard
    from node.execution.types import Outcome

    outcome = _guard(Outcome(TxCode.VALID, writes={CONSENTERS_KEY: b"{}"}))
    assert outcome.code == TxCode.PERMISSION_DENIED
    outcome = _guard(Outcome(TxCode.VALID, writes={b"consortium/node/hosp2": b"{}"}))
    assert outcome.code == TxCode.PERMISSION_DENIED


def test_the_set_certifying_a_block_is_the_one_before_it(
    executor: BlockExecutor,
    ledger: Ledger,
    genesis: Genesis,
    make_tx: TxFactory,
    identities: Callable[[str], Identity],
    t0: int,
) -> None:
    live = ConsenterHistory.from_ledger(ledger, genesis)
    commit(executor, ledger, [make_tx()], t0)  # height 1
    write = commit(
        executor, ledger, [change(make_tx, identities("leader"), "add_consenter", "hosp2")], t0
    )
    live.observe((commit.__defaults__ and write) or write)  # the listener sees height 2
    live.observe(write)  # as the commit listener does
    assert write.height == 2
    for history in (live, ConsenterHistory.from_ledger(ledger, genesis)):
        assert history.at(1) == {"hosp1"}
        assert history.at(2) == {"hosp1"}  # the block that carries the change
        assert history.at(3) == {"hosp1", "hosp2"}
        assert history.at(4) is None  # state after block 3 is not known yet
        assert history.current() == {"hosp1", "hosp2"}


def test_plan_adds_a_learner_promotes_it_when_caught_up_then_removes() -> None:
    two = Membership.of(["a", "b"])
    assert next_change(frozenset("abc"), two, lambda n: None, 100) == ConfChange(
        ConfChangeType.ADD_LEARNER, "c"
    )
    learning = Membership.of(["a", "b"], ["c"])
    assert next_change(frozenset("abc"), learning, lambda n: 10, 100) is None  # behind
    assert next_change(frozenset("abc"), learning, lambda n: 90, 100) == ConfChange(
        ConfChangeType.PROMOTE_LEARNER, "c"
    )
    three = Membership.of(["a", "b", "c"])
    assert next_change(frozenset("abc"), three, lambda n: 100, 100) is None
    assert next_change(frozenset("ac"), three, lambda n: 100, 100) == ConfChange(
        ConfChangeType.REMOVE_NODE, "b"
    )
    # A removal does not wait for a learner that cannot catch up.
    assert next_change(frozenset("ac"), Membership.of(["a", "b"], ["c"]), lambda n: 0, 100) == (
        ConfChange(ConfChangeType.REMOVE_NODE, "b")
    )
    assert next_change(frozenset("b"), Membership.of(["a"]), lambda n: 0, 1) == ConfChange(
        ConfChangeType.ADD_LEARNER, "b"
    )
    assert next_change(frozenset("b"), Membership.of(["a"], ["b"]), lambda n: 0, 1) is None


def test_a_new_consenter_starts_its_raft_log_at_its_newest_block(
    tmp_path: Path,
    genesis: Genesis,
    make_tx: TxFactory,
    identities: Callable[[str], Identity],
    t0: int,
) -> None:
    from node.chain import build_executor

    from .builders import metered_engine

    store = LevelDBKV(tmp_path / "ledger")
    try:
        ledger = Ledger(store, genesis)
        executor = build_executor(genesis, ledger, metered_engine(genesis))
        commit(executor, ledger, [make_tx()], t0, index=5)
        add = change(make_tx, identities("leader"), "add_consenter", "hosp2")
        commit(executor, ledger, [add], t0, index=7)
        consenters = ConsenterHistory.from_ledger(ledger, genesis).current()
        assert consenters == {"hosp1", "hosp2"}

        raft, storage = open_raft(store, genesis, ledger, "hosp2", consenters, b"seed")
        status = raft.status()
        # Nothing the ledger holds is handed out again: the log starts after entry 7.
        assert (storage.snapshot().index, storage.snapshot().term) == (7, 2)
        assert status.applied == 7 and status.committed == 7
        assert not raft.has_ready() or not raft.ready().committed_entries
        # Until the leader's configuration arrives it is a learner and never campaigns.
        assert status.membership == Membership.of(["hosp1"], ["hosp2"])
        for _ in range(100):
            raft.tick()
        assert raft.status().role.name == "FOLLOWER"
        storage.close()

        # Reopening keeps the log; a log behind the ledger (a consenter that was removed
        # and synced blocks since) starts again at the newest block, keeping its term.
        _raft2, storage2 = open_raft(store, genesis, ledger, "hosp2", consenters, b"seed")
        assert storage2.snapshot().index == 7
        storage2.close()
        commit(executor, ledger, [make_tx()], t0, index=12)
        raft3, storage3 = open_raft(store, genesis, ledger, "hosp2", consenters, b"seed")
        assert storage3.snapshot().index == 12
        assert raft3.status().applied == 12
        storage3.close()
    finally:
        store.close()


def test_a_raft_log_kept_in_leveldb_moves_to_the_write_ahead_log(
    tmp_path: Path, genesis: Genesis
) -> None:
    """A node upgraded from a version that kept its Raft log in the ledger's LevelDB."""
    from node.consensus import Entry, HardState
    from node.consensus.leveldb_storage import LevelDBStorage
    from node.execution.consenter_gov import genesis_consenters

    store = LevelDBKV(tmp_path / "ledger")
    try:
        ledger = Ledger(store, genesis)
        founders = genesis_consenters(genesis.config)
        name = sorted(founders)[0]
        old = LevelDBStorage.initialize(store.prefixed(b"raft/"), Membership.of(founders))
        logged = [Entry(3, i, data=b"batch %d" % i) for i in range(1, 41)]
        old.save(HardState(3, name, 40), logged, None)
        raft, storage = open_raft(store, genesis, ledger, name, frozenset(founders), b"seed")
        assert store.is_empty(b"raft/")
        assert (tmp_path / "raft").is_dir() and not (tmp_path / "raft.new").exists()
        assert storage.entries(1, 41) == logged
        assert storage.initial_state() == HardState(3, name, 40)
        assert raft.status().term == 3
        storage.close()
        _, again = open_raft(store, genesis, ledger, name, frozenset(founders), b"seed")
        assert again.entries(1, 41) == logged
        again.close()
    finally:
        store.close()


def test_a_log_compacted_past_a_restored_ledger_starts_again_at_its_newest_block(
    tmp_path: Path,
    genesis: Genesis,
    make_tx: TxFactory,
    t0: int,
) -> None:
    """A ledger restored from an older backup beside a newer Raft log whose compaction
    passed the backup's block: the entries in between are gone, so the log starts again
    at the ledger's newest block, keeping its term and the configuration it last knew."""
    from node.chain import build_executor
    from node.consensus import Entry, EntryKind, HardState, Snapshot, SnapshotMeta
    from node.consensus.membership import encode_membership
    from node.consensus.wal_storage import WalStorage
    from node.execution.consenter_gov import genesis_consenters

    from .builders import metered_engine

    store = LevelDBKV(tmp_path / "ledger")
    try:
        ledger = Ledger(store, genesis)
        executor = build_executor(genesis, ledger, metered_engine(genesis))
        commit(executor, ledger, [make_tx()], t0, index=5)
        founders = genesis_consenters(genesis.config)
        name = sorted(founders)[0]
        wal = WalStorage.initialize(tmp_path / "raft", Membership.of(founders))
        latest = Membership.of([*sorted(founders), "hosp9"])
        log_entries = [Entry(4, i, data=b"batch") for i in range(1, 31)]
        log_entries[24] = Entry(4, 25, EntryKind.CONFIG, encode_membership(latest))
        wal.save(HardState(4, name, 30), log_entries, None)
        wal.compact(Snapshot(SnapshotMeta(20, 4, Membership.of(founders))))
        wal.close()

        raft, storage = open_raft(store, genesis, ledger, name, frozenset(founders), b"seed")
        assert storage.snapshot().index == 5  # the ledger's newest block
        assert storage.snapshot().meta.membership == latest
        assert raft.status().term == 4 and raft.status().applied == 5
        assert not raft.has_ready() or not raft.ready().committed_entries
        storage.close()
    finally:
        store.close()


def test_a_raft_log_is_opened_only_after_the_ledger_is_on_disk(
    tmp_path: Path, genesis: Genesis, make_tx: TxFactory, t0: int
) -> None:
    """A node that becomes a consenter starts its Raft log after its newest block; that
    block, written unsynced (decision 010), is synced first, so a power loss cannot leave
    the ledger behind the log's start."""
    from node.chain import build_executor
    from node.execution.consenter_gov import genesis_consenters
    from node.ledger import layout

    from .builders import metered_engine

    store = LevelDBKV(tmp_path / "ledger")
    try:
        ledger = Ledger(store, genesis)
        executor = build_executor(genesis, ledger, metered_engine(genesis))
        commit(executor, ledger, [make_tx()], t0, index=7)
        assert store.get(layout.SYNCED) is None
        founders = genesis_consenters(genesis.config)
        _, storage = open_raft(store, genesis, ledger, "hosp9", frozenset(founders), b"s")
        assert store.get(layout.SYNCED) == (1).to_bytes(8, "big")  # synced at height 1
        assert storage.snapshot().index == 7
        storage.close()
    finally:
        store.close()
