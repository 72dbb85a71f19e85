"""The collector as a long-running `run` process sets it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from reminder_service.services.gc_pause import LONG_RUN_THRESHOLD, tune_for_long_run


@pytest.fixture
def restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restored")
def test_what_start_up_made_is_frozen_and_the_young_generation_is_larger() -> None:
    gc.unfreeze()
    tune_for_long_run()
    assert gc.get_freeze_count() > 0  # what exists now is out of the collector's sight
    assert gc.get_threshold() == LONG_RUN_THRESHOLD
    assert LONG_RUN_THRESHOLD[0] > 700  # less often than Python's default


@pytest.mark.usefixtures("restored")
def test_cycles_made_after_are_still_collected() -> None:
    tune_for_long_run()

    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2  # the collector still runs and finds the cycle
