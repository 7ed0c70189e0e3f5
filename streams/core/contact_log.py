"""The support contacts a customer state remembers (repeat_contact, the churn hazard of open
contacts), packed in columns.

Each contact is kept as its event time, whether it was resolved, its event id (the alert's
evidence), its contact id and its reason, in event-time order: the times as an array of doubles,
the resolved flags as an array of bytes, the rest as lists. As tuples (formats 1-4) each contact
was six objects spread over the heap as the events came, and every event read them: the prune
the first one, the churn risk all of them (the open contacts of the last days). Packed, both
read two arrays, and the wire form is their bytes plus three lists.

Same semantics as the timed lists of :mod:`streams.core.windows` (see
:mod:`streams.core.timed_columns`). Compiled with the engine (streams/core/native.py). Not
thread-safe; no I/O.
"""

from __future__ import annotations

from array import array

from streams.core.packed_arrays import extend_le, le_bytes
from streams.core.state_wire import ContactRec
from streams.core.timed_columns import before_count, insert_index, span


class ContactLog:
    """Support contacts in event-time order: times, resolved flags, event ids, contact ids and
    reasons."""

    __slots__ = ("_contact_ids", "_ids", "_reasons", "_resolved", "_times")

    def __init__(self) -> None:
        self._times = array("d")
        self._resolved = array("b")
        self._ids: list[str] = []
        self._contact_ids: list[str] = []
        self._reasons: list[str] = []

    @classmethod
    def from_records(cls, records: list[ContactRec]) -> ContactLog:
        """From ``(event time, resolved, event id, contact id, reason)`` records in time order
        (formats 1-4)."""
        log = cls()
        log._times = array("d", [r[0] for r in records])
        log._resolved = array("b", [1 if r[1] else 0 for r in records])
        log._ids = [r[2] for r in records]
        log._contact_ids = [r[3] for r in records]
        log._reasons = [r[4] for r in records]
        return log

    @classmethod
    def from_wire(cls, times: bytes, resolved: bytes, ids: list[str], contact_ids: list[str],
                  reasons: list[str]) -> ContactLog:
        """From :meth:`wire` output. ValueError if the five do not pair up."""
        n = len(ids)
        if len(times) % 8 or not len(times) // 8 == len(resolved) == n == len(contact_ids) \
                == len(reasons):
            raise ValueError(f"contacts: {len(times)} bytes of times, {len(resolved)} of "
                             f"resolved flags, {n} ids, {len(contact_ids)} contact ids and "
                             f"{len(reasons)} reasons are not one contact each")
        log = cls()
        extend_le(log._times, times)
        log._resolved.frombytes(resolved)
        log._ids = ids
        log._contact_ids = contact_ids
        log._reasons = reasons
        return log

    def wire(self) -> tuple[bytes, bytes, list[str], list[str], list[str]]:
        """The times (doubles, little-endian), the resolved flags (a byte each: 1 resolved),
        then the ids, contact ids and reasons (the log's own lists)."""
        return (le_bytes(self._times), self._resolved.tobytes(), self._ids, self._contact_ids,
                self._reasons)

    def records(self) -> list[ContactRec]:
        """Every contact as ``(event time, resolved, event id, contact id, reason)``, oldest
        first (a copy)."""
        return self._records(0, len(self._ids))

    def __len__(self) -> int:
        return len(self._ids)

    def __bool__(self) -> bool:
        return len(self._ids) > 0

    def insert(self, t: float, resolved: bool, event_id: str, contact_id: str, reason: str,
               cap: int) -> None:
        """Remember a contact at event time ``t``; keep the newest ``cap``."""
        times = self._times
        i = insert_index(times, t)
        flag = 1 if resolved else 0
        if i == len(times):  # the in-order case
            times.append(t)
            self._resolved.append(flag)
            self._ids.append(event_id)
            self._contact_ids.append(contact_id)
            self._reasons.append(reason)
        else:
            times.insert(i, t)
            self._resolved.insert(i, flag)
            self._ids.insert(i, event_id)
            self._contact_ids.insert(i, contact_id)
            self._reasons.insert(i, reason)
        n = len(times)
        if n > cap:
            self._drop(n - cap)

    def prune(self, min_t: float) -> None:
        """Forget the contacts before ``min_t``."""
        drop = before_count(self._times, min_t)
        if drop:
            self._drop(drop)

    def any_between(self, lo_t: float, hi_t: float) -> bool:
        """Whether a contact has ``lo_t <= time <= hi_t``."""
        start, end = span(self._times, lo_t, hi_t)
        return end > start

    def open_since(self, since_t: float) -> int:
        """How many contacts at or after ``since_t`` are unresolved."""
        start = before_count(self._times, since_t)
        resolved = self._resolved
        return (resolved if start == 0 else resolved[start:]).count(0)

    def between(self, lo_t: float, hi_t: float) -> list[ContactRec]:
        """The contacts with ``lo_t <= time <= hi_t``, oldest first, as records."""
        start, end = span(self._times, lo_t, hi_t)
        return self._records(start, end)

    def _records(self, start: int, end: int) -> list[ContactRec]:
        times, resolved, ids = self._times, self._resolved, self._ids
        contact_ids, reasons = self._contact_ids, self._reasons
        return [(times[i], resolved[i] != 0, ids[i], contact_ids[i], reasons[i])
                for i in range(start, end)]

    def _drop(self, count: int) -> None:
        """Forget the ``count`` oldest contacts."""
        del self._times[:count]
        del self._resolved[:count]
        del self._ids[:count]
        del self._contact_ids[:count]
        del self._reasons[:count]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ContactLog) and self._times == other._times
                and self._resolved == other._resolved and self._ids == other._ids
                and self._contact_ids == other._contact_ids and self._reasons == other._reasons)

    def __repr__(self) -> str:
        return f"ContactLog({len(self)} contacts)"
