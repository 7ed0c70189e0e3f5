"""Issue 5: no event missing and no duplicate in query results after a worker and sink crash
(SIGKILL) or a second sink joining, through the real broker, worker and sink subprocesses and
ClickHouse. (ClickHouse outages: tests/faults/test_sink_outages.py.)"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import orjson

from cxsignals.simulator.journeys import SimConfig, SimMessage, generate
from tests.integration.conftest import Stack, WorkerProcess, clickhouse_client, publish
from tests.integration.services import wait_until


def _messages(n: int, seed: int) -> list[SimMessage]:
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=3)
    return [m for m in generate(SimConfig(customers=300, seed=seed, start=start, total_events=n,
                                          event_gap_s=1.0, bad_share=0.0))]


def _publish_in_chunks(stack: Stack, messages: list[SimMessage], chunks: int,
                       pause_s: float) -> threading.Thread:
    topic = stack.settings().topic_touchpoints
    size = -(-len(messages) // chunks)

    def run() -> None:
        for i in range(0, len(messages), size):
            publish(stack.endpoints.kafka_bootstrap, topic,
                    [(m.key, m.value) for m in messages[i:i + size]])
            time.sleep(pause_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _assert_exactly_once_in_results(client: object, messages: list[SimMessage]) -> None:
    expected = {orjson.loads(m.value)["event_id"] for m in messages}
    execute = client.execute  # type: ignore[attr-defined]

    def complete() -> bool:
        return execute("SELECT uniqExact(event_id) FROM touchpoint_events")[0][0] >= len(expected)

    wait_until(complete, 120, f"{len(expected)} events in ClickHouse")
    (count_final, unique), = execute(
        "SELECT count(), uniqExact(event_id) FROM touchpoint_events FINAL"
    )
    assert count_final == unique == len(expected)
    stored = {row[0] for row in execute("SELECT DISTINCT event_id FROM touchpoint_events")}
    assert stored == expected
    (alerts_final, alert_ids), = execute("SELECT count(), uniqExact(alert_id) FROM alerts FINAL")
    assert alerts_final == alert_ids


def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(
    stack: Stack, start_worker: Callable[..., WorkerProcess],
    start_sink: Callable[..., WorkerProcess],
) -> None:
    messages = _messages(3000, seed=11)
    first = start_worker()
    first_sink = start_sink()
    client = clickhouse_client(stack)
    publisher = _publish_in_chunks(stack, messages, chunks=10, pause_s=0.5)
    wait_until(
        lambda: client.execute("SELECT count() FROM touchpoint_events")[0][0] > 0, 60,
        "the first rows to land",
    )
    first.stop(signal.SIGKILL)
    first_sink.stop(signal.SIGKILL)
    assert first.proc.returncode == first_sink.proc.returncode == -signal.SIGKILL
    start_worker()
    start_sink()
    publisher.join(timeout=120)
    _assert_exactly_once_in_results(client, messages)


def test_a_second_sink_joining_mid_stream_loses_and_duplicates_nothing(
    stack: Stack, start_sink: Callable[..., WorkerProcess]
) -> None:
    """The sink scales by partitions on its own: a second one joins while the first writes,
    the partitions are shared out, and every event is in ClickHouse once in query results."""
    messages = _messages(2000, seed=13)
    one = start_sink()
    client = clickhouse_client(stack)
    publisher = _publish_in_chunks(stack, messages, chunks=8, pause_s=0.5)
    wait_until(
        lambda: client.execute("SELECT count() FROM touchpoint_events")[0][0] > 0, 60,
        "the first rows to land",
    )
    two = start_sink()
    publisher.join(timeout=120)
    _assert_exactly_once_in_results(client, messages)
    assert "Setting newly assigned partitions" in two.log()
    assert one.proc.poll() is None and two.proc.poll() is None
