"""Instructions the sink spends a record, counted, not timed: a noise-free A/B of the sink.

``python -m bench.sink_cost`` runs the sink's own per-record path under Valgrind's callgrind,
counting only it: the records a live sink reads for ``make bench``'s pre-fill (the simulator's
events and, from :mod:`bench.pipeline_bench`'s worker pipeline, the score updates, alerts and
dead letters it publishes for them, uncounted) go through :func:`sinks.consumer.build_sink`'s
``StoreLoop._build`` (validation, sentiment, rows) and ``BatchBuffer`` in fetches of
``--fetch`` records, and every ``--batch-records`` into its ``TableWriters.write``: the range
check, the columns and clickhouse-driver's native-protocol blocks, inserted into the real
ClickHouse (a database of its own, dropped afterwards). Not counted: Kafka (aiokafka's fetch
parsing, ~8 % of a live sink's samples on 2026-12-08) and the ClickHouse server.

Why: the box's speed drifts by +-30 % (on 2026-12-08 every process of a latency phase cost
1.3-1.5x the day before), so the sink's live CPU an event cannot tell a 5 % change; the counts
of one commit repeat within ~0.5 %. The wall clock is :class:`bench.cache_profile.VirtualClock`'s,
so the worker's outputs are the same in every run. Needs valgrind, a C compiler and ClickHouse
(``make services``); ~2 minutes at the defaults.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import os
import shutil
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiokafka.structs import ConsumerRecord

from bench.cache_profile import VirtualClock, counted_run, read_totals

FETCH_RECORDS = 2_000
BATCH_RECORDS = 5_000
"""About a live batch at 16,000 events/s: 250 ms of events plus their score updates."""


def sink_records(events: int, customers: int, seed: int) -> list[ConsumerRecord[bytes, bytes]]:
    """The touchpoint events of ``make bench``'s pre-fill and what the worker publishes for
    them (its ``Output`` records on the topics the sink reads), interleaved as a sink fetches
    them: after each worker fetch's events, a proportional share of the outputs."""
    from bench.pipeline_bench import fetches, run_once
    from schemas.topics import TopicNames
    from streams.config import WorkerConfig

    topics = TopicNames()
    read = {topics.touchpoints, topics.scores, topics.alerts_marketing, topics.alerts_support,
            topics.alerts_control, topics.dead_letters}
    _warm, batches = fetches(events, customers, seed, FETCH_RECORDS)
    captured: list[Any] = []
    run_once(batches, WorkerConfig(), 0, capture=captured)
    outputs: list[ConsumerRecord[bytes, bytes]] = []
    offsets: dict[tuple[str, int], int] = {}
    for output in captured:
        if output.topic not in read:
            continue
        partition = output.partition or 0
        offset = offsets.get((output.topic, partition), 0)
        offsets[(output.topic, partition)] = offset + 1
        outputs.append(ConsumerRecord(output.topic, partition, offset, 0, 0, output.key,
                                      output.value, None, len(output.key or b""),
                                      len(output.value or b""), list(output.headers or [])))
    out: list[ConsumerRecord[bytes, bytes]] = []
    for i, fetch in enumerate(batches):
        for records in fetch.values():
            out.extend(records)
        share = slice(i * len(outputs) // len(batches), (i + 1) * len(outputs) // len(batches))
        out.extend(outputs[share])
    return out


def run_sink(records: list[ConsumerRecord[bytes, bytes]], clickhouse_url: str, *,
             fetch: int = FETCH_RECORDS, batch_records: int = BATCH_RECORDS,
             window: tuple[Any, Any] | None = None) -> dict[str, int]:
    """``records`` through the sink's row building and writers into a fresh database (dropped
    afterwards); ``window``: called before the first fetch and after the last write. Returns
    the rows written by table."""
    from clickhouse_driver import Client

    from sinks.batch import BatchBuffer
    from sinks.config import ClickHouseParams, SinkConfig
    from sinks.consumer import build_sink
    from sinks.migrations import apply_migrations, parse_version

    params = ClickHouseParams.from_url(clickhouse_url)
    database = f"bench_sinkcost_{uuid.uuid4().hex[:8]}"
    admin = Client(**params.client_options())
    admin.execute(f"CREATE DATABASE {database}")
    written: dict[str, int] = {}
    try:
        version = parse_version(str(admin.execute("SELECT version()")[0][0]))
        apply_migrations(admin.execute, server_version=version, database=database)
        sink = build_sink(SinkConfig(clickhouse=dataclasses.replace(params, database=database)))
        buffer = BatchBuffer(max_rows=10**9, max_age_ms=10**9)

        def write() -> None:
            batch = buffer.drain()
            stats = sink.writer.write(batch.rows)
            for table, n in stats.rows.items():
                written[table] = written.get(table, 0) + n

        if window is not None:
            window[0]()
        for start in range(0, len(records), fetch):
            now = datetime.now(timezone.utc)
            now_ms = int(now.timestamp() * 1000)
            for record in records[start:start + fetch]:
                source = (record.topic, record.partition, record.offset)
                rows = sink._build(record, now)
                if not rows:
                    buffer.mark(source, now_ms=now_ms)
                for table, row in rows:
                    buffer.add(table, row, now_ms=now_ms, source=source, origin=record)
            if len(buffer) >= batch_records:
                write()
        write()
        if window is not None:
            window[1]()
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {database}")
        admin.disconnect()
    return written


def _inner(args: argparse.Namespace) -> None:
    from cxsignals.gc_tuning import tune_collector

    helper = ctypes.CDLL(args.helper)
    VirtualClock().install()
    records = sink_records(args.events, args.customers, args.seed)
    # The sink's collector, as `cxsignals sink` tunes it (the records, input here, frozen with
    # the start-up objects): an untuned one walked the batch's rows at every few thousand
    # allocations: 6 % of the counted instructions on 2026-12-08.
    tune_collector()
    print(f"counting the sink over {len(records):,} records ({args.events:,} events)",
          flush=True)
    written = run_sink(records, args.clickhouse_url, fetch=args.fetch,
                       batch_records=args.batch_records,
                       window=(helper.cx_counting_on, helper.cx_counting_off))
    print("rows written: " + ", ".join(f"{t} {n:,}" for t, n in sorted(written.items())),
          flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=40_000, help="touchpoint events")
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fetch", type=int, default=FETCH_RECORDS, help="records a fetch")
    parser.add_argument("--batch-records", type=int, default=BATCH_RECORDS,
                        help="records a ClickHouse batch")
    parser.add_argument("--clickhouse-url", default=os.environ.get(
        "CLICKHOUSE_URL", "clickhouse://default:@127.0.0.1:9000/cx"))
    parser.add_argument("--keep", type=Path, default=None, help="copy the callgrind dump here")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--helper", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inner:
        _inner(args)
        return
    if shutil.which("valgrind") is None:
        sys.exit("error: valgrind not found (Debian: apt-get install valgrind)")
    inner = ["--events", str(args.events), "--customers", str(args.customers), "--seed",
             str(args.seed), "--fetch", str(args.fetch), "--batch-records",
             str(args.batch_records), "--clickhouse-url", args.clickhouse_url]
    print("about 2 minutes under callgrind", flush=True)
    with counted_run("bench.sink_cost", inner, 32, args.keep) as dump:
        totals = read_totals(dump)
    print(f"per touchpoint event ({args.events:,}; the outputs' records included): "
          f"instructions {totals['Ir'] / args.events:,.1f}, data reads "
          f"{totals['Dr'] / args.events:,.1f}, writes {totals['Dw'] / args.events:,.1f}, "
          f"LL misses {(totals['DLmr'] + totals['DLmw']) / args.events:,.1f}")


if __name__ == "__main__":
    main()
