"""Issue 13 item 4, worker side: the broker goes away and comes back.

Each test runs its own Kafka 3.9.1 broker (tests/faults/private_kafka.py) so that it can stop it
without disturbing the shared one; ClickHouse (only for `cxsignals migrate`) is the shared one.

* the worker started while the broker is down waits (one log line per attempt, backed off;
  /healthz 503 naming kafka) and starts by itself once the broker is up;
* the broker stopped mid-stream for 10 s (60 s under ``make chaos``), then restarted: every
  event is scored, every expected alert is sent, and the worker's log stays small during the
  outage. Figures (CPU seconds, log lines during the outage, recovery time) are printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable

import pytest

from tests.faults.private_kafka import PrivateKafka, private_kafka  # noqa: F401 (fixture)
from tests.integration.conftest import Stack, WorkerProcess, alert_id_counts, publish
from tests.integration.services import REPO, free_port, wait_until
from tests.journeys import ALL_JOURNEYS, Journey

# Log lines a worker may write while the broker is away, per second of outage, plus a constant
# for the stop and the recovery (rebalance, "connected again", a summary of collapsed repeats).
# A backed-off reconnect logs about one line per attempt per connection (consumer, producer,
# coordinator: a handful), collapsed to one per message and 30 s window by the log filter;
# the old worker wrote ~4,400 lines per second of outage.
LOG_LINES_PER_OUTAGE_S = 3
LOG_LINES_CONSTANT = 120



def _cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _journeys(stack: Stack, tag: str, copies: int) -> list[Journey]:
    return [build(f"{stack.run_id}-{tag}-{n}-{build.__name__}")
            for n in range(copies) for build in ALL_JOURNEYS]


def _events(journeys: list[Journey]) -> list[tuple[bytes | None, bytes]]:
    return [(j.customer_id.encode(), p) for j in journeys for p in j.payloads()]


def _alert_ids(bootstrap: str, stack: Stack, expect: int) -> Counter[str]:
    """Alert ids on both alert topics (read together until ``expect`` arrived, then 1 s more)."""
    return alert_id_counts(stack, expect=expect, settle_s=1, bootstrap=bootstrap)


def _log_lines(worker: WorkerProcess) -> int:
    return worker.log().count("\n")


def _outage(stack: Stack, start_worker: Callable[..., WorkerProcess], broker: PrivateKafka,
            outage_s: float) -> None:
    broker.start()
    bootstrap = broker.bootstrap
    topic = stack.settings().topic_touchpoints
    worker = start_worker(KAFKA_BOOTSTRAP_SERVERS=bootstrap)
    before, during, after = (_journeys(stack, tag, 20) for tag in ("before", "during", "after"))
    expected = {a for j in before + during + after for a in j.expected_alert_ids().values()}
    publish(bootstrap, topic, _events(before))
    wait_until(lambda: worker.metric("cx_events_processed_total")
               >= len(_events(before)), 60, "the first events to be scored")
    # Mid-stream: the broker goes while the worker scores and sends these.
    publish(bootstrap, topic, _events(during))
    lines_0, cpu_0 = _log_lines(worker), _cpu_s(worker.proc.pid)
    stopping_at = time.monotonic()
    broker.stop()
    time.sleep(outage_s)
    broker.start()
    back_at = time.monotonic()
    # From the stop to the broker answering again (its shutdown and start-up included).
    down_s = back_at - stopping_at
    lines_1, cpu_1 = _log_lines(worker), _cpu_s(worker.proc.pid)
    publish(bootstrap, topic, _events(after))
    total = len(_events(before)) + len(_events(during)) + len(_events(after))
    wait_until(lambda: worker.metric("cx_events_processed_total")
               + worker.metric("cx_duplicates_skipped_total") >= total, 180,
               "every event to be scored after the broker came back")
    recovered_s = time.monotonic() - back_at
    outage_lines = lines_1 - lines_0
    ids = _alert_ids(bootstrap, stack, len(expected))
    missing = expected - set(ids)
    duplicated = sum(n - 1 for n in ids.values() if n > 1)
    assert worker.proc.poll() is None, "the worker exited during the outage"
    print(f"\nbroker away {down_s:.1f} s (stopped for {outage_s:.0f} s, plus its shutdown "
          f"and start-up): worker CPU {cpu_1 - cpu_0:.2f} s, "
          f"{outage_lines} log lines, {len(worker.log().encode()) // 1024} KiB log in all; "
          f"every event scored {recovered_s:.1f} s after the broker was back; alerts "
          f"expected {len(expected)}, missing {len(missing)}, duplicate records {duplicated}; "
          f"scored {worker.metric('cx_events_processed_total'):.0f} of {total}")
    assert not missing, f"{len(missing)} expected alerts never sent"
    assert set(ids) == expected
    assert worker.metric("cx_events_processed_total") == total
    bound = LOG_LINES_CONSTANT + LOG_LINES_PER_OUTAGE_S * down_s
    assert outage_lines <= bound, (
        f"{outage_lines} log lines in a {down_s:.0f} s outage (bound {bound:.0f})")


def test_broker_stopped_ten_seconds_mid_stream_loses_nothing_and_logs_little(
    stack: Stack, private_kafka: PrivateKafka, start_worker: Callable[..., WorkerProcess]  # noqa: F811
) -> None:
    _outage(stack, start_worker, private_kafka, 10.0)


@pytest.mark.chaos
def test_broker_stopped_a_minute_mid_stream(
    stack: Stack, private_kafka: PrivateKafka, start_worker: Callable[..., WorkerProcess]  # noqa: F811
) -> None:
    _outage(stack, start_worker, private_kafka, 60.0)


def _healthz(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_worker_started_while_the_broker_is_down_waits_then_processes_everything(
    stack: Stack, private_kafka: PrivateKafka  # noqa: F811
) -> None:
    broker = private_kafka
    env = stack.env(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap)
    # The topics exist (as `cxsignals topics create` left them in a deployment); the broker
    # then goes away before the worker starts.
    broker.start()
    setup = subprocess.run([sys.executable, "-m", "cxsignals.cli", "topics", "create"],
                           env={**os.environ, **env}, capture_output=True, text=True,
                           timeout=120, check=False, cwd=REPO)
    assert setup.returncode == 0, setup.stderr
    broker.stop()
    port = free_port()
    log_path = stack.tmp / "worker-broker-down.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cxsignals.cli", "worker", "--loglevel", "info"],
            env={**os.environ, **env, "CX_METRICS_PORT": str(port)},
            stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO,
        )
    worker = WorkerProcess(proc=proc, log_path=log_path, metrics_port=port)
    try:
        time.sleep(12)
        assert proc.poll() is None, f"the worker exited:\n{worker.log()[-3000:]}"
        status, body = _healthz(port)
        assert status == 503
        problems = body["problems"]
        assert isinstance(problems, dict) and "kafka" in problems
        waiting = [line for line in worker.log().splitlines() if "waiting for Kafka" in line]
        # One line per attempt, backed off (1, 2, 4, 8 s ...): a handful in 12 s, not a flood.
        assert 2 <= len(waiting) <= 8, worker.log()[-3000:]
        assert _log_lines(worker) < 60, worker.log()[-3000:]

        broker.start()
        journeys = _journeys(stack, "late", 10)
        events = _events(journeys)
        publish(broker.bootstrap, env["CX_TOPIC_TOUCHPOINTS"], events)
        wait_until(lambda: "Ready" in worker.log(), 60, "the worker to start")
        wait_until(lambda: worker.metric("cx_events_processed_total") >= len(events),
                   60, "every event to be scored")
        assert _healthz(port)[0] == 200
        expected = {a for j in journeys for a in j.expected_alert_ids().values()}
        assert set(_alert_ids(broker.bootstrap, stack, len(expected))) == expected
    finally:
        worker.stop()


def _sigterm_with_the_broker_down(stack: Stack, broker: PrivateKafka,
                                  start_worker: Callable[..., WorkerProcess],
                                  restart: bool) -> None:
    """The broker goes away, then the worker is told to stop: it cannot commit, so it must not
    wait forever for the broker (Faust's producer flush and group leave would); it exits by its
    deadline, and (``restart``) the next worker processes what was not committed. The restart
    waits for the old member's session to expire (Faust's default 60 s): chaos only."""
    broker.start()
    topic = stack.settings().topic_touchpoints
    worker = start_worker(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap)
    journeys = _journeys(stack, "stop", 20)
    events = _events(journeys)
    publish(broker.bootstrap, topic, events)
    wait_until(lambda: worker.metric("cx_events_processed_total") >= len(events), 60,
               "the events to be scored")
    broker.stop()
    time.sleep(2)
    started = time.monotonic()
    worker.proc.send_signal(15)
    with contextlib.suppress(subprocess.TimeoutExpired):
        worker.proc.wait(timeout=30)
    took_s = time.monotonic() - started
    print(f"\nSIGTERM with the broker down: exit after {took_s:.1f} s "
          f"(code {worker.proc.returncode})")
    assert worker.proc.returncode is not None and took_s < 10.0, (
        f"still running {took_s:.0f} s after SIGTERM:\n{worker.log()[-3000:]}")
    if not restart:
        return

    broker.start()
    start_worker(KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap)
    expected = {a for j in journeys for a in j.expected_alert_ids().values()}
    assert set(_alert_ids(broker.bootstrap, stack, len(expected))) == expected
    from kafka import KafkaAdminClient

    def committed() -> int:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            offsets = admin.list_group_offsets(stack.settings().app_id)
        finally:
            admin.close()
        return sum(m.offset for tp, m in offsets.get(stack.settings().app_id, {}).items()
                   if tp.topic == topic)

    wait_until(lambda: committed() == len(events), 120,
               "the new worker to commit up to the end of the topic")


def test_sigterm_while_the_broker_is_down_exits_within_ten_seconds(
    stack: Stack, private_kafka: PrivateKafka, start_worker: Callable[..., WorkerProcess]  # noqa: F811
) -> None:
    _sigterm_with_the_broker_down(stack, private_kafka, start_worker, restart=False)


@pytest.mark.chaos
def test_sigterm_while_the_broker_is_down_then_restart_loses_nothing(
    stack: Stack, private_kafka: PrivateKafka, start_worker: Callable[..., WorkerProcess]  # noqa: F811
) -> None:
    _sigterm_with_the_broker_down(stack, private_kafka, start_worker, restart=True)
