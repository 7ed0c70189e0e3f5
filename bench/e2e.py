"""End-to-end phases of the benchmark: pre-fill, the worker's sustained throughput, and latency
at a fixed load. Each phase runs against the real Kafka and ClickHouse inside a
:class:`~bench.stack.BenchStack` of its own.

What is measured, precisely:

- Throughput: one or more ``cxsignals worker`` processes (one consumer group) and one
  ``cxsignals sink`` start together on a topic already holding N simulator events; time 0 is
  when the last of them logged Ready. The workers' counters (``cx_events_processed_total +
  cx_dead_letters_total + cx_duplicates_skipped_total``, summed), the committed offsets of
  their consumer group on the touchpoints topic and each process's CPU time are sampled every
  ``SAMPLE_EVERY_S``; the sustained rate is taken between 10 % and 95 % of N
  (:func:`bench.report.sustained_rate`), and each worker's CPU and events in that window give
  its events per CPU second. The sink's rate is the valid events over the time from its own
  Ready (before the workers') until ``count()`` of ``touchpoint_events`` reached them (it
  writes in batches of up to ``CX_SINK_BATCH_ROWS`` / ``CX_SINK_BATCH_MS``, too coarse for a
  steady window), and its
  events per CPU second are the touchpoint rows it wrote over the CPU it used from its own
  Ready to that moment (including the scores, alerts and dead letters it wrote meanwhile).
  Each process's event-loop lag max is read from its /metrics (``cx_event_loop_lag_max_seconds``,
  the longest stall since it started) before it is stopped.
- Latency: fresh worker(s) and sink get simulator events at a fixed rate from the rate-limited
  publisher (librdkafka, paced), once at half and once at 80 % of the e2e rate (each run with its
  own topics, processes and database). *Publish time* is the event's Kafka record timestamp
  (CreateTime, set by the producer when ``send`` is called). *Alert time* is the alert record's
  timestamp, set by the worker's producer when it hands the alert over; the triggering event is
  the newest event of the alert's evidence (rules put the event being processed last in it);
  ``cart_recovery`` alerts fire on a deadline, not on a publish, and are counted apart. *Row
  visible* is the wall time of the first poll (every ``poll_ms``) of ``touchpoint_events`` that
  returns a sampled event id (written by the sink), so it over-states the true moment by up to
  ``poll_ms`` (1 s by default: a 100 ms poll of 2,000 ids loaded ClickHouse, on the core the
  sink and the broker share, enough to triple the latencies it measured). *Row acknowledged*
  (the figure checked against the goal) comes from the sink's own histogram
  ``cx_sink_event_to_row_seconds``, scraped when the warm-up ends and at the end: no query
  load, bucket resolution. Events published during the first ``warmup_s`` are left out of the
  distributions. Each process's CPU and event-loop lag max are reported for the run too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import orjson
from tqdm import tqdm

from bench.report import (
    TARGET_ALERT_P99_MS,
    EndToEnd,
    Latency,
    ProcessFigures,
    Resources,
    box_capacity_per_s,
    core_demand,
    cpu_use,
    histogram_stats,
    latency_by_second,
    latency_stats,
    step_changes,
    sustained_rate,
)
from bench.stack import (
    BenchStack,
    GroupLag,
    Proc,
    compiler_seconds,
    cpu_seconds,
    dir_bytes,
    peak_rss_bytes,
    wait_for,
)
from cxsignals.simulator.bulk import publish_bulk
from cxsignals.simulator.journeys import SimConfig, SimMessage, generate
from sinks import metrics as sink_metrics
from sinks.rows import TOUCHPOINT_EVENTS
from streams.kafka_security import PLAINTEXT, KafkaSecurity

N = TypeVar("N", int, float)
PREFILL_EVENT_GAP_S = 0.02  # event time of the pre-filled backlog: 50 events per second
SAMPLE_EVERY_S = 0.25  # the default size is drained in well under 10 s
MAX_ROW_SAMPLES = 2_000  # event ids polled in ClickHouse: one IN list, well under max_query_size
NO_TRIGGER_RULES = frozenset({"cart_recovery"})  # fired by a deadline, not by a publish


@dataclass(frozen=True)
class Prefill:
    topic: str
    events: int
    bad: int
    seconds: float

    @property
    def valid(self) -> int:
        return self.events - self.bad


def prefill(stack: BenchStack, *, events: int, customers: int, seed: int,
            bad_share: float) -> Prefill:
    """Publish ``events`` simulator events (event time ending about now) with aiokafka batches.
    Raises RuntimeError when any message was not delivered."""
    settings = stack.settings()
    span = timedelta(seconds=events * PREFILL_EVENT_GAP_S + 60)
    start = (datetime.now(timezone.utc) - span).replace(microsecond=0)
    config = SimConfig(customers=customers, seed=seed, start=start, total_events=events,
                       event_gap_s=PREFILL_EVENT_GAP_S, bad_share=bad_share)
    stats = publish_bulk(generate(config), bootstrap_servers=settings.kafka_bootstrap_servers,
                         topic=settings.topic_touchpoints, progress=True, total=events,
                         security=settings.kafka_security)
    if stats.failed or stats.interrupted:
        raise RuntimeError(f"pre-fill incomplete: {stats.summary()}")
    return Prefill(settings.topic_touchpoints, stats.sent, stats.bad, stats.elapsed_s)


def _handled(metrics: dict[str, float]) -> int:
    return int(metrics.get("cx_events_processed_total", 0)
               + metrics.get("cx_dead_letters_total", 0)
               + metrics.get("cx_duplicates_skipped_total", 0))


def _rows(client: Any, table: str = "touchpoint_events") -> int:
    return int(client.execute(f"SELECT count() FROM {table}")[0][0])


@dataclass
class Throughput:
    end_to_end: EndToEnd
    resources: Resources
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def _sink_rows(sink: Proc) -> int:
    """Touchpoint rows the sink wrote so far, by its own counter."""
    return int(sum(value for name, labels, value in sink.samples()
                   if name == "cx_clickhouse_rows_written_total"
                   and labels.get("table") == TOUCHPOINT_EVENTS))


def _loop_lag_max(proc: Proc) -> float | None:
    try:
        value = proc.metrics().get("cx_event_loop_lag_max_seconds")
    except OSError:  # gone or not answering: the figure is missing, the phase goes on
        return None
    return None if value is None else round(value, 4)


def _max(values: Sequence[N | None]) -> N | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _figures(proc: Proc, *, events: float | None, seconds: float | None,
             cpu_s: float | None, loop_lag_max_s: float | None,
             peak_rss: int | None = None,
             publishing: tuple[float | None, float] | None = None) -> ProcessFigures:
    """``publishing``: the CPU seconds used while the phase published and how long that took
    (a latency phase's span also waits for the last rows)."""
    busy_s, publish_s = publishing if publishing is not None else (None, 0.0)
    return ProcessFigures(
        role=proc.role, pid=proc.pid, cpu=proc.cpu,
        startup_s=round(proc.ready_s - proc.started_s, 2) if proc.ready_s else None,
        events=None if events is None else int(events),
        seconds=None if seconds is None else round(seconds, 2),
        events_per_s=round(events / seconds, 1) if events is not None and seconds else None,
        cpu_s=None if cpu_s is None else round(cpu_s, 2),
        cpu_utilization=round(cpu_s / seconds, 3) if cpu_s is not None and seconds else None,
        events_per_cpu_s=round(events / cpu_s, 1) if events is not None and cpu_s else None,
        loop_lag_max_s=loop_lag_max_s, peak_rss_bytes=peak_rss,
        cpu_utilization_publishing=(round(busy_s / publish_s, 3)
                                    if busy_s is not None and publish_s > 0 else None),
    )


def run_throughput(stack: BenchStack, fill: Prefill, *, customers: int,
                   worker_cpus: list[int | None], sink_cpu: int | None, timeout_s: float,
                   on_worker: Callable[[Proc, float], None] | None = None) -> Throughput:
    """Start ``len(worker_cpus)`` workers and the sink on the pre-filled topic and follow them
    until every event is handled and every valid event is a ClickHouse row, or ``timeout_s``
    after Ready (then ``timed_out``). ``on_worker(first_worker, fraction_handled)`` is called
    after each sample (the profiler hook). Raises RuntimeError when a process dies."""
    settings = stack.settings()
    started = time.monotonic()
    workers, sink = stack.start(worker_cpus, sink_cpu)
    procs = [*workers, sink]
    ready_s = max(p.ready_s for p in procs)
    startup_s = ready_s - started
    lag = GroupLag(settings.kafka_bootstrap_servers, settings.app_id, [fill.topic],
                   settings.kafka_security)
    client = stack.clickhouse()
    by_metrics: list[tuple[float, float]] = []
    by_lag: list[tuple[float, float]] = []
    by_rows: list[tuple[float, float]] = []
    by_sink: list[tuple[float, float]] = []
    handled_of: list[list[tuple[float, float]]] = [[] for _ in workers]
    cpu_of: list[list[tuple[float, float]]] = [[] for _ in procs]
    rss: list[int | None] = [None for _ in procs]
    all_handled_s = all_rows_s = None
    metrics: list[dict[str, float]] = [{} for _ in workers]
    rows = 0
    bar = tqdm(total=fill.events, unit=" ev", unit_scale=True, desc="workers", mininterval=0.5,
               dynamic_ncols=True)
    try:
        while True:
            for proc in procs:
                proc.check_alive()
            now_s = time.monotonic() - ready_s
            metrics = [w.metrics() for w in workers]
            for series, m in zip(handled_of, metrics, strict=True):
                series.append((now_s, _handled(m)))
            handled = sum(_handled(m) for m in metrics)
            committed, _lag = lag.sample()
            rows = _rows(client)
            by_sink.append((now_s, _sink_rows(sink)))
            for i, proc in enumerate(procs):
                rss[i] = peak_rss_bytes(proc.pid) or rss[i]
                used_s = cpu_seconds(proc.pid)
                if used_s is not None:
                    cpu_of[i].append((now_s, used_s))
            by_metrics.append((now_s, handled))
            by_lag.append((now_s, committed))
            by_rows.append((now_s, rows))
            bar.update(min(handled, fill.events) - bar.n)
            bar.set_postfix(rows=f"{rows:,}", refresh=False)
            if all_handled_s is None and handled >= fill.events:
                all_handled_s = now_s
            if all_rows_s is None and rows >= fill.valid:
                all_rows_s = now_s
            if on_worker is not None:
                on_worker(workers[0], handled / fill.events)
            if (all_handled_s is not None and all_rows_s is not None) or now_s > timeout_s:
                break
            time.sleep(max(0.0, SAMPLE_EVERY_S - (time.monotonic() - ready_s - now_s)))
    finally:
        bar.close()
        lag.close()
    lags = [_loop_lag_max(p) for p in procs]
    ev = sustained_rate(by_metrics, fill.events)
    lg = sustained_rate(step_changes(by_lag), fill.events)  # None: too few commits to tell
    figures: list[ProcessFigures] = []
    for i, worker in enumerate(workers):
        cpu_s = _delta_between(cpu_of[i], ev.start_s, ev.end_s) if ev else None
        done = _delta_between(handled_of[i], ev.start_s, ev.end_s) if ev else None
        figures.append(_figures(worker, events=done, seconds=ev.seconds if ev else None,
                                cpu_s=cpu_s,
                                loop_lag_max_s=lags[i], peak_rss=rss[i]))
    worker_cpus_s = [f.cpu_s for f in figures]
    worker_cpu_s = None if None in worker_cpus_s else sum(c or 0.0 for c in worker_cpus_s)
    figures.append(_sink_figures(sink, by_sink, cpu_of[-1], all_rows_s, ready_s, lags[-1],
                                 rss[-1]))
    # The sink writes batches of up to CX_SINK_BATCH_ROWS every CX_SINK_BATCH_MS, so its row
    # count moves in steps: a whole-run average (valid rows / time from the sink's Ready to the
    # last row) says more. The sink is Ready before the workers and may drain the backlog before
    # the first sample: then the span is an upper bound (the first sample's time).
    sink_s = figures[-1].seconds if all_rows_s is not None else None
    rows_per_s = round(fill.valid / sink_s, 1) if sink_s else None
    e2e = EndToEnd(
        events=fill.events, customers=customers, valid_events=fill.valid,
        startup_s=round(startup_s, 2),
        seconds_to_all_handled=all_handled_s and round(all_handled_s, 1),
        events_per_s_metrics=ev and round(ev.per_s, 1),
        events_per_s_lag=lg and round(lg.per_s, 1),
        window_s=ev and round(ev.seconds, 1),
        cpu_utilization=(round(worker_cpu_s / ev.seconds, 3)
                         if ev and worker_cpu_s else None),
        events_per_cpu_s=(round((ev.end_count - ev.start_count) / worker_cpu_s, 1)
                          if ev and worker_cpu_s else None),
        handled=sum(_handled(m) for m in metrics),
        dead_letters=int(sum(m.get("cx_dead_letters_total", 0) for m in metrics)),
        alerts=int(sum(m.get("cx_alerts_emitted_total", 0) for m in metrics)),
        score_updates=int(sum(m.get("cx_scores_published_total", 0) for m in metrics)),
        clickhouse_rows=rows,
        clickhouse_seconds_to_all_rows=sink_s and round(sink_s, 1),
        clickhouse_rows_per_s=rows_per_s,
        timed_out=all_handled_s is None or all_rows_s is None,
        workers=len(workers), sink_events_per_cpu_s=figures[-1].events_per_cpu_s,
        worker_loop_lag_max_s=_max(lags[:-1]), sink_loop_lag_max_s=lags[-1],
        processes=figures,
    )
    for proc in procs:
        proc.stop()  # a clean stop flushes RocksDB before its size is read
    resources = state_resources(stack.state_dir, _max(rss[:-1]))
    resources.sink_peak_rss_bytes = rss[-1]
    client.disconnect()
    return Throughput(e2e, resources, {"metrics": by_metrics, "lag": by_lag, "rows": by_rows,
                                       "sink_rows": by_sink})


def _sink_figures(sink: Proc, rows: list[tuple[float, float]], cpu: list[tuple[float, float]],
                  all_rows_s: float | None, ready_s: float, loop_lag_max_s: float | None,
                  peak_rss: int | None) -> ProcessFigures:
    """The sink from its own Ready (it may start reading before the workers are Ready; idle
    time costs no CPU) to the sample that saw the last touchpoint row, or the last sample."""
    if not rows or not cpu or sink.ready_cpu_s is None:
        return _figures(sink, events=None, seconds=None, cpu_s=None,
                        loop_lag_max_s=loop_lag_max_s, peak_rss=peak_rss)
    end_s = all_rows_s if all_rows_s is not None else rows[-1][0]
    written, used = dict(rows).get(end_s), dict(cpu).get(end_s)
    return _figures(sink, events=written, seconds=end_s + ready_s - sink.ready_s,
                    cpu_s=None if used is None else used - sink.ready_cpu_s,
                    loop_lag_max_s=loop_lag_max_s, peak_rss=peak_rss)


def _delta_between(samples: list[tuple[float, float]], start_s: float, end_s: float
                   ) -> float | None:
    """Increase of a sampled counter between the samples taken at ``start_s`` and ``end_s``."""
    at = dict(samples)
    if start_s not in at or end_s not in at:
        return None
    return at[end_s] - at[start_s]


def state_resources(state_dir: Path, peak_rss: int | None) -> Resources:
    """Size of the worker's state dir and of its customer-state values (read-only RocksDB)."""
    from rocksdict import AccessType, Options, Rdict

    size = dir_bytes(state_dir) if state_dir.exists() else None
    customers = 0
    value_bytes = 0
    for db in sorted(state_dir.rglob("customer-state*.db")):
        store = Rdict(str(db), options=Options(raw_mode=True),
                      access_type=AccessType.read_only())
        try:
            for value in store.values():
                customers += 1
                value_bytes += len(value)
        finally:
            store.close()
    return Resources(
        peak_rss_bytes=peak_rss,
        state_dir_bytes=size,
        customers_in_state=customers,
        state_dir_bytes_per_customer=round(size / customers, 1) if size and customers else None,
        mean_state_value_bytes=round(value_bytes / customers, 1) if customers else None,
    )


# ---------------------------------------------------------------------------- latency


class RowPoller(threading.Thread):
    """Polls ClickHouse for sampled event ids; remembers the wall time (ms) each first showed."""

    def __init__(self, client: Any, event_ids: list[str], poll_ms: int) -> None:
        super().__init__(name="row-poller", daemon=True)
        self.client = client
        self.pending = set(event_ids)
        self.seen_ms: dict[str, float] = {}
        self.poll_s = poll_ms / 1000
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set() and self.pending:
                began = time.monotonic()
                found = self.client.execute(
                    "SELECT event_id FROM touchpoint_events WHERE event_id IN %(ids)s",
                    {"ids": tuple(self.pending)},
                )
                now_ms = time.time() * 1000
                for (event_id,) in found:
                    if event_id in self.pending:
                        self.pending.discard(event_id)
                        self.seen_ms[event_id] = now_ms
                self.stop.wait(max(0.0, self.poll_s - (time.monotonic() - began)))
        except BaseException as exc:  # reported by the phase, never lost in the thread
            self.error = exc


ROW_FRESHNESS = f"{next(iter(sink_metrics.event_to_row.describe())).name}_bucket"


def _row_buckets(sink: Proc) -> dict[float, float]:
    """The sink's publish -> row histogram: cumulative count per upper bound (s)."""
    return {float(labels["le"]): value for name, labels, value in sink.samples()
            if name == ROW_FRESHNESS}


def read_topic(bootstrap: str, topic: str, timeout_s: float = 120.0,
               security: KafkaSecurity = PLAINTEXT) -> list[tuple[bytes | None, bytes, int]]:
    """Every (key, value, timestamp_ms) of ``topic`` up to its current end offsets."""
    from aiokafka import AIOKafkaConsumer

    async def read() -> list[tuple[bytes | None, bytes, int]]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    fetch_max_bytes=50 * 1024 * 1024,
                                    **security.aiokafka_options())
        await asyncio.wait_for(consumer.start(), 30)
        out: list[tuple[bytes | None, bytes, int]] = []
        try:
            deadline = time.monotonic() + timeout_s
            while not consumer.assignment() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            ends = await consumer.end_offsets(list(consumer.assignment()))
            while await _behind(consumer, ends):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading {topic} took over {timeout_s:.0f} s")
                batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
                for records in batches.values():
                    out.extend((r.key, r.value or b"", r.timestamp) for r in records)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(read())


async def _behind(consumer: Any, ends: dict[Any, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


def _event_id(value: bytes) -> str | None:
    with contextlib.suppress(Exception):
        doc = orjson.loads(value)
        if isinstance(doc, dict) and isinstance(doc.get("event_id"), str):
            return str(doc["event_id"])
    return None


PACE_TICK_S = 0.001
PUBLISH_LINGER_MS = 5
"""librdkafka's default (``linger.ms``; the Java producer's too from Kafka 4.0): what an
upstream app's producer does unless told otherwise. The bench used 2 until 2026-12-08."""


def publish_paced(messages: list[SimMessage], *, bootstrap_servers: str, topic: str,
                  rate_per_s: float, security: KafkaSecurity = PLAINTEXT) -> tuple[int, float]:
    """Publish at ``rate_per_s`` with librdkafka (confluent-kafka): a C producer, so that at
    thousands of events per second the publisher's own CPU does not delay the records it
    stamps (CreateTime is set when a record is produced). Kafka's default partitioner for keyed
    records (murmur2), as the Java and kafka-python producers. Returns how many failed and the
    rate reached.

    The publisher runs on the services' core, whose load the latency phases measure, so it
    does as little as it can a message: librdkafka reports failed deliveries only
    (``delivery.report.only.error``, to the producer's ``on_delivery``), polled once a pacing
    tick rather than after every message, and it lingers :data:`PUBLISH_LINGER_MS` (fewer,
    fuller produce requests for the broker too). On 2026-12-08 at 16,000 messages/s: 6.9-7.5
    us of CPU a message against 9.1-9.4 (half in librdkafka's broker thread)."""
    from confluent_kafka import Producer

    failed = 0

    def delivered(err: object, _msg: object) -> None:
        nonlocal failed
        if err is not None:
            failed += 1

    producer = Producer({"bootstrap.servers": bootstrap_servers, "acks": "all",
                         "linger.ms": PUBLISH_LINGER_MS, "partitioner": "murmur2_random",
                         "delivery.report.only.error": True, "on_delivery": delivered,
                         **security.librdkafka_config()})
    produce, poll, now_s = producer.produce, producer.poll, time.monotonic
    started = now_s()
    for n, message in enumerate(messages):
        wait_s = started + n / rate_per_s - now_s()
        if wait_s > 0:
            poll(0)  # failed deliveries, once a tick
            # At least PACE_TICK_S: the messages due meanwhile then go out together. A sleep per
            # message (every 78 us at 12,875/s) cost the harness, on the services' core, a
            # wake-up per message.
            time.sleep(max(wait_s, PACE_TICK_S))
        while True:
            try:
                produce(topic, message.value, message.key)
                break
            except BufferError:
                # librdkafka's queue is full: the broker acknowledges slower than the pace (a
                # broker just started, a busy services core). Wait for deliveries, go on: the
                # records published late are measured late, as a real producer's would be.
                poll(0.05)
    elapsed_s = time.monotonic() - started
    failed += producer.flush(60)
    return failed, len(messages) / elapsed_s if elapsed_s > 0 else 0.0


def latency_traffic(rate_per_s: float, duration_s: float, customers: int, seed: int, *,
                    start: datetime) -> SimConfig:
    """What a latency phase publishes: simulator events ``1 / rate_per_s`` apart in event time
    (``seed``: the run's; the phase uses the next one), no bad messages. Also replayed by
    ``bench.steady_engine``."""
    return SimConfig(customers=customers, seed=seed + 1,
                     total_events=max(1, int(rate_per_s * duration_s)), start=start,
                     event_gap_s=1.0 / rate_per_s, bad_share=0.0)


def run_latency(stack: BenchStack, *, rate_per_s: float, load_fraction: float | None,
                duration_s: float, warmup_s: float, customers: int, seed: int,
                worker_cpus: list[int | None], sink_cpu: int | None, poll_ms: int,
                settle_timeout_s: float = 90.0,
                neighbours: Sequence[tuple[str, int, int | None]] = ()) -> Latency:
    """Feed fresh workers and a fresh sink at ``rate_per_s`` for ``duration_s``; see the module
    docstring for what the two latencies are. Raises RuntimeError if a process dies.

    ``neighbours``: the other processes the phase keeps busy, as (name, pid, core): the local
    services and the harness itself; their CPU joins the phase's ``cpu_budget``."""
    settings = stack.settings()
    workers, sink = stack.start(worker_cpus, sink_cpu)
    procs = [*workers, sink]
    config = latency_traffic(rate_per_s, duration_s, customers, seed,
                             start=datetime.now(timezone.utc).replace(microsecond=0))
    total = config.total_events or 1
    messages = list(generate(config))
    ids = [i for i in (_event_id(m.value) for m in messages) if i is not None]
    sample = ids[:: max(1, len(ids) // MAX_ROW_SAMPLES)]
    poller = RowPoller(stack.clickhouse(), sample, poll_ms)
    poller.start()
    # The sink's freshness histogram, scraped when the warm-up ends and once all is settled.
    rows_at_warmup: dict[float, float] = {}
    scrape = threading.Timer(warmup_s, lambda: rows_at_warmup.update(_row_buckets(sink)))
    scrape.daemon = True
    scrape.start()
    # Every process whose CPU the phase budgets: the workers and the sink first, then the rest.
    watched = [(p.role, p.pid, p.cpu) for p in procs] + list(neighbours)

    def cpu_now() -> list[float | None]:
        return [cpu_seconds(pid) for _name, pid, _cpu in watched]

    def compiler_now() -> list[float | None]:  # a JVM's JIT threads (Kafka's), else None
        return [compiler_seconds(pid) for _name, pid, _cpu in watched]

    began_s = time.monotonic()
    compiler_before = compiler_now()
    cpu_before = cpu_now()
    rows_before = _sink_rows(sink)
    try:
        failed, reached_per_s = publish_paced(
            messages, bootstrap_servers=settings.kafka_bootstrap_servers,
            topic=settings.topic_touchpoints, rate_per_s=rate_per_s,
            security=settings.kafka_security)
        publish_s = time.monotonic() - began_s
        cpu_published = cpu_now()
        if failed:
            raise RuntimeError(f"latency publish: {failed} of {total} messages not delivered")

        def settled() -> bool:
            for proc in procs:
                proc.check_alive()
            handled = sum(_handled(w.metrics()) for w in workers)
            return handled >= total and not poller.pending

        with contextlib.suppress(TimeoutError):  # what arrived in time is still measured
            wait_for(settled, settle_timeout_s, "the workers and ClickHouse to catch up", 0.5)
        time.sleep(1.0)  # alerts handed over last are delivered by the producer's next flush
        rows_at_end = _row_buckets(sink)
        cpu_settled = cpu_now()
        compiler_settled = compiler_now()
    finally:
        scrape.cancel()
        poller.stop.set()
        poller.join(timeout=10)
    if poller.error is not None:
        raise RuntimeError(f"ClickHouse poller failed: {poller.error}")
    seconds = time.monotonic() - began_s
    lags = [_loop_lag_max(p) for p in procs]
    events = [float(_handled(w.metrics())) for w in workers] + [_sink_rows(sink) - rows_before]
    figures = []
    published_n = total - failed
    budget = [cpu_use(name, pid, cpu, before_s=before, published_s=mid, settled_s=after,
                      publish_wall_s=publish_s, events=published_n,
                      compiler_s=None if jit_0 is None or jit_1 is None else jit_1 - jit_0)
              for (name, pid, cpu), before, mid, after, jit_0, jit_1 in zip(
                  watched, cpu_before, cpu_published, cpu_settled, compiler_before,
                  compiler_settled, strict=True)]
    n = len(procs)  # the neighbours' snapshots (after the processes') are the budget's only
    for proc, before, at_publish_end, done, lag_max in zip(procs, cpu_before[:n],
                                                           cpu_published[:n], events, lags,
                                                           strict=True):
        after = cpu_seconds(proc.pid)
        used = None if before is None or after is None else after - before
        busy = None if before is None or at_publish_end is None else at_publish_end - before
        figures.append(_figures(proc, events=done, seconds=seconds, cpu_s=used,
                                loop_lag_max_s=lag_max, peak_rss=peak_rss_bytes(proc.pid),
                                publishing=(busy, publish_s)))
    for proc in procs:
        proc.stop()

    published = {i: ts for _k, v, ts in read_topic(settings.kafka_bootstrap_servers,
                                                   settings.topic_touchpoints,
                                                   security=settings.kafka_security)
                 if (i := _event_id(v)) is not None}
    cutoff_ms = min(published.values(), default=0) + warmup_s * 1000
    to_row = [seen - published[i] for i, seen in poller.seen_ms.items()
              if i in published and published[i] >= cutoff_ms]
    to_alert: list[float] = []
    timed: list[tuple[float, float]] = []  # (trigger publish ms, latency ms)
    by_rule: dict[str, list[float]] = {}
    alerts = no_trigger = 0
    for topic in (settings.topic_alerts_marketing, settings.topic_alerts_support):
        for _key, value, ts in read_topic(settings.kafka_bootstrap_servers, topic,
                                          security=settings.kafka_security):
            alerts += 1
            alert = orjson.loads(value)
            triggers = [published[e] for e in alert.get("evidence", ()) if e in published]
            if alert.get("rule") in NO_TRIGGER_RULES or not triggers:
                no_trigger += 1
                continue
            trigger_ms = max(triggers)
            if trigger_ms >= cutoff_ms:
                to_alert.append(ts - trigger_ms)
                timed.append((trigger_ms, ts - trigger_ms))
                by_rule.setdefault(str(alert.get("rule")), []).append(ts - trigger_ms)
    return Latency(
        rate_per_s=round(rate_per_s, 1), published=total - failed, measured_after_s=warmup_s,
        event_to_alert=latency_stats(to_alert), event_to_row=latency_stats(to_row),
        event_to_row_sink=histogram_stats(rows_at_warmup, rows_at_end),
        event_to_alert_by_rule={rule: latency_stats(v) for rule, v in sorted(by_rule.items())},
        event_to_alert_by_second=latency_by_second(timed, TARGET_ALERT_P99_MS),
        alerts_seen=alerts, alerts_without_trigger=no_trigger, row_samples=len(sample),
        rows_not_seen=len(poller.pending), poll_ms=poll_ms, load_fraction=load_fraction,
        published_per_s=round(reached_per_s, 1), worker_loop_lag_max_s=_max(lags[:-1]),
        sink_loop_lag_max_s=lags[-1], processes=figures, cpu_budget=budget,
        core_demand=core_demand(budget, rate_per_s),
        capacity_per_s=box_capacity_per_s(budget, os.cpu_count() or 1),
    )
