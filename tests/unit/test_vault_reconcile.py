"""The vault agrees with the chain: erasures missed in a crash are carried out, uploads
never registered on chain are dropped after an hour, committed `erase` events delete."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from medledger.v1 import ledger_pb2

from node.records.encryption_keys import EncryptionPrivateKey
from node.records.envelope import seal
from node.records.vault import Vault
from node.vault_service import ORPHAN_AFTER_MS, VaultService

NOW = 1_800_000_000_000


class FakeLedger:
    def __init__(self) -> None:
        self.state: dict[bytes, bytes] = {}

    def state_get(self, key: bytes) -> bytes | None:
        return self.state.get(key)

    def state_scan(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        return sorted((k, v) for k, v in self.state.items() if k.startswith(prefix))

    def put(self, key: str, value: Any) -> None:
        self.state[key.encode()] = json.dumps(value).encode()


def service(tmp_path: Path, clock_ms: int = NOW) -> tuple[VaultService, Vault, FakeLedger]:
    ledger = FakeLedger()
    core: Any = SimpleNamespace(
        name="hosp1",
        genesis=SimpleNamespace(node=lambda name: SimpleNamespace(institution="hosp1")),
        ledger=ledger,
        commit_listeners=[],
    )
    network: Any = SimpleNamespace(handle=lambda protocol, handler: None)
    vault = Vault(tmp_path / "vault")
    return VaultService(core, vault, network, lambda: clock_ms), vault, ledger


def store(vault: Vault, record_id: str) -> None:
    key = EncryptionPrivateKey.generate()
    vault.store(seal(b"x" * 100, "text/plain", {"owner": key.public_key()}, record_id=record_id))


def test_reconcile_erases_what_the_chain_erased_and_drops_old_orphans(tmp_path: Path) -> None:
    svc, vault, ledger = service(tmp_path, clock_ms=NOW)
    for rid in ("erased1", "active1", "orphan1"):
        store(vault, rid)
    ledger.put("records/record/erased1", {"status": "erased"})
    ledger.put("records/record/active1", {"status": "active"})
    # A young orphan (an upload whose records.put is still on its way) stays.
    svc.clock = lambda: vault.stored_at_ms("orphan1") + 1000
    assert svc.reconcile() == {"erased": 1, "orphans_dropped": 0}
    assert vault.record_ids() == ["active1", "orphan1"]
    svc.clock = lambda: vault.stored_at_ms("orphan1") + ORPHAN_AFTER_MS + 1
    assert svc.reconcile() == {"erased": 0, "orphans_dropped": 1}
    assert vault.record_ids() == ["active1"]


def test_a_committed_erase_event_deletes_the_record(tmp_path: Path) -> None:
    svc, vault, _ledger = service(tmp_path)
    store(vault, "rec1")
    event = ledger_pb2.Event(contract="records", name="erase", data=b'{"record": "rec1"}')
    results = ledger_pb2.BlockResults(results=[ledger_pb2.TxResult(events=[event])])
    write: Any = SimpleNamespace(results_bytes=results.SerializeToString())
    svc.on_commit(write, [])
    assert vault.record_ids() == []
