"""The expiry index: which customers go stale on which day, so that state stays bounded.

A customer is stale once they have been inactive for the state TTL (``CX_STATE_TTL_DAYS``):
their state is then deleted, with a tombstone in the changelog (see
:meth:`streams.processing.Processor.expire`). The index keeps, per partition, one set of
customer ids per UTC day on which they go stale, updated incrementally when an event moves a
customer's last activity to another day (O(1): discard from one set, add to another). Nothing
scans the states on the event loop; :meth:`pop_due` hands out the customers of days that have
fully passed, each of which the caller checks against the stored state.

Each tracked customer is in exactly one set, so :func:`len` is the number of customers in this
worker's partitions: the state-size gauge, kept incrementally. After a rebalance the index of a
newly assigned partition is rebuilt from its stored states, in chunks, with the deadline index.

Activity is wall-clock time: the moment the customer's latest in-order event was scored
(``watermark + lag_s``), so a backfill of old events does not expire the customers it creates.
"""

from __future__ import annotations

import heapq

from streams.core.state import CustomerState

DAY_S = 86_400.0


def last_active_s(state: CustomerState | None) -> float | None:
    """Wall-clock epoch seconds at which ``state`` last saw an in-order event (None: never)."""
    if state is None or state.watermark is None:
        return None
    return state.watermark + state.lag_s


class ExpiryIndex:
    def __init__(self, ttl_s: float) -> None:
        """``ttl_s`` = 0 keeps states for ever (the index still counts them). Customers are
        grouped by the bucket of time in which they go stale: a UTC day, or 1 % of a TTL
        shorter than 100 days (at least a second)."""
        self.ttl_s = ttl_s
        self.bucket_s = min(DAY_S, max(1.0, ttl_s / 100))
        self._days: dict[int, dict[int, set[str]]] = {}
        self._heaps: dict[int, list[int]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def day(self, active_s: float) -> int:
        """The bucket (UTC day number with the default TTL) in which a customer last active
        at ``active_s`` goes stale."""
        return int((active_s + self.ttl_s) // self.bucket_s)

    def add(self, partition: int, customer_id: str, active_s: float | None) -> None:
        """Track a customer (rebuilds, and customers re-checked by :meth:`pop_due`)."""
        day = self.day(active_s if active_s is not None else 0.0)
        days = self._days.get(partition)
        if days is None:
            days = self._days[partition] = {}
        members = days.get(day)
        if members is None:
            members = days[day] = set()
            heapq.heappush(self._heaps.setdefault(partition, []), day)
        if customer_id not in members:
            members.add(customer_id)
            self._size += 1

    def moved(self, partition: int, customer_id: str, before_s: float | None,
              after_s: float | None) -> None:
        """A customer's last activity went from ``before_s`` (None: a new customer) to
        ``after_s``; cheap when both fall on the same day (most events)."""
        if after_s is None:
            return
        if before_s is not None:
            before_day = self.day(before_s)
            if before_day == self.day(after_s):
                return
            members = self._days.get(partition, {}).get(before_day)
            if members is not None and customer_id in members:
                members.discard(customer_id)
                self._size -= 1
        self.add(partition, customer_id, after_s)

    def discard(self, partition: int, customer_id: str, active_s: float | None) -> None:
        """Stop tracking a customer last active at ``active_s`` (an erased customer)."""
        members = self._days.get(partition, {}).get(self.day(active_s or 0.0))
        if members is not None and customer_id in members:
            members.discard(customer_id)
            self._size -= 1

    def pop_due(self, partition: int, now_s: float, limit: int) -> list[str]:
        """Up to ``limit`` customers of ``partition`` whose stale bucket has fully passed by
        ``now_s`` (at most a day, or 1 % of the TTL, after they went stale); each is removed
        (the caller expires it or adds it back)."""
        if self.ttl_s <= 0:
            return []
        heap = self._heaps.get(partition)
        days = self._days.get(partition)
        due: list[str] = []
        if days is None:
            return due
        while heap and (heap[0] + 1) * self.bucket_s <= now_s and len(due) < limit:
            day = heap[0]
            members = days.get(day)
            while members and len(due) < limit:
                due.append(members.pop())
                self._size -= 1
            if not members:
                heapq.heappop(heap)
                days.pop(day, None)
        return due

    def drop_partition(self, partition: int) -> None:
        """The partition moved to another worker: forget its customers."""
        days = self._days.pop(partition, {})
        self._heaps.pop(partition, None)
        self._size -= sum(len(members) for members in days.values())
