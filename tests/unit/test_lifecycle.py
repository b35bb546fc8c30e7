"""The contract lifecycle (deploy, upgrade, majority approval) on its own."""

from __future__ import annotations

import json
from collections.abc import Iterator

from node.codes import TxCode
from node.crypto.hashing import sha256
from node.execution.lifecycle import PROPOSAL_PREFIX, RECORD_PREFIX, Lifecycle
from node.execution.types import Caller, Invocation

SOURCE = "def hello(ctx):\n    return 1\n"


class DictState:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def range(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return iter(sorted((k, v) for k, v in self.data.items() if k.startswith(prefix)))

    def apply(self, writes: dict[bytes, bytes | None]) -> None:
        for key, value in writes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value


def call(
    function: str, args: dict[str, object], role: str, inst: str = "hosp1", name: str = "someone"
) -> Invocation:
    return Invocation(
        sha256(repr(args).encode() + name.encode()),
        "consortium",
        function,
        args,
        Caller("id", name, role, inst),
        1000,
        7,
        1_000_000,
    )


def test_leader_only_deploys_and_upgrades_bump_the_version() -> None:
    life, state = Lifecycle(frozenset({"hosp1", "hosp2", "hosp3"}), False), DictState()
    denied = life.execute(
        call("deploy_contract", {"name": "x", "source": SOURCE}, "doctor"), state, {}
    )
    assert denied.code == TxCode.PERMISSION_DENIED
    first = life.execute(
        call("deploy_contract", {"name": "x", "source": SOURCE}, "leader"), state, {}
    )
    assert first.code == TxCode.VALID
    state.apply(dict(first.writes))
    record = json.loads(state.data[RECORD_PREFIX + b"x"])
    assert (record["version"], record["code_hash"]) == (1, sha256(SOURCE.encode()).hex())
    second = life.execute(
        call("deploy_contract", {"name": "x", "source": SOURCE + "\n"}, "leader"), state, {}
    )
    state.apply(dict(second.writes))
    assert json.loads(state.data[RECORD_PREFIX + b"x"])["version"] == 2


def test_refused_sources_and_names() -> None:
    life, state = Lifecycle(frozenset({"hosp1"}), False), DictState()
    for args, code in (
        ({"name": "x", "source": "import os\n"}, TxCode.CONTRACT_ERROR),
        ({"name": "x", "source": "def f(:\n"}, TxCode.CONTRACT_ERROR),
        ({"name": "bad name", "source": SOURCE}, TxCode.BAD_ARGUMENTS),
        ({"name": "consortium", "source": SOURCE}, TxCode.PERMISSION_DENIED),
        ({"name": "x"}, TxCode.BAD_ARGUMENTS),
        ({"name": "x", "source": SOURCE, "extra": 1}, TxCode.BAD_ARGUMENTS),
    ):
        outcome = life.execute(call("deploy_contract", args, "leader"), state, {})
        assert outcome.code == code, (args, outcome)
        assert not outcome.writes


def test_majority_of_institutions_activates_a_proposal() -> None:
    life, state = Lifecycle(frozenset({"hosp1", "hosp2", "hosp3"}), True), DictState()
    proposed = life.execute(
        call("deploy_contract", {"name": "x", "source": SOURCE}, "leader"), state, {}
    )
    state.apply(dict(proposed.writes))
    assert PROPOSAL_PREFIX + b"x" in state.data and RECORD_PREFIX + b"x" not in state.data
    code_hash = sha256(SOURCE.encode()).hex()
    wrong = life.execute(
        call("approve_contract", {"name": "x", "code_hash": "00" * 32}, "institution"), state, {}
    )
    assert wrong.code == TxCode.CONTRACT_ERROR
    doctor = life.execute(
        call("approve_contract", {"name": "x", "code_hash": code_hash}, "doctor"), state, {}
    )
    assert doctor.code == TxCode.PERMISSION_DENIED
    # Two approvals in the same block: the second sees the first through the overlay.
    overlay: dict[bytes, bytes | None] = {}
    one = life.execute(
        call(
            "approve_contract",
            {"name": "x", "code_hash": code_hash},
            "institution",
            "hosp1",
            "hosp1-admin",
        ),
        state,
        overlay,
    )
    overlay.update(one.writes)
    assert json.loads(one.result)["status"] == "proposed"
    again = life.execute(
        call(
            "approve_contract",
            {"name": "x", "code_hash": code_hash},
            "institution",
            "hosp1",
            "hosp1-admin",
        ),
        state,
        overlay,
    )
    overlay.update(again.writes)
    assert json.loads(again.result)["approvals"] == 1  # the same institution counts once
    two = life.execute(
        call(
            "approve_contract",
            {"name": "x", "code_hash": code_hash},
            "institution",
            "hosp2",
            "hosp2-admin",
        ),
        state,
        overlay,
    )
    assert json.loads(two.result)["status"] == "active"
    state.apply(overlay)
    state.apply(dict(two.writes))
    record = json.loads(state.data[RECORD_PREFIX + b"x"])
    assert record["approved_by"] == ["hosp1-admin", "hosp2-admin", "someone"]
    assert PROPOSAL_PREFIX + b"x" not in state.data
