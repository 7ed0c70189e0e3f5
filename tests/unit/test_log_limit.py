"""The repeat filter: a burst of one message becomes one line per window, with a count."""

from __future__ import annotations

import logging

from streams.log_limit import RepeatFilter


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _record(msg: str, *args: object, name: str = "aiokafka.conn",
            level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeats_within_the_window_are_dropped_then_counted() -> None:
    clock = _Clock()
    repeat = RepeatFilter(window_s=30, clock=clock)
    template = "Unable connect to node with id %s: %s"
    assert repeat.filter(_record(template, 1, "refused"))
    passed = 0
    for n in range(1000):
        clock.now = n * 0.01  # 1000 attempts in 10 s
        passed += repeat.filter(_record(template, n % 3, "refused"))
    assert passed == 0
    clock.now = 31.0
    last = _record(template, 2, "refused")
    assert repeat.filter(last)
    assert last.getMessage().endswith("(1000 similar suppressed in the last 30 s)")
    assert repeat.suppressed_total == 1000


def test_other_messages_and_loggers_are_never_held_back() -> None:
    repeat = RepeatFilter(window_s=30, clock=_Clock())
    assert repeat.filter(_record("a %s", 1))
    assert repeat.filter(_record("b %s", 1))
    assert repeat.filter(_record("a %s", 1, name="faust.transport"))
    assert repeat.filter(_record("a %s", 1, level=logging.WARNING))
    assert not repeat.filter(_record("a %s", 2))


def test_one_record_gets_one_answer_at_every_handler() -> None:
    repeat = RepeatFilter(window_s=30, clock=_Clock())
    record = _record("x")
    assert repeat.filter(record) and repeat.filter(record)  # second handler: same record
    again = _record("x")
    assert not repeat.filter(again) and not repeat.filter(again)


def test_our_own_lines_are_never_collapsed() -> None:
    repeat = RepeatFilter(window_s=30, clock=_Clock())
    for attempt in range(5):
        assert repeat.filter(_record("waiting for Kafka (attempt %d)", attempt, name="cxsignals"))
        assert repeat.filter(_record("batch %s failed", "send", name="streams.pipeline"))


def test_faust_recovery_lines_of_every_rebalance_show() -> None:
    clock = _Clock()
    repeat = RepeatFilter(window_s=30, clock=clock)
    for _rebalance in range(3):
        assert repeat.filter(_record("[^---Recovery]: Highwater for active changelog partitions",
                                     name="faust.tables.recovery", level=logging.INFO))
        clock.now += 12
    assert repeat.filter(_record("Unable connect to node", name="aiokafka.conn"))
    assert not repeat.filter(_record("Unable connect to node", name="aiokafka.conn"))
