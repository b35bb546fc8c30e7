"""The garbage collector set for a long-lived node (node/gctune.py): what exists is
frozen, the thresholds raised, every collection timed and passed on from `drain`."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import structlog

from node import gctune
from node.stalls import Stalls


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        if gctune._TIMER in gc.callbacks:
            gc.callbacks.remove(gctune._TIMER)
        gctune._TIMER.done.clear()


def test_tune_freezes_what_exists_and_raises_the_thresholds(restored_gc: None) -> None:
    frozen = gctune.tune()
    assert frozen == gc.get_freeze_count() > 1000
    assert gc.get_threshold() == gctune.THRESHOLDS
    # A full collection no longer walks the frozen objects.
    assert len(gc.get_objects()) < frozen
    gctune.tune()  # again: the timer is not added twice
    assert gc.callbacks.count(gctune._TIMER) == 1


def test_every_collection_is_timed_and_drained_by_generation(restored_gc: None) -> None:
    gctune.tune()
    pauses = Stalls("slow_gc_pause", "generation", "slow_pauses", slow_s=0.0)
    seen: list[tuple[str, float]] = []
    gc.collect(0)
    gc.collect(2)
    with (
        structlog.testing.capture_logs() as logs,
        pauses.observed(lambda g, s: seen.append((g, s))),
    ):
        assert gctune.drain(pauses) == 2
    assert [g for g, _ in seen] == ["0", "2"]
    assert all(s >= 0 for _, s in seen)
    # Over the (here zero) threshold: logged once per generation.
    assert [(e["generation"], e["slow_pauses"]) for e in logs] == [("0", 1), ("2", 1)]
    assert gctune.drain(pauses) == 0
