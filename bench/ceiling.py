"""The ceiling: how fast one Python process reads a topic and decodes its events, doing nothing
else. aiokafka ``getmany`` batches (the cheapest way a Python consumer gets records) and
``validate_event`` on each value, as the worker does; no state, no producer, no commits.

Run pinned to a core, as ``bench.run`` does: ``taskset -c 0 python -m bench.ceiling --topic T
--events N``; prints one JSON object on stdout (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from datetime import datetime, timezone
from typing import Any

from aiokafka import AIOKafkaConsumer
from tqdm import tqdm

from cxsignals.settings import Settings
from streams.core.validation import Invalid, validate_event

MAX_MESSAGE_BYTES = 2 * 1024 * 1024 + 4096  # as streams.app, without importing the Faust app
BATCH_RECORDS = 10_000


async def read_and_decode(bootstrap: str, topic: str, events: int, timeout_s: float,
                          settings: Settings, progress: bool = True,
                          validate: bool = True) -> dict[str, Any]:
    """Read ``events`` records of ``topic`` from the beginning and validate each one (with
    ``validate`` False: nothing but the getmany loop, the guide's "raw aiokafka getmany"
    reference, which tells how fast the box is on the day).

    Raises TimeoutError when fewer arrived within ``timeout_s`` (counting from the start).
    """
    # Without a group, a subscribed consumer is assigned every partition of the topic.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest", max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
        fetch_max_bytes=50 * 1024 * 1024, **settings.kafka_security.aiokafka_options(),
    )
    await asyncio.wait_for(consumer.start(), 30)
    bar = tqdm(total=events, unit=" ev", unit_scale=True,
               desc="ceiling" if validate else "raw getmany", disable=not progress,
               mininterval=0.5, file=sys.stderr, dynamic_ncols=True)
    try:
        max_bytes, skew_s = settings.max_event_bytes, settings.max_future_skew_s
        seen = invalid = 0
        deadline = time.monotonic() + timeout_s
        started = time.perf_counter()
        cpu_started = _cpu_s()
        while seen < events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ceiling read {seen} of {events} events in {timeout_s:.0f} s")
            batches = await consumer.getmany(timeout_ms=500, max_records=BATCH_RECORDS)
            for records in batches.values():
                if validate:
                    now = datetime.now(timezone.utc)
                    for record in records:
                        result = validate_event(record.value or b"", now=now,
                                                max_bytes=max_bytes, max_future_skew_s=skew_s)
                        invalid += isinstance(result, Invalid)
                seen += len(records)
                bar.update(len(records))
        elapsed = time.perf_counter() - started
        cpu = _cpu_s() - cpu_started
    finally:
        bar.close()
        await consumer.stop()
    return {"events": seen, "invalid": invalid, "seconds": round(elapsed, 3),
            "events_per_s": round(seen / elapsed, 1), "cpu_s": round(cpu, 3),
            "events_per_cpu_s": round(seen / cpu, 1) if cpu > 0 else None}


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--raw", action="store_true",
                        help="getmany only, no validation (the box's reference)")
    args = parser.parse_args(argv)
    settings = Settings()
    result = asyncio.run(read_and_decode(settings.kafka_bootstrap_servers, args.topic,
                                         args.events, args.timeout_s, settings,
                                         progress=not args.no_progress,
                                         validate=not args.raw))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
