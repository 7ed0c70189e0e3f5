"""The sink through a broker outage (a private broker, stopped 10 s mid-stream): it stays up,
stores every event once afterwards, and its log does not fill with aiokafka's reconnect errors
(it wrote 1,061 lines in a 15 s outage before the repeat filter was installed in the sink)."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.faults.private_kafka import PrivateKafka, private_kafka  # noqa: F401
from tests.faults.test_worker_broker_outage import (
    LOG_LINES_CONSTANT,
    LOG_LINES_PER_OUTAGE_S,
    _cpu_s,
    _events,
    _journeys,
    _log_lines,
)
from tests.integration.conftest import Stack, WorkerProcess, clickhouse_client, publish
from tests.integration.services import wait_until


def test_sink_through_a_broker_outage_stores_everything_and_logs_little(
    stack: Stack, private_kafka: PrivateKafka,  # noqa: F811
    start_sink: Callable[..., WorkerProcess],
) -> None:
    broker = private_kafka
    broker.start()
    bootstrap = broker.bootstrap
    topic = stack.settings().topic_touchpoints
    sink = start_sink(KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    before, after = _events(_journeys(stack, "before", 20)), _events(_journeys(stack, "after", 20))
    client = clickhouse_client(stack)

    def stored() -> int:
        return int(client.execute("SELECT uniqExact(event_id) FROM touchpoint_events")[0][0])

    publish(bootstrap, topic, before)
    wait_until(lambda: stored() == len(before), 60, "the first events to be stored")
    lines_0, cpu_0 = _log_lines(sink), _cpu_s(sink.proc.pid)
    stopping_at = time.monotonic()
    broker.stop()
    time.sleep(10)
    broker.start()
    down_s = time.monotonic() - stopping_at
    lines, cpu_s = _log_lines(sink) - lines_0, _cpu_s(sink.proc.pid) - cpu_0
    publish(bootstrap, topic, after)
    wait_until(lambda: stored() == len(before) + len(after), 120,
               "every event to be stored after the broker came back")
    print(f"\nsink: broker away {down_s:.1f} s, CPU {cpu_s:.2f} s, {lines} log lines")
    assert sink.proc.poll() is None, "the sink exited during the outage"
    assert lines <= LOG_LINES_CONSTANT + LOG_LINES_PER_OUTAGE_S * down_s
