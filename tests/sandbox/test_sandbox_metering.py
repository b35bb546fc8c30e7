"""Metering and guards, in process (same instrumented code the workers run)."""

from __future__ import annotations

import pytest

from node.codes import TxCode
from node.execution.sandbox.inprocess import InProcessMeteredEngine
from tests.sandbox.sandbox_support import MemoryState, invocation, module

HOSTILE = """
def endless(ctx):
    while True:
        pass

def endless_for(ctx):
    n = 0
    for i in range(10 ** 12):
        n = n + i
    return n

def recurse(ctx, depth=0):
    return recurse(ctx, depth + 1)

def lambda_recursion(ctx):
    f = lambda: f()
    return f()

def huge_power(ctx):
    return 10 ** 10 ** 9

def huge_repeat(ctx):
    return "x" * 10 ** 10

def doubling(ctx):
    s = "x"
    while True:
        s = s + s

def doubling_augmented(ctx):
    s = ["x"]
    while True:
        s += s

def memory_bomb(ctx):
    hoard = []
    while True:
        hoard.append([0] * 100000)

def comprehension_bomb(ctx):
    return [i for i in range(10 ** 9)]

def materialise_bomb(ctx):
    return list(range(10 ** 9))

def join_bomb(ctx):
    s = "x" * 1000
    return "".join([s] * 1000000)

def aliasing_bomb(ctx):
    s = "y" * 100000
    return str([s] * 100000)

def shift_bomb(ctx):
    return 1 << (1 << 40)

def swallow(ctx):
    try:
        while True:
            pass
    except Exception:
        return "swallowed"

def swallow_recursion(ctx):
    f = lambda: f()
    try:
        return f()
    except Exception:
        return "swallowed"

def percent_format(ctx):
    return "%*d" % (10 ** 9, 1)

def float_pow(ctx):
    return 2.0 ** 0.5

def deep_value(ctx):
    v = []
    for i in range(100):
        v = [v]
    ctx.put("deep", v)

def address_leak(ctx):
    return str(lambda: 0)

def exponential_compare(ctx):
    a = [0]
    b = [0]
    for i in range(30):
        a = [a, a]
        b = [b, b]
    return a == b

def too_deep_to_compare(ctx):
    a = [0]
    b = [0]
    for i in range(64):
        a = [a, a]
        b = [b, b]
    return a in [b]

def exponential_hash(ctx):
    t = (0,)
    for i in range(30):
        t = (t, t)
    return len({t: 1})

def exponential_dict_get(ctx):
    t = (0,)
    for i in range(30):
        t = (t, t)
    return {}.get(t)

def exponential_sort_key(ctx):
    t = (0,)
    u = (0,)
    for i in range(30):
        t = (t, t)
        u = (u, u)
    return len(sorted([1, 2], key=lambda x: t if x == 1 else u))

def long_string_compares(ctx):
    s = "x" * 1000000
    t = "x" * 1000000
    n = 0
    while True:
        n = n + (s == t)

def big_division(ctx):
    x = 3 ** 30000
    y = 7 ** 10000
    while True:
        x // y

def bad_state_key(ctx):
    ctx.put(1, "x")

def undeclared_read(ctx):
    return ctx.get_from("consortium", "members")
"""


@pytest.fixture
def engine() -> InProcessMeteredEngine:
    engine = InProcessMeteredEngine()
    engine.load(module("hostile", HOSTILE))
    return engine


@pytest.mark.parametrize(
    ("function", "code"),
    [
        ("endless", TxCode.OUT_OF_GAS),
        ("endless_for", TxCode.OUT_OF_GAS),
        ("recurse", TxCode.CONTRACT_ERROR),
        ("lambda_recursion", TxCode.CONTRACT_ERROR),
        ("huge_power", TxCode.CONTRACT_ERROR),
        ("huge_repeat", TxCode.OUT_OF_GAS),
        ("doubling", TxCode.OUT_OF_GAS),
        ("doubling_augmented", TxCode.OUT_OF_GAS),
        ("memory_bomb", TxCode.OUT_OF_GAS),
        ("comprehension_bomb", TxCode.OUT_OF_GAS),
        ("materialise_bomb", TxCode.OUT_OF_GAS),
        ("join_bomb", TxCode.OUT_OF_GAS),
        ("aliasing_bomb", TxCode.OUT_OF_GAS),
        ("shift_bomb", TxCode.CONTRACT_ERROR),
        ("swallow", TxCode.OUT_OF_GAS),
        ("swallow_recursion", TxCode.CONTRACT_ERROR),
        ("percent_format", TxCode.CONTRACT_ERROR),
        ("float_pow", TxCode.CONTRACT_ERROR),
        ("deep_value", TxCode.CONTRACT_ERROR),
        ("address_leak", TxCode.CONTRACT_ERROR),
        ("exponential_compare", TxCode.OUT_OF_GAS),
        ("too_deep_to_compare", TxCode.CONTRACT_ERROR),
        ("exponential_hash", TxCode.OUT_OF_GAS),
        ("exponential_dict_get", TxCode.OUT_OF_GAS),
        ("exponential_sort_key", TxCode.OUT_OF_GAS),
        ("long_string_compares", TxCode.OUT_OF_GAS),
        ("big_division", TxCode.OUT_OF_GAS),
        ("bad_state_key", TxCode.CONTRACT_ERROR),
        ("undeclared_read", TxCode.PERMISSION_DENIED),
    ],
)
def test_hostile_call_fails_only_itself(
    engine: InProcessMeteredEngine, function: str, code: TxCode
) -> None:
    outcome = engine.execute(invocation("hostile", function, gas=200_000), MemoryState())
    assert outcome.code == code, outcome.message
    assert outcome.writes == {}
    assert outcome.gas_used <= 200_000
    if code == TxCode.OUT_OF_GAS:
        assert outcome.gas_used == 200_000


def test_endless_loop_stops_at_the_same_step_every_time() -> None:
    source = (
        "def spin(ctx, n=0):\n"
        "    while True:\n"
        "        n = n + 1\n"
        "        if n % 7 == 0:\n"
        "            ctx.put('n', n)\n"
    )
    used = set()
    for _ in range(3):
        engine = InProcessMeteredEngine()
        engine.load(module("spin", source))
        outcome = engine.execute(invocation("spin", "spin", gas=12_345), MemoryState())
        assert outcome.code == TxCode.OUT_OF_GAS
        used.add(outcome.gas_used)
    assert used == {12_345}


def test_gas_used_of_a_completed_call_is_a_pure_function_of_the_call() -> None:
    source = (
        "def work(ctx, n):\n"
        "    total = 0\n"
        "    for i in range(n):\n"
        "        total = total + len(str(i))\n"
        "    ctx.put('t', total)\n"
        "    return total\n"
    )
    results = set()
    for _ in range(3):
        engine = InProcessMeteredEngine()
        engine.load(module("work", source))
        outcome = engine.execute(invocation("work", "work", {"n": 500}), MemoryState())
        assert outcome.code == TxCode.VALID
        results.add((outcome.gas_used, outcome.result))
    assert len(results) == 1


def test_writes_are_namespaced_and_failed_calls_write_nothing(
    local: InProcessMeteredEngine,
) -> None:
    state = MemoryState()
    outcome = local.execute(invocation("kv", "put", {"key": "../x", "value": 1}), state)
    assert outcome.code == TxCode.VALID
    assert set(outcome.writes) == {b"kv/../x"}
    bad = local.execute(invocation("kv", "put", {"key": "", "value": 1}), state)
    assert bad.code == TxCode.CONTRACT_ERROR and bad.writes == {}


def test_read_only_calls_cannot_write(local: InProcessMeteredEngine) -> None:
    outcome = local.execute(
        invocation("kv", "put", {"key": "a", "value": 1}, read_only=True), MemoryState()
    )
    assert outcome.code == TxCode.PERMISSION_DENIED
    assert outcome.writes == {}


def test_argument_and_name_errors(local: InProcessMeteredEngine) -> None:
    state = MemoryState()
    assert local.execute(invocation("kv", "nope"), state).code == TxCode.UNKNOWN_FUNCTION
    assert local.execute(invocation("other", "put"), state).code == TxCode.UNKNOWN_CONTRACT
    missing = local.execute(invocation("kv", "put", {"key": "a"}), state)
    assert missing.code == TxCode.BAD_ARGUMENTS
    extra = local.execute(invocation("kv", "get", {"key": "a", "x": 1}), state)
    assert extra.code == TxCode.BAD_ARGUMENTS
