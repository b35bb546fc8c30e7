"""Determinism and resource limits that need their own zygotes or pure checks."""

from __future__ import annotations

import dataclasses

import pytest

from node.codes import TxCode
from node.execution.sandbox.canonical import canonical_text
from node.execution.sandbox.confine import WorkerLimits
from node.execution.sandbox.errors import NondeterministicExecution
from node.execution.sandbox.host import SandboxEngine
from node.execution.sandbox.launcher import Zygote
from node.execution.types import ContractRejected, canonical_json
from tests.sandbox.sandbox_support import MemoryState, invocation, module

SETS = """
def order(ctx, words):
    return [w for w in set(words)] + [k for k in {"zeta": 1, "alpha": 2}]

def allocate(ctx, n):
    s = "x" * n
    return len(s)
"""


@pytest.mark.parametrize(
    "value",
    [
        {"b": [1.5, 1e300, -0.0, 10**30], "a": 'é\u2028\x00"\\', "c": None, "d": True},
        "plain",
        0,
        [],
        {},
        [{"z": 1, "a": [{"y": 2, "b": 3}]}],
        1.0,
        -7,
        "\ud7ff",
    ],
)
def test_canonical_text_matches_canonical_json(value: object) -> None:
    assert canonical_text(value).encode() == canonical_json(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), b"x", {(1,): 2}, object()])
def test_canonical_text_refuses_what_canonical_json_refuses(value: object) -> None:
    with pytest.raises(ValueError):
        canonical_json(value)
    with pytest.raises(ValueError):
        canonical_text(value)


def test_set_order_is_the_same_in_separately_started_zygotes() -> None:
    """Workers run with PYTHONHASHSEED=0, so iterating a set of str is reproducible."""
    words = [f"word-{i}" for i in range(40)]
    results = []
    for _ in range(2):
        with Zygote.start() as zygote, SandboxEngine(zygote) as engine:
            engine.load(module("sets", SETS))
            outcome = engine.execute(invocation("sets", "order", {"words": words}), MemoryState())
            assert outcome.code == TxCode.VALID
            results.append((outcome.result, outcome.gas_used))
    assert results[0] == results[1]


def test_memory_limit_kills_the_worker_and_the_call_is_reported() -> None:
    """An allocation the gas limit allows but the address-space limit does not: the worker
    dies every time, so the engine refuses to guess and names the transaction."""
    limits = WorkerLimits(address_space_bytes=256 << 20)
    with Zygote.start(limits=limits) as zygote, SandboxEngine(zygote) as engine:
        engine.load(module("sets", SETS))
        fine = engine.execute(
            invocation("sets", "allocate", {"n": 10_000_000}, gas=10**7), MemoryState()
        )
        assert (fine.code, fine.result) == (TxCode.VALID, b"10000000")
        with pytest.raises(NondeterministicExecution) as halted:
            engine.execute(
                invocation("sets", "allocate", {"n": 400_000_000}, gas=10**8, tx=5),
                MemoryState(),
            )
        assert halted.value.tx_id == (5).to_bytes(32, "big")
        again = engine.execute(
            invocation("sets", "allocate", {"n": 1000}, gas=10**7), MemoryState()
        )
        assert again.code == TxCode.VALID


def test_module_for_another_engine_version_is_refused(zygote: Zygote) -> None:
    with SandboxEngine(zygote) as engine:
        stale = dataclasses.replace(module("sets", SETS), engine_version=0)
        with pytest.raises(ContractRejected, match="engine version"):
            engine.load(stale)
