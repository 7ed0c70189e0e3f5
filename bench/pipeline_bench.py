"""The worker's scoring pipeline without Kafka: what the e2e phase measures, minus the broker.

``python -m bench.pipeline_bench`` feeds simulator events (as ``make bench`` pre-fills them) to
:meth:`streams.pipeline.ScoringPipeline.handle` in fetches of ``CX_BATCH_MAX_EVENTS`` records,
as the worker's consumer hands them over: validation, identity, partition routing, the engine,
outputs, checkpoints (states encoded, one write per customer per checkpoint) and acks. The
tables are dicts and the producer answers at once, so what it prints is the CPU the worker
spends on everything but Kafka and RocksDB, per event, without the box's broker in the noise
(on 2026-12-06: ~22 us an event here against ~26 us per worker CPU second in ``make bench``).
The collector is tuned as in the worker. Use it to compare two commits: alternate the runs.

``--warm-events N`` scores N events first, untimed, so that the measured ones meet full states
as the latency phases' do (700,000 at 10,000 customers: ~80 events a customer, as 30 s at
27,000 events/s); ``--batch 700`` gives fetches of a live worker's size. On 2026-12-06 that
measured ~44 us an event where fresh states cost ~22, the figure a live worker in the 80 %
phase showed (22,890 events per CPU second): see docs/performance.md.

Nothing here is built at import; it needs no service.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from aiokafka.structs import ConsumerRecord, TopicPartition

from cxsignals.gc_tuning import WORKER_YOUNG_ALLOCATIONS, tune_collector
from cxsignals.simulator.journeys import SimConfig, generate
from schemas.topics import TopicNames
from streams.app import build_engine
from streams.config import WorkerConfig
from streams.core.engine import Engine
from streams.huge_pages import use_huge_pages
from streams.partitioner import customer_partition
from streams.pipeline import PipelineLimits, ScoringPipeline
from streams.processing import Processor

PARTITIONS = 4
KEYED = "bench.touchpoints.keyed"


@dataclass(frozen=True)
class _Out:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int


@dataclass(frozen=True)
class _Delivery:
    future: asyncio.Future[Any]
    indices: list[int]


@dataclass
class _Table:
    """A changelogged table in a dict; counts the states written."""

    name: str
    data: dict[tuple[int, bytes], bytes] = field(default_factory=dict)
    by_key: dict[bytes, bytes] = field(default_factory=dict)
    written: int = 0

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get((partition, key))

    def get_any(self, key: bytes) -> bytes | None:
        return self.by_key.get(key)

    def put_many(self, partition: int, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        self.written += len(items)
        for key, value in items:
            if value is None:
                self.data.pop((partition, key), None)
                self.by_key.pop(key, None)
            else:
                self.data[(partition, key)] = value
                self.by_key[key] = value

    def changelog_record(self, partition: int, key: bytes, value: bytes | None) -> Any:
        return _Out(f"{self.name}-changelog", key, value, partition)

    def delivered(self, delivery: Any) -> None:
        pass

    def persist_offsets(self) -> None:
        pass

    def partitions_of(self, key: bytes) -> list[int]:
        return [p for (p, k) in self.data if k == key]


class TimedEngine:
    """The engine, with the CPU each ``process`` call took summed per event type (a survey
    answer with a comment apart: it runs the sentiment analyzer) while ``timing`` is on.
    ``tick`` and the risk look-ups pass through untimed."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.timing = False
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def process(self, state: Any, customer_id: str, event: Any, *, now: datetime) -> Any:
        if not self.timing:
            return self.engine.process(state, customer_id, event, now=now)
        started = time.process_time()
        try:
            return self.engine.process(state, customer_id, event, now=now)
        finally:
            took = time.process_time() - started
            kind = event.event_type
            if kind == "survey_answer" and getattr(event.properties, "comment", None):
                kind = "survey_answer (comment)"
            self.seconds[kind] = self.seconds.get(kind, 0.0) + took
            self.counts[kind] = self.counts.get(kind, 0) + 1

    def tick(self, state: Any, customer_id: str, *, now: datetime, idle_risk: bool = True) -> Any:
        return self.engine.tick(state, customer_id, now=now, idle_risk=idle_risk)

    def risk_wakeup_s(self, state: Any, now_s: float) -> float | None:
        return self.engine.risk_wakeup_s(state, now_s)

    def risk_first_look_s(self, state: Any, now_s: float) -> float | None:
        return self.engine.risk_first_look_s(state, now_s)

    def table(self) -> list[str]:
        """One line per event type, the largest share of the engine's time first."""
        n = sum(self.counts.values())
        if not n:
            return []
        lines = [f"engine by event type ({n:,} events, "
                 f"{sum(self.seconds.values()) / n * 1e6:.1f} us an event):"]
        for kind in sorted(self.seconds, key=lambda k: -self.seconds[k]):
            count, took = self.counts[kind], self.seconds[kind]
            lines.append(f"  {kind:26s} {100 * count / n:5.1f} % of events, "
                         f"{took / count * 1e6:6.1f} us each, {took / n * 1e6:5.2f} us an event")
        return lines


@dataclass(frozen=True)
class PipelineRun:
    events: int
    cpu_us_per_event: float
    events_per_s: float
    fetches: int
    outputs: int
    state_writes: int


Fetch = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]


def fetches(events: int, customers: int, seed: int, batch: int,
            warm_events: int = 0) -> tuple[list[Fetch], list[Fetch]]:
    """The pre-fill of ``make bench`` (0.1 % bad messages), keyed by customer on 4 partitions,
    cut into fetches of at most ``batch`` records spread over the partitions (aiokafka's own
    record type, as the worker gets them): the fetches of the first ``warm_events`` events,
    then those of the ``events`` after them."""
    total = warm_events + events
    start = (datetime.now(timezone.utc) - timedelta(seconds=total * 0.001 + 60)).replace(
        microsecond=0)
    messages = list(generate(SimConfig(customers=customers, seed=seed, start=start,
                                       total_events=total, event_gap_s=0.001,
                                       bad_share=0.001)))
    return (_cut(messages[:warm_events], batch, 0),
            _cut(messages[warm_events:], batch, warm_events))


def _cut(messages: Sequence[Any], batch: int, first_offset: int) -> list[Fetch]:
    now_ms = int(time.time() * 1000)
    parts: list[list[ConsumerRecord[bytes, bytes]]] = [[] for _ in range(PARTITIONS)]
    topic = TopicNames().touchpoints
    for message in messages:
        p = customer_partition(message.key.decode(), PARTITIONS) if message.key else 0
        key, value = message.key, message.value
        parts[p].append(ConsumerRecord(topic, p, first_offset + len(parts[p]), now_ms, 0, key,
                                       value, None, len(key or b""), len(value or b""), []))
    per_partition = max(1, batch // PARTITIONS)
    out = []
    for start_at in range(0, max(map(len, parts), default=0), per_partition):
        fetch = {TopicPartition(topic, p): recs[start_at:start_at + per_partition]
                 for p, recs in enumerate(parts) if recs[start_at:start_at + per_partition]}
        out.append(fetch)
    return out


def run_once(batches: list[Fetch], config: WorkerConfig, warm: int = 0,
             timed: TimedEngine | None = None,
             window: tuple[Callable[[], object], Callable[[], object]] | None = None,
             capture: list[Any] | None = None) -> PipelineRun:
    """One pipeline over ``batches`` (fresh states), timed from fetch ``warm`` (the ones
    before fill the states, as a live worker's are) to the drain. ``timed``: an engine whose
    ``process`` calls are timed per event type from fetch ``warm`` on (it adds ~1 us an
    event to the total). ``window``: called when the measured fetches begin and right after
    their drain, before anything is torn down (:mod:`bench.cache_profile` switches a
    simulator's counting on and off with them). ``capture``: gets every record handed to the
    producer but the changelogs' (``streams.processing.Output``: scores, alerts, dead letters,
    keyed events), for :mod:`bench.sink_cost`."""
    if not 0 <= warm < len(batches):
        raise ValueError(f"{len(batches)} fetches leave none to measure after {warm} warm ones")
    topics = TopicNames()
    states, identities = _Table("state"), _Table("identity")
    engine: Any = timed if timed is not None else build_engine(config)
    processor = Processor(engine, states.get, topics,
                          max_cached_states=config.state_cache_customers)
    outputs = 0

    async def send(records: Sequence[Any]) -> list[_Delivery]:
        nonlocal outputs
        outputs += sum(1 for r in records if not r.topic.endswith("-changelog"))
        if capture is not None:
            capture.extend(r for r in records if not r.topic.endswith("-changelog"))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return [_Delivery(done, list(range(len(records))))]

    pipeline = ScoringPipeline(
        processor, states, identities, send, lambda tp, first, last: None, topics, KEYED,
        PipelineLimits(partitions=PARTITIONS, max_event_bytes=config.max_event_bytes,
                       max_future_skew_s=config.max_future_skew_s,
                       checkpoint_s=config.checkpoint_interval_ms / 1000,
                       checkpoint_events=config.checkpoint_events))

    clock: dict[str, float] = {}

    async def scenario() -> int:
        handled = 0
        for i, fetch in enumerate(batches):
            if i == warm:
                await pipeline.drain()
                gc.collect()
                handled = 0
                if timed is not None:
                    timed.timing = True
                clock.update(wall=time.perf_counter(), cpu=time.process_time(),
                             outputs=outputs, written=states.written)
                if window is not None:
                    window[0]()
            handled += await pipeline.handle(fetch)
        await pipeline.drain()
        if window is not None:
            window[1]()
        return handled

    gc.collect()
    handled = asyncio.run(scenario())
    wall = time.perf_counter() - clock["wall"]
    cpu = time.process_time() - clock["cpu"]
    return PipelineRun(handled, round(cpu / handled * 1e6, 2), round(handled / wall),
                       len(batches) - warm, outputs - int(clock["outputs"]),
                       states.written - int(clock["written"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch", type=int, default=WorkerConfig().batch_max_events,
                        help="records a fetch (CX_BATCH_MAX_EVENTS's default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warm-events", type=int, default=0,
                        help="events scored before the measured ones (not timed): full states, "
                             "as in the latency phases (e.g. 700000: ~80 events a customer)")
    parser.add_argument("--checkpoint-ms", type=int, default=WorkerConfig().checkpoint_interval_ms,
                        help="CX_CHECKPOINT_INTERVAL_MS (wall time: the run's pace sets the events "
                             "a checkpoint covers)")
    parser.add_argument("--checkpoint-events", type=int,
                        default=WorkerConfig().checkpoint_events,
                        help="CX_CHECKPOINT_EVENTS (a checkpoint after this many events, if the "
                             "interval has not passed first)")
    parser.add_argument("--by-type", action="store_true",
                        help="then one more run timing Engine.process per event type")
    parser.add_argument("--no-huge-pages", action="store_true",
                        help="keep Python's objects on 4 KiB pages (the worker's CX_HUGE_PAGES="
                             "false)")
    args = parser.parse_args(argv)
    if args.events < 1 or args.warm_events < 0:
        parser.error("--events must be >= 1 and --warm-events >= 0")
    # as `cxsignals worker` does, before anything big is allocated
    print("huge pages: off (--no-huge-pages)" if args.no_huge_pages else use_huge_pages())
    tune_collector(WORKER_YOUNG_ALLOCATIONS)
    config = WorkerConfig(checkpoint_interval_ms=args.checkpoint_ms,
                          checkpoint_events=args.checkpoint_events)
    warm, measured = fetches(args.events, args.customers, args.seed, args.batch,
                             args.warm_events)
    batches = warm + measured
    runs = []
    for rep in range(max(1, args.repeats)):
        run = run_once(batches, config, len(warm))
        runs.append(run)
        print(f"repeat {rep}: {run.cpu_us_per_event:.2f} us CPU an event, "
              f"{run.events_per_s:,} events/s; {run.fetches} fetches, {run.outputs:,} outputs, "
              f"{run.state_writes:,} state writes")
    print(f"median {statistics.median(r.cpu_us_per_event for r in runs):.2f} us CPU an event "
          f"({args.events:,} events, {args.customers:,} customers, fetches of {args.batch})")
    if args.by_type:  # one more run, not in the median: the timing costs ~1 us an event
        timed = TimedEngine(build_engine(config))
        run_once(batches, config, len(warm), timed)
        print("\n".join(timed.table()))


if __name__ == "__main__":
    main()
