"""Rate-limited logging: a burst of the same message (a reconnect error repeated by aiokafka
every few milliseconds while the broker is away) becomes one line per window, with a count.

:class:`RepeatFilter` is a :class:`logging.Filter` for handlers. Two records are "the same" when
they come from the same logger with the same level and the same message template (``%s``
arguments may differ: another node id, another error text). The first of a window passes; the
rest of that window are dropped and counted; the first one after the window passes with
``(N similar suppressed in the last W s)`` appended. A dropped record's traceback is dropped
with it. Records of other templates are never held back, nor Faust's recovery lines, nor CX
Signals' own (``OWN_LOGGERS``: they are backed off where they are logged). Thread-safe
(aiokafka's consumer runs on its own thread).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

DEFAULT_WINDOW_S = 30.0
# CX Signals' own lines are never collapsed: they are rate-limited where they are logged (one
# per backed-off attempt), and each says something the operator needs.
OWN_LOGGERS = ("cxsignals", "streams", "sinks", "schemas")
# Faust's table recovery logs a few lines per rebalance (what it reads, from where, "Worker
# ready"): never a burst, and two rebalances within a window must both show (collapsed, the
# second rebalance's recovery was invisible when a state loss was being diagnosed).
NEVER_COLLAPSED = (*OWN_LOGGERS, "faust.tables.recovery")


class RepeatFilter(logging.Filter):
    def __init__(self, window_s: float = DEFAULT_WINDOW_S, min_level: int = logging.DEBUG,
                 clock: Callable[[], float] = time.monotonic,
                 exempt: tuple[str, ...] = NEVER_COLLAPSED) -> None:
        super().__init__()
        self.window_s = window_s
        self.exempt = exempt
        self.min_level = min_level
        self._clock = clock
        self._lock = threading.Lock()
        # (logger, level, template) -> (window start, suppressed in it)
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        self.suppressed_total = 0

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, "_cx_repeat_pass", None)
        if decided is not None:  # the same record at another handler: the same answer
            return bool(decided)
        passed = self._decide(record)
        record._cx_repeat_pass = passed
        return passed

    def _decide(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level or record.name.startswith(self.exempt):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            found = self._seen.get(key)
            if found is not None and now - found[0] < self.window_s:
                self._seen[key] = (found[0], found[1] + 1)
                self.suppressed_total += 1
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 10_000:  # templates are few; unbounded f-strings are not
                self._prune(now)
        if found is not None and found[1]:
            record.msg = (f"{record.msg} ({found[1]} similar suppressed in the last "
                          f"{self.window_s:.0f} s)")
        return True

    def _prune(self, now: float) -> None:
        for key, (start, _) in list(self._seen.items()):
            if now - start >= self.window_s:
                del self._seen[key]


def install(logger: logging.Logger, window_s: float = DEFAULT_WINDOW_S) -> RepeatFilter:
    """Add one :class:`RepeatFilter` to every handler of ``logger`` (the root logger, once the
    logging is configured); returns it."""
    repeat = RepeatFilter(window_s)
    for handler in logger.handlers:
        handler.addFilter(repeat)
    return repeat
