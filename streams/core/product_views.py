"""The product page views a customer state remembers (for browse intent), packed in columns.

Each view is kept as its event time, the 31-bit digest of its product id
(:func:`streams.core.state.short_hash`) and its event id (the alert's evidence), in event-time
order: the times as an array of doubles, the digests as an array of 32-bit ints, the ids as one
list. A state holds up to :data:`streams.core.state.MAX_VIEWS` views; as tuples they were four
objects each (the tuple, its float, its int, its string), spread over the heap as the events
came, and every product page view read all of them. Packed, they are the ids plus three
containers: the browse-intent rule counts a product's views with one C-level ``array.count``
and builds a list only when the rule may fire, and the wire form is the two arrays' bytes as
they are (little-endian) plus the ids.

Same semantics as the timed lists of :mod:`streams.core.windows`: a late view is inserted at its
place (after views of the same time), the oldest are dropped beyond the cap, pruning drops the
views before a time. Compiled with the engine (streams/core/native.py). Not thread-safe; no I/O.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right

from streams.core.packed_arrays import extend_le, le_bytes
from streams.core.state_wire import ViewRec

if array("i").itemsize != 4 or array("d").itemsize != 8:  # pragma: no cover - every platform
    raise ImportError("streams.core.product_views needs 4-byte ints and 8-byte doubles")


class ProductViews:
    """Product page views in event-time order: times, product digests and event ids."""

    __slots__ = ("_ids", "_keys", "_times")

    def __init__(self) -> None:
        self._times = array("d")
        self._keys = array("i")
        self._ids: list[str] = []

    @classmethod
    def from_records(cls, records: list[ViewRec]) -> ProductViews:
        """From records in time order (formats 1-3 stored the views as records)."""
        views = cls()
        views._times = array("d", [r[0] for r in records])
        views._keys = array("i", [r[2] for r in records])
        views._ids = [r[1] for r in records]
        return views

    @classmethod
    def from_wire(cls, times: bytes, keys: bytes, ids: list[str]) -> ProductViews:
        """From :meth:`wire` output. ValueError if the three do not pair up."""
        if len(times) % 8 or len(keys) % 4 or not len(times) // 8 == len(keys) // 4 == len(ids):
            raise ValueError(f"product views: {len(times)} bytes of times, {len(keys)} of "
                             f"product digests and {len(ids)} ids are not one view each")
        views = cls()
        extend_le(views._times, times)
        extend_le(views._keys, keys)
        views._ids = ids
        return views

    def wire(self) -> tuple[bytes, bytes, list[str]]:
        """The times (doubles) and product digests (signed 32-bit), little-endian, and the ids
        (the state's own list)."""
        return le_bytes(self._times), le_bytes(self._keys), self._ids

    def records(self) -> list[ViewRec]:
        """Every view as ``(event time, event id, product digest)``, oldest first (a copy)."""
        return list(zip(self._times, self._ids, self._keys, strict=True))

    def __len__(self) -> int:
        return len(self._ids)

    def insert(self, t: float, event_id: str, key: int, cap: int) -> None:
        """Remember a view of the product whose digest is ``key``; keep the newest ``cap``."""
        times = self._times
        if not times or t >= times[-1]:  # the in-order case: no search
            times.append(t)
            self._keys.append(key)
            self._ids.append(event_id)
        else:
            i = bisect_right(times, t)
            times.insert(i, t)
            self._keys.insert(i, key)
            self._ids.insert(i, event_id)
        n = len(times)
        if n > cap:
            self._drop(n - cap)

    def prune(self, min_t: float) -> None:
        """Forget the views before ``min_t``."""
        times = self._times
        if times and times[0] < min_t:
            self._drop(bisect_left(times, min_t))

    def find(self, key: int, lo_t: float, hi_t: float,
             min_count: int) -> tuple[float, list[str]] | None:
        """The views of the product whose digest is ``key`` with ``lo_t <= time <= hi_t``: the
        time of the first and every event id, in time order; None if fewer than ``min_count``.
        """
        times = self._times
        n = len(times)
        if not n:
            return None
        start = 0 if times[0] >= lo_t else bisect_left(times, lo_t)
        end = n if times[n - 1] <= hi_t else bisect_right(times, hi_t, start)
        keys = self._keys
        window = keys if start == 0 and end == n else keys[start:end]
        if window.count(key) < min_count:  # the usual case: counted in C, nothing built
            return None
        at = [i for i in range(start, end) if keys[i] == key]
        ids = self._ids
        return times[at[0]], [ids[i] for i in at]

    def _drop(self, count: int) -> None:
        """Forget the ``count`` oldest views."""
        del self._times[:count]
        del self._keys[:count]
        del self._ids[:count]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ProductViews) and self._times == other._times
                and self._keys == other._keys and self._ids == other._ids)

    def __repr__(self) -> str:
        return f"ProductViews({len(self)} views)"
