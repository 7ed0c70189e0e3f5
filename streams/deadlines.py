"""The deadline index: which customers need a wall-clock wake-up, and when.

Idle customers still have deadlines (an abandoned cart's recovery alert, a deferred alert after
quiet hours). The index keeps, per partition, a heap of ``(wake-up epoch seconds, customer id)``
updated incrementally as states change; taking the due ones costs O(log n) each, and nothing
scans the states on the event loop. A customer's newer deadline supersedes the older heap entry
(lazy deletion: the entry is skipped when it no longer matches).

After a rebalance the index of a newly assigned partition is rebuilt from its stored states
by :meth:`add` calls made off the hot path (see ``streams.app``), in chunks.
"""

from __future__ import annotations

import heapq


class DeadlineIndex:
    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[float, str]]] = {}
        self._wake: dict[str, tuple[int, float]] = {}

    def __len__(self) -> int:
        return len(self._wake)

    def set(self, partition: int, customer_id: str, wake_s: float | None) -> None:
        """Record the customer's next deadline (None: no deadline)."""
        current = self._wake.get(customer_id)
        if wake_s is None:
            if current is not None:
                del self._wake[customer_id]
            return
        if current == (partition, wake_s):
            return
        self._wake[customer_id] = (partition, wake_s)
        heapq.heappush(self._heaps.setdefault(partition, []), (wake_s, customer_id))

    def add_if_absent(self, partition: int, customer_id: str, wake_s: float | None) -> None:
        """For rebuilds: a deadline set since the rebuild started is newer; keep it."""
        if customer_id not in self._wake:
            self.set(partition, customer_id, wake_s)

    def pop_due(self, partition: int, now_s: float, limit: int) -> list[str]:
        """Up to ``limit`` customers of ``partition`` whose deadline passed; each is removed."""
        heap = self._heaps.get(partition)
        due: list[str] = []
        while heap and heap[0][0] <= now_s and len(due) < limit:
            wake_s, customer_id = heapq.heappop(heap)
            if self._wake.get(customer_id) == (partition, wake_s):
                del self._wake[customer_id]
                due.append(customer_id)
        return due

    def drop_partition(self, partition: int) -> None:
        """The partition moved to another worker: forget its customers."""
        heap = self._heaps.pop(partition, [])
        for wake_s, customer_id in heap:
            if self._wake.get(customer_id) == (partition, wake_s):
                del self._wake[customer_id]

    def partitions(self) -> list[int]:
        return list(self._heaps)
