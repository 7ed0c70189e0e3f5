"""Issue 13, outages seen by the sink, with the real broker and a private ClickHouse server:

- the sink started while Kafka is down, or while ClickHouse is down, waits and retries (a few
  log lines, ``/healthz`` 503 naming what it waits for) instead of exiting;
- ClickHouse down mid-stream (30 s in ``make test``, 10 minutes under ``make chaos``) while
  events keep coming at a nominal 500 ev/s: the sink pauses (Kafka is the buffer, its memory
  stays bounded), then catches up at >= 3x the nominal rate, and every event is in ClickHouse
  once in query results.

Each test prints its figures (``-s`` shows them); docs/reliability.md quotes them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import pytest

from tests.faults.private_clickhouse import OwnClickHouse
from tests.faults.private_clickhouse import private_clickhouse as private_clickhouse  # fixture
from tests.integration.conftest import Stack, WorkerProcess, clickhouse_client
from tests.integration.services import REPO, free_port, wait_until

NOMINAL_EV_S = 500


def _healthz(port: int) -> tuple[int, dict[str, object]]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _healthz_or_none(port: int) -> tuple[int, dict[str, object]] | None:
    try:
        return _healthz(port)
    except (OSError, ValueError):
        return None


def _rss_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture
def spawn_sink(stack: Stack) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``cxsignals sink`` without waiting for it to be Ready (it may wait for a service
    that is down); stopped at teardown."""
    started: list[WorkerProcess] = []

    def spawn(**env: str) -> WorkerProcess:
        port = free_port()
        log_path = stack.tmp / f"sink-{len(started)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "cxsignals.cli", "sink", "--loglevel", "info"],
            env={**os.environ, **stack.env(**env), "CX_SINK_METRICS_PORT": str(port)},
            stdout=log_path.open("wb"), stderr=subprocess.STDOUT, cwd=REPO,
        )
        process = WorkerProcess(proc=proc, log_path=log_path, metrics_port=port)
        started.append(process)
        return process

    yield spawn
    for process in started:
        process.stop()


def _waiting_for(sink: WorkerProcess, what: str, timeout_s: float = 30) -> str:
    """Wait until /healthz answers 503 naming ``what``; return the reason."""
    found: list[str] = []

    def says() -> bool:
        if sink.proc.poll() is not None:
            raise AssertionError(f"the sink exited with {sink.proc.returncode}:\n{sink.log()}")
        answer = _healthz_or_none(sink.metrics_port)
        if answer is None or answer[0] != 503:
            return False
        problems = answer[1].get("problems")
        if isinstance(problems, dict) and what in problems:
            found.append(str(problems[what]))
            return True
        return False

    wait_until(says, timeout_s, f"/healthz to answer 503 naming {what}")
    return found[-1]


def _page_views(prefix: str, count: int) -> list[tuple[bytes, bytes]]:
    now = datetime.now(timezone.utc).isoformat()
    return [
        (f"c-{n % 500}".encode(), json.dumps({
            "event_id": f"{prefix}-{n}", "event_type": "page_view", "schema_version": 1,
            "occurred_at": now, "customer_id": f"c-{n % 500}", "channel": "web",
            "properties": {"url": "https://shop.example.com/p/4711", "load_time_ms": 800},
        }).encode())
        for n in range(count)
    ]


def test_sink_started_while_kafka_is_down_waits_and_says_why(
    stack: Stack, cli: Callable[..., subprocess.CompletedProcess[str]],
    spawn_sink: Callable[..., WorkerProcess],
) -> None:
    """Before issue 13 the sink exited after 2 s (KafkaConnectionError: Unable to bootstrap)."""
    done = cli("migrate")
    assert done.returncode == 0, done.stderr
    nobody = f"127.0.0.1:{free_port()}"
    sink = spawn_sink(KAFKA_BOOTSTRAP_SERVERS=nobody)
    reason = _waiting_for(sink, "kafka")
    assert nobody in reason
    time.sleep(30)
    assert sink.proc.poll() is None, sink.log()
    status, body = _healthz(sink.metrics_port)
    assert status == 503 and "kafka" in body["problems"]  # type: ignore[operator]
    lines = sink.log().splitlines()
    print(f"\nkafka down at start: alive after 30 s, {len(lines)} log lines")
    assert len(lines) <= 60, "reconnect attempts must be backed off and their logs rate-limited"
    assert any("kafka stuck for" in line for line in lines)
    began = time.monotonic()
    sink.stop()
    assert sink.proc.returncode == 0 and time.monotonic() - began < 10


def test_sink_started_while_clickhouse_is_down_waits_then_writes(
    stack: Stack, cli: Callable[..., subprocess.CompletedProcess[str]],
    spawn_sink: Callable[..., WorkerProcess], private_clickhouse: OwnClickHouse,
) -> None:
    url = private_clickhouse.url_for(stack.database)
    for setup in (("topics", "create"), ("migrate",)):
        done = cli(*setup, CLICKHOUSE_URL=url)
        assert done.returncode == 0, done.stderr
    private_clickhouse.stop()
    sink = spawn_sink(CLICKHOUSE_URL=url)
    reason = _waiting_for(sink, "clickhouse")
    assert f"127.0.0.1:{private_clickhouse.tcp_port}" in reason
    from tests.integration.conftest import publish

    events = _page_views("w", 300)
    publish(stack.endpoints.kafka_bootstrap, stack.settings().topic_touchpoints, events)
    time.sleep(15)
    assert sink.proc.poll() is None, sink.log()
    lines = len(sink.log().splitlines())
    private_clickhouse.start()
    client = clickhouse_client(stack, url)
    wait_until(lambda: client.execute("SELECT count() FROM touchpoint_events")[0][0] >= 300, 60,
               "the events once ClickHouse is up")
    wait_until(lambda: _healthz(sink.metrics_port)[0] == 200, 30, "/healthz to answer 200")
    assert client.execute("SELECT count(), uniqExact(event_id) FROM touchpoint_events FINAL") \
        == [(300, 300)]
    print(f"\nclickhouse down at start: {lines} log lines while waiting")
    assert "Ready" in sink.log() and lines <= 40


class Publisher(threading.Thread):
    """Publishes page views at ``rate`` events/s until stopped; ``sent`` counts the acked ones."""

    def __init__(self, bootstrap: str, topic: str, rate: int) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.rate = bootstrap, topic, rate
        self.sent = 0
        self.halt = threading.Event()
        self.prefix = uuid.uuid4().hex[:6]

    def run(self) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        tick_s, n = 0.1, 0
        per_tick = max(1, int(self.rate * tick_s))
        next_at = time.monotonic()
        try:
            while not self.halt.is_set():
                futures = [producer.send(self.topic, key=key, value=value)
                           for key, value in _page_views(f"{self.prefix}-{n}", per_tick)]
                producer.flush(timeout=30)
                for future in futures:
                    future.get(timeout=30)
                self.sent += per_tick
                n += 1
                next_at += tick_s
                time.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            producer.close()


@pytest.mark.parametrize(
    "outage_s",
    [pytest.param(30, id="30s"),
     pytest.param(600, id="10min", marks=[pytest.mark.chaos, pytest.mark.timeout(1800)])],
)
def test_clickhouse_down_mid_stream_sink_pauses_then_catches_up(
    outage_s: int, stack: Stack, start_sink: Callable[..., WorkerProcess],
    private_clickhouse: OwnClickHouse,
) -> None:
    url = private_clickhouse.url_for(stack.database)
    sink = start_sink(CLICKHOUSE_URL=url)
    client = clickhouse_client(stack, url)

    def stored() -> int:
        return int(client.execute("SELECT uniqExact(event_id) FROM touchpoint_events")[0][0])

    publisher = Publisher(stack.endpoints.kafka_bootstrap, stack.settings().topic_touchpoints,
                          NOMINAL_EV_S)
    publisher.start()
    try:
        wait_until(lambda: stored() >= 5 * NOMINAL_EV_S, 60, "the stream to flow")
        rss_before_kib = _rss_kib(sink.proc.pid)
        private_clickhouse.stop()
        down_at = time.monotonic()
        client.disconnect()
        peak_kib, healthz_seen, reason = 0, False, ""
        while time.monotonic() - down_at < outage_s:
            time.sleep(1)
            assert sink.proc.poll() is None, sink.log()
            peak_kib = max(peak_kib, _rss_kib(sink.proc.pid))
            answer = _healthz_or_none(sink.metrics_port)
            problems = answer[1].get("problems") if answer and answer[0] == 503 else None
            if isinstance(problems, dict) and "clickhouse" in problems:
                healthz_seen, reason = True, str(problems["clickhouse"])
        backlog_target = publisher.sent
        private_clickhouse.start()
        up_at = time.monotonic()
        client = clickhouse_client(stack, url)
        stored_before = stored()  # nothing was written during the outage
        wait_until(lambda: stored() >= backlog_target, 300, "the backlog to drain", 0.1)
        drain_s = time.monotonic() - up_at
        backlog = backlog_target - stored_before
        publisher.halt.set()
        publisher.join(timeout=60)
        wait_until(lambda: stored() >= publisher.sent, 120, "every event")
    finally:
        publisher.halt.set()
    rate = backlog / drain_s
    hwm_kib = _rss_kib(sink.proc.pid, "VmHWM")
    (total, unique), = client.execute(
        "SELECT count(), uniqExact(event_id) FROM touchpoint_events FINAL")
    log_lines = sink.log().splitlines()
    print(f"\nClickHouse down {outage_s} s at {NOMINAL_EV_S} ev/s: backlog {backlog} rows drained "
          f"in {drain_s:.1f} s after restart = {rate:.0f} ev/s ({rate / NOMINAL_EV_S:.1f}x "
          f"nominal); sink RSS {rss_before_kib / 1024:.0f} MiB before, peak during outage "
          f"{peak_kib / 1024:.0f} MiB, VmHWM {hwm_kib / 1024:.0f} MiB; {len(log_lines)} log "
          f"lines; {total} rows, {unique} unique, {publisher.sent} published")
    assert healthz_seen and "ClickHouse" in reason, "/healthz must say the sink waits for it"
    assert total == unique == publisher.sent
    assert rate >= 3 * NOMINAL_EV_S
    assert peak_kib < 400 * 1024, "Kafka is the buffer: the paused sink must not hoard events"
    stuck_lines = [line for line in log_lines if "clickhouse stuck for" in line]
    assert 1 <= len(stuck_lines) <= outage_s / 30 + 2
