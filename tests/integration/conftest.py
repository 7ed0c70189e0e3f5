"""Fixtures for integration tests: real services, unique topics and databases per test, and the
worker and the sink as subprocesses exactly as a user runs them (``cxsignals worker``,
``cxsignals sink``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson
import pytest

from cxsignals.settings import Settings, namespaced_env
from tests.integration.services import (
    REPO,
    Endpoints,
    free_port,
    resolve_endpoints,
    stop_process,
    wait_until,
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def endpoints() -> Iterator[Endpoints]:
    try:
        with resolve_endpoints() as found:
            yield found
    except Exception as exc:  # a missing service fails the run, it never skips it
        pytest.fail(f"real services are not reachable: {exc}", pytrace=False)


@dataclass
class Stack:
    """Names unique to one test: topics, consumer group, ClickHouse database, state dir."""

    endpoints: Endpoints
    run_id: str
    tmp: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def database(self) -> str:
        return f"it_{self.run_id}"

    def env(self, **overrides: str) -> dict[str, str]:
        env = namespaced_env(
            f"it-{self.run_id}", kafka_bootstrap=self.endpoints.kafka_bootstrap,
            clickhouse_url=self.endpoints.clickhouse_url, database=self.database,
            state_dir=self.tmp / "worker-state",
        )
        env.update({
            "CX_TOUCHPOINT_PARTITIONS": "2",
            "CX_ALERT_PARTITIONS": "1",
            "CX_SINK_BATCH_MS": "200",
        })
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def settings(self, **overrides: str) -> Settings:
        saved = dict(os.environ)
        try:
            os.environ.update(self.env(**overrides))
            return Settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)


@pytest.fixture
def stack(endpoints: Endpoints, tmp_path: Path) -> Iterator[Stack]:
    """A test's own names; its topics and database are removed afterwards, so that repeated
    `make test` runs on a developer machine do not pile them up."""
    test_stack = Stack(endpoints=endpoints, run_id=uuid.uuid4().hex[:10], tmp=tmp_path)
    yield test_stack
    _remove_namespace(test_stack)


def _remove_namespace(test_stack: Stack) -> None:
    from kafka.admin import KafkaAdminClient

    prefix = f"it-{test_stack.run_id}"
    try:
        admin = KafkaAdminClient(bootstrap_servers=test_stack.endpoints.kafka_bootstrap)
        try:
            topics = [t for t in admin.list_topics() if t.startswith(prefix)]
            if topics:
                admin.delete_topics(topics, timeout_ms=30_000)
        finally:
            admin.close()
        from clickhouse_driver import Client

        from cxsignals.settings import ClickHouseParams

        params = ClickHouseParams.from_url(test_stack.endpoints.clickhouse_url)
        Client(host=params.host, port=params.port, user=params.user,
               password=params.password).execute(f"DROP DATABASE IF EXISTS {test_stack.database}")
    except Exception as exc:  # clean-up is best effort: it must not hide the test's result
        warnings.warn(f"could not remove {prefix}: {exc}", stacklevel=1)


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, *labels: str) -> float:
        """The sum of the samples of metric ``name`` (the exact name) whose labels include
        every one of ``labels`` (``'rule="x"'``), from the process's /metrics."""
        from tests.integration.services import http_get

        total = 0.0
        for line in http_get(self.metrics_url).splitlines():
            sample = line.split("{", 1)[0].split(" ", 1)[0]
            if sample == name and all(label in line for label in labels):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
        stop_process(self.proc, sig, timeout_s)


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cxsignals.cli", *args],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False,
        cwd=REPO,
    )


@pytest.fixture
def cli(stack: Stack) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``cxsignals ARGS`` as a subprocess with the test's env; returns the completed process."""

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return _cli(*args, env=stack.env(**env))

    return run


LOG_TAIL_LINES = 80
# A start normally takes 1-3 s. A worker once hung for a changelog topic missing from its first
# assignment (fixed: streams/faust_internals.BatchConsumerThread and BatchPartitionAssignor;
# tests/integration/test_worker_start_metadata.py). Starts slower than
# SLOW_START_S are reported as warnings with their log; only one beyond the timeout fails.
SLOW_START_S = 30


def _log_tail(process: WorkerProcess) -> str:
    tail = "\n".join(process.log().splitlines()[-LOG_TAIL_LINES:])
    return f"the last {LOG_TAIL_LINES} lines of its log:\n{tail}"


def _start(stack: Stack, started: list[WorkerProcess], command: str, port_env: str,
           ready_timeout_s: float, env: dict[str, str]) -> WorkerProcess:
    full_env = stack.env(**env)
    for setup in (("topics", "create"), ("migrate",)):
        done = _cli(*setup, env=full_env)
        assert done.returncode == 0, f"cxsignals {' '.join(setup)}: {done.stderr}"
    metrics_port = free_port()
    log_path = stack.tmp / f"{command}-{len(started)}.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cxsignals.cli", command, "--loglevel", "info"],
        env={**os.environ, **full_env, port_env: str(metrics_port)},
        stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO,
    )
    process = WorkerProcess(proc=proc, log_path=log_path, metrics_port=metrics_port)
    started.append(process)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{command} exited with {proc.returncode}:\n{process.log()}")
        return "Ready" in process.log()

    started_s = time.monotonic()
    try:
        wait_until(ready, ready_timeout_s, f"`cxsignals {command}` to report Ready")
    except AssertionError as exc:  # say where it stalled: the log is gone with CI's machine
        raise AssertionError(f"{exc}; {_log_tail(process)}") from None
    took_s = time.monotonic() - started_s
    if took_s > SLOW_START_S:  # a start is 1-3 s: say so in the run's summary, with the log
        warnings.warn(f"`cxsignals {command}` took {took_s:.0f} s to report Ready; "
                      f"{_log_tail(process)}", stacklevel=2)
    return process


@pytest.fixture
def start_worker(stack: Stack) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``cxsignals worker`` (topics created first) and wait until it reports Ready."""
    started: list[WorkerProcess] = []

    def start(ready_timeout_s: float = 180, **env: str) -> WorkerProcess:
        return _start(stack, started, "worker", "CX_METRICS_PORT", ready_timeout_s, env)

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def start_sink(stack: Stack) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``cxsignals sink`` (topics and schema created first), the ClickHouse writer."""
    started: list[WorkerProcess] = []

    def start(ready_timeout_s: float = 120, **env: str) -> WorkerProcess:
        return _start(stack, started, "sink", "CX_SINK_METRICS_PORT", ready_timeout_s, env)

    yield start
    for sink in started:
        sink.stop()


def publish(bootstrap: str, topic: str,
            messages: Sequence[tuple[bytes | None, bytes]]) -> None:
    """Publish (key, value) pairs in order and wait until the broker has all of them."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5,
        max_request_size=4 * 1024 * 1024,
    )
    try:
        futures = [producer.send(topic, key=key, value=value) for key, value in messages]
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()


def clickhouse_client(stack: Stack, url: str | None = None) -> Any:
    """A client on the test's database (on ``url``'s server when given)."""
    from clickhouse_driver import Client

    from cxsignals.settings import ClickHouseParams

    server = (url or stack.env()["CLICKHOUSE_URL"]).rsplit("/", 1)[0]
    params = ClickHouseParams.from_url(f"{server}/{stack.database}")
    return Client(host=params.host, port=params.port, user=params.user,
                  password=params.password, database=params.database)


def alert_id_counts(stack: Stack, *, expect: int, settle_s: float,
                    bootstrap: str | None = None, timeout_s: float = 30) -> Counter[str]:
    """How often each alert id is on the two alert topics or the control topic (every alert
    that passed the policy: sent, or withheld as a control alert), read together until
    ``expect`` records arrived, then ``settle_s`` more seconds so that repeats are seen too."""
    records = consume_all(bootstrap or stack.endpoints.kafka_bootstrap, alert_topics(stack),
                          expect=expect, timeout_s=timeout_s, settle_s=settle_s)
    return Counter(json_value(r)["alert_id"] for r in records)


def alert_topics(stack: Stack) -> tuple[str, str, str]:
    """The marketing, support and control alert topics of the stack."""
    settings = stack.settings()
    return (settings.topic_alerts_marketing, settings.topic_alerts_support,
            settings.topic_alerts_control)


class Consumed(Protocol):
    """What the tests read of a record ``consume_all`` returns (kafka-python's ConsumerRecord)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def timestamp(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> list[tuple[str, bytes]]: ...


def json_value(record: Consumed) -> Any:
    """The record's JSON value (a record without one fails the test)."""
    where = f"{record.topic}[{record.partition}]@{record.offset}"
    assert record.value is not None, f"{where} has no value"
    return orjson.loads(record.value)


def consume_all(
    bootstrap: str, topic: str | tuple[str, ...], *, expect: int, timeout_s: float = 60,
    settle_s: float = 0.0,
) -> list[Consumed]:
    """Read ``topic`` (or several, with one consumer) from the beginning until ``expect``
    records arrived (or time runs out); then keep reading ``settle_s`` more seconds so that
    extra records are seen too."""
    from kafka import KafkaConsumer

    topics = (topic,) if isinstance(topic, str) else topic
    consumer = KafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, group_id=None, consumer_timeout_ms=500,
    )
    records: list[Consumed] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(records) < expect:
            records.extend(consumer)
        settle_until = time.monotonic() + settle_s
        while time.monotonic() < settle_until:
            records.extend(consumer)
    finally:
        consumer.close()
    return records
