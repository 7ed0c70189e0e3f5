"""The collector settings of the worker and sink processes."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from cxsignals import gc_tuning


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_tune_collector_freezes_start_up_objects_and_raises_the_thresholds() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    gc_tuning.tune_collector()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (gc_tuning.YOUNG_ALLOCATIONS,
                                  gc_tuning.YOUNG_COLLECTIONS_PER_MIDDLE,
                                  gc_tuning.MIDDLE_COLLECTIONS_PER_FULL)


@pytest.mark.usefixtures("restored_collector")
def test_cyclic_garbage_is_still_collected_after_tuning() -> None:
    gc_tuning.tune_collector()
    collected: list[str] = []

    class Node:
        def __init__(self) -> None:
            self.me = self

        def __del__(self) -> None:
            collected.append("node")

    Node()
    assert collected == []  # a cycle: reference counting alone never frees it
    gc.collect()
    assert collected == ["node"]


@pytest.mark.usefixtures("restored_collector")
def test_the_young_threshold_can_be_chosen() -> None:
    gc_tuning.tune_collector(gc_tuning.WORKER_YOUNG_ALLOCATIONS)
    assert gc.get_threshold()[0] == gc_tuning.WORKER_YOUNG_ALLOCATIONS
    assert gc_tuning.WORKER_YOUNG_ALLOCATIONS < gc_tuning.YOUNG_ALLOCATIONS


def test_both_long_running_commands_tune_the_collector() -> None:
    import inspect

    from cxsignals import sink_cmd, worker_cmd

    assert "tune_collector()" in inspect.getsource(sink_cmd._run)
    assert "tune_collector(WORKER_YOUNG_ALLOCATIONS)" in inspect.getsource(worker_cmd._run)
