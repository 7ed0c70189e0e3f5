"""The deadline index: which customers need a wall-clock wake-up, and when.

Idle customers still have deadlines (an abandoned cart's recovery alert, a deferred alert after
quiet hours, the next look at an idle customer's churn risk). The index keeps, per partition, a
heap of ``(wake-up epoch seconds, customer id)`` updated incrementally as states change; taking
the due ones costs O(log n) each, and nothing scans the states on the event loop.

Each customer has at most one entry that stands for it (``_queued``), at or before its
deadline. A deadline that moves later needs no new entry: when the standing one comes up, the
customer is due if its deadline has passed, else its entry goes back in at the deadline. Only a
deadline that moves earlier (or to another partition) adds an entry, and the one it replaces is
skipped when it comes up. So the heap holds about one entry per customer with a deadline. (It
used to push an entry for every change and skip the outdated ones when they came up: every
checkpoint moves each changed customer's risk look to 5 minutes after its last event, so a
customer active for 5 minutes left up to 5 min / ``CX_CHECKPOINT_INTERVAL_MS`` entries behind:
~12 per customer after 400,000 events of ``bench.pipeline_bench``; up to 100 per customer
active for 5 minutes at 3-s checkpoints, by that arithmetic.)

After a rebalance the index of a newly assigned partition is rebuilt from its stored states
by :meth:`add_if_absent` calls made off the hot path (see ``streams.app``), in chunks.

Not thread-safe (the event loop's); no I/O.
"""

from __future__ import annotations

import heapq


class DeadlineIndex:
    def __init__(self) -> None:
        self._heaps: dict[int, list[tuple[float, str]]] = {}
        # customer -> (partition, deadline): the customer's deadline.
        self._wake: dict[str, tuple[int, float]] = {}
        # customer -> (partition, time) of the heap entry that stands for it; while the
        # customer has a deadline, that entry is in the deadline's partition and not later.
        self._queued: dict[str, tuple[int, float]] = {}

    def __len__(self) -> int:
        return len(self._wake)

    def entries(self) -> int:
        """Heap entries in all (introspection, for tests and the bench)."""
        return sum(len(heap) for heap in self._heaps.values())

    def set(self, partition: int, customer_id: str, wake_s: float | None) -> None:
        """Record the customer's next deadline (None: no deadline)."""
        wake = self._wake
        current = wake.get(customer_id)
        if wake_s is None:
            if current is not None:
                del wake[customer_id]  # its standing entry is dropped when it comes up
            return
        if current is not None and current[0] == partition and current[1] == wake_s:
            return
        wake[customer_id] = (partition, wake_s)
        queued = self._queued.get(customer_id)
        if queued is not None and queued[0] == partition and queued[1] <= wake_s:
            return  # the standing entry comes up first and moves on to wake_s
        self._queued[customer_id] = (partition, wake_s)
        heapq.heappush(self._heaps.setdefault(partition, []), (wake_s, customer_id))

    def add_if_absent(self, partition: int, customer_id: str, wake_s: float | None) -> None:
        """For rebuilds: a deadline set since the rebuild started is newer; keep it."""
        if customer_id not in self._wake:
            self.set(partition, customer_id, wake_s)

    def pop_due(self, partition: int, now_s: float, limit: int) -> list[str]:
        """Up to ``limit`` customers of ``partition`` whose deadline passed; each is removed."""
        heap = self._heaps.get(partition)
        due: list[str] = []
        wake, queued = self._wake, self._queued
        while heap and heap[0][0] <= now_s and len(due) < limit:
            at_s, customer_id = heapq.heappop(heap)
            if queued.get(customer_id) != (partition, at_s):
                continue  # replaced by an earlier entry or one in another partition
            current = wake.get(customer_id)
            if current is None:  # no deadline any more
                del queued[customer_id]
            elif current[1] <= now_s:  # current[0] == partition (see _queued)
                del queued[customer_id]
                del wake[customer_id]
                due.append(customer_id)
            else:  # the deadline moved later: the entry goes back in at it
                queued[customer_id] = (partition, current[1])
                heapq.heappush(heap, (current[1], customer_id))
        return due

    def drop_partition(self, partition: int) -> None:
        """The partition moved to another worker: forget its customers."""
        heap = self._heaps.pop(partition, [])
        wake, queued = self._wake, self._queued
        for at_s, customer_id in heap:
            if queued.get(customer_id) == (partition, at_s):
                del queued[customer_id]
                current = wake.get(customer_id)
                if current is not None and current[0] == partition:
                    del wake[customer_id]

    def partitions(self) -> list[int]:
        return list(self._heaps)
