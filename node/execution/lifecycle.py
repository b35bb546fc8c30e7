"""Contract lifecycle: deploy and upgrade by governance (DESIGN §5), run natively by the
node as part of the `consortium` contract, like Fabric's lifecycle system chaincode.

    consortium.deploy_contract(name, source)     leader only
    consortium.approve_contract(name, code_hash) institution admins, when the genesis
                                                 asks for a majority of institutions too

The source is checked with the sandbox's checker at execution, on every node alike, so a
module the engine would refuse never becomes VALID. An approved module is stored at
`consortium/contract/<name>` (source, code hash, engine version, dependencies, version,
height) and is loaded by every node from the chain once its block is committed: it takes
effect from the next block. Pending proposals live at `consortium/proposal/<name>`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from node.codes import TxCode
from node.crypto.hashing import sha256
from node.execution.sandbox.checker import check_source
from node.execution.sandbox.version import ENGINE_VERSION
from node.execution.types import (
    ContractModule,
    ContractRejected,
    Invocation,
    Outcome,
    StateReader,
    canonical_json,
    state_key,
)

CONTRACT = "consortium"
FUNCTIONS = frozenset({"deploy_contract", "approve_contract"})
RECORD_PREFIX = state_key(CONTRACT, "contract/")
PROPOSAL_PREFIX = state_key(CONTRACT, "proposal/")
MAX_NAME = 64


def is_lifecycle(contract: str, function: str) -> bool:
    return contract == CONTRACT and function in FUNCTIONS


def module_from_record(raw: bytes) -> ContractModule:
    record = json.loads(raw)
    return ContractModule(
        record["name"],
        record["source"],
        bytes.fromhex(record["code_hash"]),
        int(record["engine_version"]),
        tuple(record["dependencies"]),
    )


class Lifecycle:
    def __init__(self, institutions: frozenset[str], require_majority: bool) -> None:
        self.institutions = institutions
        self.require_majority = require_majority

    def execute(
        self, inv: Invocation, state: StateReader, overlay: Mapping[bytes, bytes | None]
    ) -> Outcome:
        """`overlay`: writes of earlier lifecycle calls in the same block."""
        try:
            if inv.function == "deploy_contract":
                writes, result = self._deploy(inv, state, overlay)
            else:
                writes, result = self._approve(inv, state, overlay)
        except _Refused as exc:
            return Outcome(exc.code, str(exc))
        return Outcome(TxCode.VALID, result=canonical_json(result), writes=writes)

    # -- functions -----------------------------------------------------------------------

    def _deploy(
        self, inv: Invocation, state: StateReader, overlay: Mapping[bytes, bytes | None]
    ) -> tuple[dict[bytes, bytes | None], dict[str, Any]]:
        if inv.caller.role != "leader":
            raise _Refused(TxCode.PERMISSION_DENIED, "only the consortium leader deploys")
        name, source = _args(inv.args, {"name": str, "source": str})
        if not name.isidentifier() or name.startswith("_") or len(name) > MAX_NAME:
            raise _Refused(TxCode.BAD_ARGUMENTS, "name must be an identifier (a-z, 0-9, _)")
        if name == CONTRACT:
            raise _Refused(TxCode.PERMISSION_DENIED, "the consortium contract is not replaced")
        try:
            checked = check_source(source, filename=f"<contract {name}>")
        except ContractRejected as exc:
            raise _Refused(TxCode.CONTRACT_ERROR, f"contract {name} refused: {exc}") from None
        code_hash = sha256(source.encode()).hex()
        previous = _read(state, overlay, RECORD_PREFIX + name.encode())
        record = {
            "name": name,
            "source": source,
            "code_hash": code_hash,
            "engine_version": ENGINE_VERSION,
            "dependencies": list(checked.dependencies),
            "version": (previous["version"] + 1) if previous else 1,
            "height": inv.height,
            "approved_by": [inv.caller.name],
        }
        if self.require_majority:
            key = PROPOSAL_PREFIX + name.encode()
            return {key: canonical_json(record)}, {
                "name": name,
                "code_hash": code_hash,
                "status": "proposed",
                "approvals_needed": self._majority(),
            }
        return {RECORD_PREFIX + name.encode(): canonical_json(record)}, {
            "name": name,
            "code_hash": code_hash,
            "status": "active",
            "version": record["version"],
        }

    def _approve(
        self, inv: Invocation, state: StateReader, overlay: Mapping[bytes, bytes | None]
    ) -> tuple[dict[bytes, bytes | None], dict[str, Any]]:
        if inv.caller.role != "institution" or inv.caller.institution not in self.institutions:
            raise _Refused(TxCode.PERMISSION_DENIED, "only an institution's admin approves")
        name, code_hash = _args(inv.args, {"name": str, "code_hash": str})
        key = PROPOSAL_PREFIX + name.encode()
        proposal = _read(state, overlay, key)
        if proposal is None or proposal["code_hash"] != code_hash:
            raise _Refused(TxCode.CONTRACT_ERROR, f"no pending proposal of {name} with that hash")
        voters = set(proposal.get("institutions", []))
        voters.add(inv.caller.institution)
        proposal["institutions"] = sorted(voters)
        proposal["approved_by"] = sorted({*proposal["approved_by"], inv.caller.name})
        if len(voters) >= self._majority():
            proposal.pop("institutions")
            proposal["height"] = inv.height
            return {key: None, RECORD_PREFIX + name.encode(): canonical_json(proposal)}, {
                "name": name,
                "status": "active",
            }
        return {key: canonical_json(proposal)}, {
            "name": name,
            "status": "proposed",
            "approvals": len(voters),
            "approvals_needed": self._majority(),
        }

    def _majority(self) -> int:
        return len(self.institutions) // 2 + 1


class _Refused(Exception):
    def __init__(self, code: TxCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _args(args: Mapping[str, Any], spec: dict[str, type]) -> tuple[Any, ...]:
    unknown = set(args) - set(spec)
    if unknown:
        raise _Refused(TxCode.BAD_ARGUMENTS, f"unknown arguments {sorted(unknown)}")
    values = []
    for name, kind in spec.items():
        value = args.get(name)
        if not isinstance(value, kind) or not value:
            raise _Refused(TxCode.BAD_ARGUMENTS, f"{name} must be a non-empty {kind.__name__}")
        values.append(value)
    return tuple(values)


def _read(
    state: StateReader, overlay: Mapping[bytes, bytes | None], key: bytes
) -> dict[str, Any] | None:
    raw = overlay[key] if key in overlay else state.get(key)
    if raw is None:
        return None
    value: dict[str, Any] = json.loads(raw)
    return value
