"""Worker health: consumer lag, state size, liveness and rebalances, for Prometheus.

Read-only: these timers and signal handlers change no state and publish nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from streams import metrics
from streams.processing import processor
from streams.tables import customer_state
from streams.topics import app

log = logging.getLogger(__name__)


@app.on_partitions_assigned.connect
async def _on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    metrics.rebalances.inc()
    # Partitions (and with them customers) may have moved: rebuild the wake-up index.
    processor.request_rescan()
    processor.forget_states()


@app.task
async def _mark_up() -> None:
    metrics.worker_up.set(1)


@app.timer(interval=5.0, name="consumer-lag")
async def consumer_lag() -> None:
    """High-water mark minus this worker's position, per assigned partition (source topics)."""
    consumer = app.consumer
    metrics.consumer_lag.clear()
    for tp in consumer.assignment():
        if tp.topic.endswith("-changelog") or "__assignor" in tp.topic:
            continue
        try:
            position = await consumer.position(tp)
            highwater = consumer.highwater(tp)
        except Exception:  # a partition revoked mid-loop: measured next time
            continue
        if position is not None and highwater is not None:
            lag = max(0, highwater - position)
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)


@app.timer(interval=30.0, name="state-size")
async def state_size() -> None:
    """Customers held on this worker's assigned partitions (a full key scan: hence 30 s)."""
    metrics.customers_in_state.set(sum(1 for _ in customer_state))
