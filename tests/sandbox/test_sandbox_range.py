"""`ctx.range(prefix, limit=N)`: the first N keys in byte order, the same as the first N
of the whole range whatever the batch and the call deleted or added before, and only
about N keys read from the host (an end-of-block sweep over an index of every open
referral must not read the whole index each block)."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator

import pytest

from node.codes import TxCode
from node.execution.sandbox.host import SandboxEngine
from node.execution.sandbox.inprocess import InProcessMeteredEngine
from node.execution.sandbox.launcher import Zygote
from node.execution.types import overlay_range
from tests.sandbox.sandbox_support import MemoryState, invocation, module

PAGES_SOURCE = '''
"""pages: deletes and puts, then lists the first keys under a prefix."""


def edit(ctx, delete=(), put=()):
    for key in delete:
        ctx.delete(key)
    for key in put:
        ctx.put(key, 1)


def first(ctx, prefix, limit=None, delete=(), put=()):
    edit(ctx, delete, put)
    if limit is None:
        return [key for key, _value in ctx.range(prefix)]
    return [key for key, _value in ctx.range(prefix, limit=limit)]
'''


class CountingState(MemoryState):
    """Counts the keys the host's range hands out (it is read lazily)."""

    def __init__(self, data: dict[bytes, bytes]) -> None:
        super().__init__(data)
        self.items_read = 0

    def range(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for item in super().range(prefix):
            self.items_read += 1
            yield item


def _state() -> CountingState:
    return CountingState({f"pages/k{i:03d}".encode(): b"1" for i in range(500)})


@pytest.fixture(params=["sandbox", "in-process"])
def engine(request: pytest.FixtureRequest, zygote: Zygote) -> Iterator[object]:
    if request.param == "in-process":
        local = InProcessMeteredEngine()
        local.load(module("pages", PAGES_SOURCE))
        yield local
        return
    with SandboxEngine(zygote, base_timeout=5.0) as sandboxed:
        sandboxed.load(module("pages", PAGES_SOURCE))
        yield sandboxed


def test_the_first_n_keys_after_the_batch_and_the_call_changed_some(
    engine: SandboxEngine | InProcessMeteredEngine,
) -> None:
    state = _state()
    batch = [
        # Earlier calls of the batch delete the first two keys and add one between.
        invocation("pages", "edit", {"delete": ["k000", "k001"], "put": ["k0025"]}, tx=1),
        # The call itself deletes the next one and adds one.
        invocation(
            "pages",
            "first",
            {"prefix": "k", "limit": 4, "delete": ["k002"], "put": ["k0035"]},
            tx=2,
        ),
        invocation("pages", "first", {"prefix": "k"}, tx=3),
    ]
    outcomes = engine.execute_batch(batch, state)
    assert [o.code for o in outcomes] == [TxCode.VALID] * 3, [o.message for o in outcomes]
    assert outcomes[1].result == b'["k0025","k003","k0035","k004"]'
    # The same keys as the first four of the whole range (the third call sees the
    # second's writes, as the second saw them before its range).
    whole = json.loads(outcomes[2].result)
    assert json.loads(outcomes[1].result) == whole[:4] and len(whole) == 499
    # The limited call read its 4 and at most one more per deletion; the third read all.
    assert state.items_read <= (4 + 3) + 500


def test_a_limited_range_reads_about_limit_keys_from_the_host(
    engine: SandboxEngine | InProcessMeteredEngine,
) -> None:
    state = _state()
    outcome = engine.execute(invocation("pages", "first", {"prefix": "k", "limit": 5}), state)
    assert outcome.result == b'["k000","k001","k002","k003","k004"]'
    assert state.items_read <= 5
    assert outcome.reads == {f"pages/k{i:03d}".encode() for i in range(5)}


@pytest.mark.parametrize("limit", [0, -1, "3", True, 2.5])
def test_a_bad_limit_is_a_contract_error(
    engine: SandboxEngine | InProcessMeteredEngine, limit: object
) -> None:
    outcome = engine.execute(
        invocation("pages", "first", {"prefix": "k", "limit": limit}), _state()
    )
    assert outcome.code == TxCode.CONTRACT_ERROR
    assert "range limit must be a positive int" in outcome.message


def test_overlay_range_is_the_merged_sorted_view_read_lazily() -> None:
    rng = random.Random(7)
    for _ in range(300):
        keys = sorted({bytes([97 + rng.randrange(6)]) * rng.randrange(1, 3) for _ in range(8)})
        base = {k: b"b" for k in keys if rng.random() < 0.6}
        writes: dict[bytes, bytes | None] = {
            k: (None if rng.random() < 0.5 else b"w") for k in keys if rng.random() < 0.4
        }
        writes[b"zz"] = b"outside"  # not under the prefix below... unless it is "z"
        prefix = bytes([97 + rng.randrange(6)])
        expected = {k: v for k, v in base.items() if k.startswith(prefix)}
        for k, v in writes.items():
            if k.startswith(prefix):
                if v is None:
                    expected.pop(k, None)
                else:
                    expected[k] = v
        under = iter(sorted((k, v) for k, v in base.items() if k.startswith(prefix)))
        merged = list(overlay_range(under, writes, prefix))
        assert merged == sorted(expected.items())
    # Lazy: taking 2 reads at most 2 + (deletions) base keys.
    consumed = 0

    def counted() -> Iterator[tuple[bytes, bytes]]:
        nonlocal consumed
        for i in range(1000):
            consumed += 1
            yield b"k%04d" % i, b"v"

    first = list(itertools.islice(overlay_range(counted(), {b"k0000": None}, b"k"), 2))
    assert first == [(b"k0001", b"v"), (b"k0002", b"v")] and consumed <= 3
