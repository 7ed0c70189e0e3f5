"""The errors a customer state remembers (for friction_spike), packed in columns.

Each error (a 5xx page, an app error, a failed payment) is kept as its event time, its event id
(the alert's evidence) and its kind (:func:`streams.core.signals.error_kind`), in event-time
order: the times as an array of doubles, the ids and the kinds as lists. As tuples (formats 1-4)
each error was four objects (the tuple, its float, its id, its kind) spread over the heap as
the events came, and every event's prune read the first one; packed, a prune reads the first
double of one array, and the wire form is that array's bytes (little-endian) plus two lists.

Same semantics as the timed lists of :mod:`streams.core.windows` (see
:mod:`streams.core.timed_columns`). Compiled with the engine (streams/core/native.py). Not
thread-safe; no I/O.
"""

from __future__ import annotations

from array import array

from streams.core.packed_arrays import extend_le, le_bytes
from streams.core.state_wire import ErrorRec
from streams.core.timed_columns import before_count, insert_index, span


class ErrorLog:
    """Errors in event-time order: times, event ids and kinds."""

    __slots__ = ("_ids", "_kinds", "_times")

    def __init__(self) -> None:
        self._times = array("d")
        self._ids: list[str] = []
        self._kinds: list[str] = []

    @classmethod
    def from_records(cls, records: list[ErrorRec]) -> ErrorLog:
        """From ``(event time, event id, kind)`` records in time order (formats 1-4)."""
        log = cls()
        log._times = array("d", [r[0] for r in records])
        log._ids = [r[1] for r in records]
        log._kinds = [r[2] for r in records]
        return log

    @classmethod
    def from_wire(cls, times: bytes, ids: list[str], kinds: list[str]) -> ErrorLog:
        """From :meth:`wire` output. ValueError if the three do not pair up."""
        if len(times) % 8 or not len(times) // 8 == len(ids) == len(kinds):
            raise ValueError(f"errors: {len(times)} bytes of times, {len(ids)} ids and "
                             f"{len(kinds)} kinds are not one error each")
        log = cls()
        extend_le(log._times, times)
        log._ids = ids
        log._kinds = kinds
        return log

    def wire(self) -> tuple[bytes, list[str], list[str]]:
        """The times (doubles, little-endian), the ids and the kinds (the log's own lists)."""
        return le_bytes(self._times), self._ids, self._kinds

    def records(self) -> list[ErrorRec]:
        """Every error as ``(event time, event id, kind)``, oldest first (a copy)."""
        return list(zip(self._times, self._ids, self._kinds, strict=True))

    def __len__(self) -> int:
        return len(self._ids)

    def __bool__(self) -> bool:
        return len(self._ids) > 0

    def insert(self, t: float, event_id: str, kind: str, cap: int) -> None:
        """Remember an error at event time ``t``; keep the newest ``cap``."""
        times = self._times
        i = insert_index(times, t)
        if i == len(times):  # the in-order case
            times.append(t)
            self._ids.append(event_id)
            self._kinds.append(kind)
        else:
            times.insert(i, t)
            self._ids.insert(i, event_id)
            self._kinds.insert(i, kind)
        n = len(times)
        if n > cap:
            self._drop(n - cap)

    def prune(self, min_t: float) -> None:
        """Forget the errors before ``min_t``."""
        drop = before_count(self._times, min_t)
        if drop:
            self._drop(drop)

    def between(self, lo_t: float, hi_t: float) -> list[ErrorRec]:
        """The errors with ``lo_t <= time <= hi_t``, oldest first, as records."""
        start, end = span(self._times, lo_t, hi_t)
        times, ids, kinds = self._times, self._ids, self._kinds
        return [(times[i], ids[i], kinds[i]) for i in range(start, end)]

    def _drop(self, count: int) -> None:
        """Forget the ``count`` oldest errors."""
        del self._times[:count]
        del self._ids[:count]
        del self._kinds[:count]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ErrorLog) and self._times == other._times
                and self._ids == other._ids and self._kinds == other._kinds)

    def __repr__(self) -> str:
        return f"ErrorLog({len(self)} errors)"
