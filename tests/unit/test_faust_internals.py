"""The one door to Faust internals: version check, and acked ranges that Faust's own commit
logic turns into the right offsets."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.faust_internals import (
    PINNED_VERSIONS,
    BatchConsumer,
    UnsupportedVersion,
    check_versions,
)


def test_the_installed_versions_are_the_pinned_ones() -> None:
    check_versions()


def test_another_version_is_refused_with_a_clear_message() -> None:
    versions = {**PINNED_VERSIONS, "aiokafka": "0.99.0"}
    with pytest.raises(UnsupportedVersion, match=r"aiokafka 0\.99\.0 \(needs 0\.14\.0\)"):
        check_versions(versions.__getitem__)


def _consumer(committed: int | None) -> Any:
    fake = SimpleNamespace(
        _acked=defaultdict(list), _acked_index=defaultdict(set), _n_acked=0,
        _committed_offset=defaultdict(lambda: None), _gap=defaultdict(IntervalTree),
        _next_ack={},
    )
    if committed is not None:
        fake._committed_offset[TP("t", 0)] = committed
    return fake


def _commit_offset(fake: Any, tp: TP) -> int | None:
    offset = Consumer._new_offset(fake, tp)
    if offset is not None:
        fake._committed_offset[tp] = offset
    return offset


def test_acked_ranges_commit_through_their_last_offset() -> None:
    tp = TP("t", 0)
    fake = _consumer(committed=100)
    BatchConsumer.ack_range(fake, tp, 100, 149)
    assert _commit_offset(fake, tp) == 150
    BatchConsumer.ack_range(fake, tp, 150, 150)
    BatchConsumer.ack_range(fake, tp, 151, 199)
    assert _commit_offset(fake, tp) == 200


def test_a_gap_between_fetches_is_acked_too() -> None:
    """Offsets with no record (transaction markers, compaction) would otherwise stop the
    commits forever: Faust commits only consecutive acked offsets."""
    tp = TP("t", 0)
    fake = _consumer(committed=10)
    BatchConsumer.ack_range(fake, tp, 10, 19)
    BatchConsumer.ack_range(fake, tp, 25, 30)  # 20..24 held no records
    assert _commit_offset(fake, tp) == 31


def test_a_new_group_starts_from_the_first_record() -> None:
    tp = TP("t", 0)
    fake = _consumer(committed=None)
    BatchConsumer.ack_range(fake, tp, 0, 9)
    assert _commit_offset(fake, tp) == 10
