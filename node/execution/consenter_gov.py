"""Consensus membership by governance (DESIGN §2, §4), run natively by the node as part
of the `consortium` contract, like the contract lifecycle (lifecycle.py):

    consortium.add_consenter(node)      leader only: a genesis-listed node starts voting
    consortium.remove_consenter(node)   leader only: a consenter goes back to observing

The consenter set in force is chain state: `consortium/consenters` holds the sorted
names once a change has committed (before the first change, the genesis block's
`consenter` flags say who they are), and each node's record `consortium/node/<name>`
keeps its `consenter` flag in step. Every node therefore agrees on the set at every
height; the Raft leader turns a committed change into configuration entries
(node/ordering/reconfig.py) and certificates are checked against the set in force at
each height (node/ordering/consenter_set.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from medledger.v1 import ledger_pb2

from node.codes import TxCode
from node.execution.types import (
    ContractEvent,
    Invocation,
    Outcome,
    StateReader,
    canonical_json,
    state_key,
)

CONTRACT = "consortium"
FUNCTIONS = frozenset({"add_consenter", "remove_consenter"})
CONSENTERS_KEY = state_key(CONTRACT, "consenters")
NODE_PREFIX = state_key(CONTRACT, "node/")
INSTITUTION_PREFIX = state_key(CONTRACT, "institution/")
# Raft stays fast and available with a small voting set (DESIGN §4: 3-7 members).
MAX_CONSENTERS = 7


def is_consenter_governance(contract: str, function: str) -> bool:
    return contract == CONTRACT and function in FUNCTIONS


def decode_consenters(raw: bytes) -> frozenset[str]:
    """The names in a `consortium/consenters` value."""
    value = json.loads(raw)
    return frozenset(str(n) for n in value["consenters"])


def genesis_consenters(config: ledger_pb2.GenesisConfig) -> frozenset[str]:
    return frozenset(n.name for n in config.nodes if n.consenter)


def current_consenters(state: StateReader, config: ledger_pb2.GenesisConfig) -> frozenset[str]:
    raw = state.get(CONSENTERS_KEY)
    return genesis_consenters(config) if raw is None else decode_consenters(raw)


@dataclass(frozen=True)
class _NodeInfo:
    name: str
    institution: str
    has_peer_id: bool


class ConsenterGovernance:
    def __init__(self, config: ledger_pb2.GenesisConfig) -> None:
        self.config = config
        self.nodes = {
            n.name: _NodeInfo(n.name, n.institution, bool(n.peer_id)) for n in config.nodes
        }

    def execute(
        self, inv: Invocation, state: StateReader, overlay: Mapping[bytes, bytes | None]
    ) -> Outcome:
        """`overlay`: writes of earlier governance calls in the same block."""
        try:
            if inv.caller.role != "leader":
                raise _Refused(
                    TxCode.PERMISSION_DENIED,
                    "only the consortium leader changes consensus membership",
                )
            node = self._node_arg(inv.args)
            current = self._current(state, overlay)
            if inv.function == "add_consenter":
                new = self._add(node, current, state, overlay)
                action = "add"
            else:
                new = self._remove(node, current)
                action = "remove"
        except _Refused as exc:
            return Outcome(exc.code, str(exc))
        record = {
            "consenters": sorted(new),
            "height": inv.height,
            "last_change": {
                "action": action,
                "node": node,
                "by": inv.caller.name,
                "tx_id": inv.tx_id.hex(),
            },
        }
        writes: dict[bytes, bytes | None] = {CONSENTERS_KEY: canonical_json(record)}
        node_key = NODE_PREFIX + node.encode()
        node_record = _read(state, overlay, node_key) or {"name": node}
        node_record["consenter"] = action == "add"
        writes[node_key] = canonical_json(node_record)
        result = {"node": node, "action": action, "consenters": sorted(new)}
        name = "consenter_added" if action == "add" else "consenter_removed"
        event = ContractEvent(name, canonical_json(result))
        return Outcome(TxCode.VALID, result=canonical_json(result), writes=writes, events=(event,))

    # -- checks --------------------------------------------------------------------------

    def _node_arg(self, args: Mapping[str, Any]) -> str:
        unknown = set(args) - {"node"}
        if unknown:
            raise _Refused(TxCode.BAD_ARGUMENTS, f"unknown arguments {sorted(unknown)}; give node")
        node = args.get("node")
        if not isinstance(node, str) or not node:
            raise _Refused(TxCode.BAD_ARGUMENTS, "node must be a non-empty string (a node name)")
        if node not in self.nodes:
            raise _Refused(
                TxCode.BAD_ARGUMENTS,
                f"unknown node {node!r}: only nodes listed in the genesis block can be "
                f"consenters ({', '.join(sorted(self.nodes))})",
            )
        return node

    def _current(self, state: StateReader, overlay: Mapping[bytes, bytes | None]) -> frozenset[str]:
        raw = overlay[CONSENTERS_KEY] if CONSENTERS_KEY in overlay else state.get(CONSENTERS_KEY)
        return genesis_consenters(self.config) if raw is None else decode_consenters(raw)

    def _add(
        self,
        node: str,
        current: frozenset[str],
        state: StateReader,
        overlay: Mapping[bytes, bytes | None],
    ) -> frozenset[str]:
        if node in current:
            raise _Refused(TxCode.CONTRACT_ERROR, f"{node} is already a consenter")
        if len(current) >= MAX_CONSENTERS:
            raise _Refused(
                TxCode.CONTRACT_ERROR,
                f"the consortium already has {len(current)} consenters (at most "
                f"{MAX_CONSENTERS}); remove one first",
            )
        info = self.nodes[node]
        if not info.has_peer_id:
            raise _Refused(
                TxCode.CONTRACT_ERROR, f"{node} has no p2p identity in the genesis block"
            )
        institution = _read(state, overlay, INSTITUTION_PREFIX + info.institution.encode())
        if institution is not None and institution.get("status", "active") != "active":
            raise _Refused(
                TxCode.CONTRACT_ERROR,
                f"{node} belongs to {info.institution}, which is {institution.get('status')}; "
                "reinstate the institution first",
            )
        return current | {node}

    @staticmethod
    def _remove(node: str, current: frozenset[str]) -> frozenset[str]:
        if node not in current:
            raise _Refused(TxCode.CONTRACT_ERROR, f"{node} is not a consenter")
        if current == {node}:
            raise _Refused(
                TxCode.CONTRACT_ERROR,
                f"{node} is the last consenter; add another consenter before removing it",
            )
        return current - {node}


class _Refused(Exception):
    def __init__(self, code: TxCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _read(
    state: StateReader, overlay: Mapping[bytes, bytes | None], key: bytes
) -> dict[str, Any] | None:
    raw = overlay[key] if key in overlay else state.get(key)
    if raw is None:
        return None
    value: dict[str, Any] = json.loads(raw)
    return value
