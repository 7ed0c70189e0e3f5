"""``cxsignals erase --customer ID [--anonymous-id ID ...]``: remove one person everywhere.

In this order (each step waits for the one before; see docs/data-protection.md):

1. **Catch up.** Waits until the worker's group has committed everything published to the
   touchpoints so far (every earlier event of the person was scored first), then until the
   sink's group has committed everything on its topics, so that every event of the person
   published before the erase is in ClickHouse.
2. **Discover.** Looks up in ClickHouse every anonymous id stored together with the customer
   id (``touchpoint_events``): the ids the worker may hold links and states of. The ids given
   with ``--anonymous-id`` are added. The worker is never asked to search its identity table
   (a full scan on its event loop).
3. **Stream.** One erase request per id (:mod:`schemas.erase`): the customer, and each
   anonymous id, goes to the worker's keyed topic, on the partition whose worker holds the
   id's state. That worker deletes the state (a changelog tombstone), the id's own identity
   link and the links to it it still holds in memory, the in-memory indexes, and writes a
   tombstone to the compacted scores topic, which is the confirmation this command waits for.
4. **Sink again.** Waits until the sink has committed everything on its topics up to now, so
   that no row of the person (outputs of events scored just before the requests) is still on
   its way to ClickHouse.
5. **ClickHouse.** Deletes the person's rows from every table (mutations awaited) and
   recomputes the hourly rollup for the hours their events touched (:mod:`sinks.erase`).
6. **Audit.** One ``erase_audit`` row without personal data: request id, times, who ran it,
   counts per place (and an HMAC of each id when ``CX_ERASE_AUDIT_KEY`` is set).

Idempotent: erasing again finds nothing and says so. Exit codes: 0 done; 1 bad arguments; 2
Kafka or ClickHouse unavailable, or no worker / schema for this ``CX_APP_ID``; 3 a step did not
finish in time (nothing after it ran; running the command again is safe).
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import hmac
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson

from cxsignals.settings import Settings
from schemas.erase import (
    ERASE_HEADER,
    ERASE_REQUEST_HEADER,
    ERASE_RESULT_HEADER,
    EraseRequest,
    EraseResult,
)

if TYPE_CHECKING:
    from sinks.erase import ErasedRows

EXIT_USAGE = 1
EXIT_UNAVAILABLE = 2
EXIT_TIMEOUT = 3


class Unavailable(RuntimeError):
    """Kafka or ClickHouse did not answer, or what the erase needs is not there."""


class TimedOut(RuntimeError):
    """A step did not finish within its time limit."""


@dataclass
class StreamResult:
    """What the workers confirmed: one :class:`EraseResult` per request."""

    results: list[EraseResult] = field(default_factory=list)


class Progress:
    """Progress lines on stderr (stdout carries the result)."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, line: str) -> None:
        print(f"erase [{time.monotonic() - self.started:5.1f} s] {line}", file=sys.stderr,
              flush=True)


def _headers(record: Any) -> dict[str, bytes]:
    return {name: value for name, value in record.headers or ()}


def erase_in_stream(settings: Settings, requests: Sequence[EraseRequest], *, timeout_s: float,
                    progress: Progress) -> StreamResult:
    """Send the requests to the keyed topic and wait for one confirmation per request on the
    scores topic."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.errors import KafkaError

    from streams.partitioner import customer_partition

    bootstrap = settings.kafka_bootstrap_servers
    keyed = settings.topics.keyed(settings.app_id)
    scores = settings.topics.scores
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                 enable_auto_commit=False, request_timeout_ms=30_000,
                                 **settings.kafka_security.kafka_python_options())
    except KafkaError as exc:
        raise Unavailable(f"Kafka at {bootstrap} did not answer ({exc})") from exc
    try:
        keyed_partitions = consumer.partitions_for_topic(keyed)
        score_partitions = consumer.partitions_for_topic(scores)
        if not keyed_partitions or not score_partitions:
            raise Unavailable(f"topic {keyed if not keyed_partitions else scores} does not "
                              "exist: no worker has run with this CX_APP_ID (or CX_APP_ID / "
                              "CX_TOPIC_SCORES differ from the worker's)")
        tps = [TopicPartition(scores, p) for p in sorted(score_partitions)]
        consumer.assign(tps)
        for tp, offset in consumer.end_offsets(tps).items():  # confirmations come after these
            consumer.seek(tp, offset)
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                 **settings.kafka_security.kafka_python_options())
        try:
            futures = [producer.send(keyed, key=r.subject.encode(), value=r.to_json(),
                                     headers=[(ERASE_HEADER, b"1")],
                                     partition=customer_partition(r.subject,
                                                                  len(keyed_partitions)))
                       for r in requests]
            producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=30)
        except KafkaError as exc:
            raise Unavailable(f"the erase request could not be written to {keyed} ({exc}); "
                              "the operator needs the worker's write access to it") from exc
        finally:
            producer.close()
        progress(f"{len(requests)} request(s) sent to {keyed}; waiting for the worker")
        request_id = requests[0].request_id.encode()
        waiting = {r.subject.encode() for r in requests}
        result = StreamResult()
        deadline = time.monotonic() + timeout_s
        while waiting:
            if time.monotonic() > deadline:
                raise TimedOut(
                    f"no worker confirmed the erase within {timeout_s:.0f} s ({len(result.results)}"
                    " confirmations so far). Is `cxsignals worker` running with "
                    f"CX_APP_ID={settings.app_id}? The request stays on {keyed} and is handled "
                    "when a worker runs; ClickHouse was not touched: run the erase again later")
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    headers = _headers(record)
                    if (record.value is None and record.key in waiting
                            and headers.get(ERASE_REQUEST_HEADER) == request_id):
                        waiting.discard(record.key)
                        result.results.append(EraseResult.model_validate_json(
                            headers[ERASE_RESULT_HEADER]))
        return result
    except KafkaError as exc:
        raise Unavailable(f"Kafka at {bootstrap} failed during the erase ({exc})") from exc
    finally:
        consumer.close()


def wait_for_group(settings: Settings, group: str, topic_names: Sequence[str], *, role: str,
                   timeout_s: float, progress: Progress, meanwhile: str) -> None:
    """Return once consumer group ``group`` has committed every record on ``topic_names`` up
    to now; at once when the group never committed (no such process ever ran). TimedOut after
    ``timeout_s`` (``meanwhile`` says what was done and not done)."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers,
                                 **settings.kafka_security.kafka_python_options())
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                 group_id=None, enable_auto_commit=False,
                                 **settings.kafka_security.kafka_python_options())
    except KafkaError as exc:
        raise Unavailable(f"Kafka did not answer ({exc})") from exc
    try:
        tps = [TopicPartition(name, p) for name in dict.fromkeys(topic_names)
               for p in sorted(consumer.partitions_for_topic(name) or ())]
        ends = {tp: off for tp, off in consumer.end_offsets(tps).items() if off > 0}
        deadline = time.monotonic() + timeout_s
        while True:
            committed = {tp: meta.offset for tp, meta
                         in admin.list_group_offsets({group: None}).get(group, {}).items()}
            if not committed:
                progress(f"no {role} has committed in group {group}: not waiting for it")
                return
            behind = sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items())
            if not behind:
                progress(f"the {role} (group {group}) has handled everything published so far")
                return
            if time.monotonic() > deadline:
                raise TimedOut(f"the {role} (group {group}) is still {behind} records behind "
                               f"after {timeout_s:.0f} s: is `cxsignals {role}` running? "
                               f"{meanwhile}: run the erase again later")
            time.sleep(0.5)
    except KafkaError as exc:
        raise Unavailable(f"Kafka failed while checking the {role}'s progress ({exc})") from exc
    finally:
        consumer.close()
        admin.close()


def _id_hmacs(settings: Settings, ids: Sequence[str]) -> list[str]:
    if settings.erase_audit_key is None:
        return []
    key = settings.erase_audit_key.get_secret_value().encode()
    return [hmac.new(key, i.encode(), hashlib.sha256).hexdigest() for i in sorted(ids)]


def _audit_sql(database: str, request: EraseRequest, finished_at: datetime, requested_by: str,
               ids: int, hmacs: list[str], places: dict[str, int]) -> str:
    from sinks.erase import quote

    def array(items: list[str]) -> str:
        return "[" + ", ".join(items) + "]"

    return (
        f"INSERT INTO {database}.erase_audit (request_id, requested_at, finished_at, "
        "requested_by, ids, id_hmacs, places, removed, status) SELECT "
        f"{quote(request.request_id)}, toDateTime({int(request.requested_at.timestamp())}), "
        f"toDateTime({int(finished_at.timestamp())}), {quote(requested_by)}, {ids}, "
        f"CAST({array([quote(h) for h in hmacs])} AS Array(String)), "
        f"CAST({array([quote(p) for p in places])} AS Array(String)), "
        f"CAST({array([str(n) for n in places.values()])} AS Array(UInt64)), 'done'")


def _requested_by(args: argparse.Namespace) -> str:
    if args.requested_by:
        return str(args.requested_by)
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return ""


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if not args.customer and not args.anonymous_id:
        print("error: give --customer ID and/or --anonymous-id ID", file=sys.stderr)
        return EXIT_USAGE
    progress = Progress()
    now = datetime.now(timezone.utc)
    request_id = uuid.uuid4().hex
    given = list(dict.fromkeys(args.anonymous_id or ()))
    progress(f"request {request_id}")
    topics = settings.topics
    sink_topics = (topics.touchpoints, *topics.outputs())
    try:
        # Every event published before the erase is scored first (in place, or forwarded to
        # the keyed topic ahead of the request): none of them recreates the state afterwards.
        wait_for_group(settings, settings.app_id, (topics.touchpoints,),
                       role="worker", timeout_s=args.timeout_s, progress=progress,
                       meanwhile="Nothing was erased yet")
        if not args.no_wait_sink:  # every identify event of the person is in ClickHouse
            wait_for_group(settings, settings.sink_config().group_id, sink_topics,
                           role="sink", timeout_s=args.timeout_s, progress=progress,
                           meanwhile="Nothing was erased yet")
        found = (discover_anonymous_ids(settings, args.customer, progress)
                 if args.customer else set())
        anonymous = [*given, *sorted(found - set(given))]
        requests = []
        if args.customer:
            requests.append(EraseRequest(request_id=request_id, subject=args.customer,
                                         kind="customer", requested_at=now))
        requests.extend(EraseRequest(request_id=request_id, subject=a, kind="anonymous",
                                     requested_at=now) for a in anonymous if a != args.customer)
        progress(f"{len(requests)} id(s) to erase: {1 if args.customer else 0} customer, "
                 f"{len(given)} anonymous given, {len(found - set(given))} more found in "
                 "ClickHouse")
        stream = erase_in_stream(settings, requests, timeout_s=args.timeout_s,
                                 progress=progress)
        states = sum(r.state_deleted for r in stream.results)
        links = sum(r.links_deleted for r in stream.results)
        progress(f"worker confirmed: {states} state(s), {links} identity link(s) deleted, "
                 f"{len(stream.results)} score tombstone(s)")
        if not args.no_wait_sink:  # no row of the person still on its way to ClickHouse
            wait_for_group(settings, settings.sink_config().group_id, sink_topics,
                           role="sink", timeout_s=args.timeout_s, progress=progress,
                           meanwhile="The stream part is done, ClickHouse was not touched")
        places: dict[str, int] = {"worker.states": states, "worker.identity_links": links,
                                  "kafka.score_tombstones": len(stream.results)}
        ids = {r.subject for r in requests}
        rows, ids = _erase_clickhouse(settings, args.customer, ids, args.timeout_s, progress)
        places.update({f"clickhouse.{table}": n for table, n in rows.rows.items()})
        places["clickhouse.rollup_hours_recomputed"] = rows.rollup_hours
        finished = datetime.now(timezone.utc)
        all_ids = sorted(ids)
        _write_audit(settings, _audit_sql(settings.clickhouse.database, requests[0], finished,
                                          _requested_by(args), len(all_ids),
                                          _id_hmacs(settings, all_ids), places))
        progress("audit record written to erase_audit")
    except Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except TimedOut as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    summary = {"request_id": request_id, "status": "done", "ids": len(all_ids),
               "anonymous_ids_found": len(found - set(given)), "removed": places}
    if args.format == "json":
        print(orjson.dumps(summary).decode())
    else:
        print(f"erase {request_id} done: " + ", ".join(f"{k} {v}" for k, v in places.items()))
    return 0


def _clickhouse_execute(settings: Settings) -> tuple[Any, Any]:
    from sinks.migrations import _client

    client = _client(settings.clickhouse)
    return client, client.execute


@contextmanager
def _clickhouse_errors(settings: Settings) -> Iterator[None]:
    """Turns ClickHouse failures into :class:`Unavailable` / :class:`TimedOut`."""
    from clickhouse_driver.errors import Error as ClickHouseError

    from sinks.erase import EraseError, MutationTimeout

    params = settings.clickhouse
    try:
        yield
    except MutationTimeout as exc:
        raise TimedOut(str(exc)) from exc
    except EraseError as exc:
        raise Unavailable(str(exc)) from exc
    except (ClickHouseError, OSError) as exc:
        raise Unavailable(f"ClickHouse at {params.host}:{params.port} failed: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc


def discover_anonymous_ids(settings: Settings, customer: str, progress: Progress) -> set[str]:
    """The anonymous ids stored in ClickHouse together with ``customer`` (every event that
    carried both ids taught the worker a link between them). Run once the sink has caught up.
    A link whose event never reached ClickHouse (dead-lettered by the sink, or its rows
    dropped by retention) is not found: ``--anonymous-id`` names such ids."""
    from sinks.erase import ClickHouseEraser

    with _clickhouse_errors(settings):
        client, execute = _clickhouse_execute(settings)
        try:
            eraser = ClickHouseEraser(execute, settings.clickhouse.database)
            eraser.check_schema()
            found = eraser.linked_anonymous_ids(customer)
        finally:
            client.disconnect()
    progress(f"ClickHouse: {len(found)} anonymous id(s) stored with the customer")
    return found


def _erase_clickhouse(settings: Settings, customer: str | None, ids: set[str],
                      timeout_s: float, progress: Progress) -> tuple[ErasedRows, set[str]]:
    """Erase ``ids`` (and the anonymous ids stored with the customer, looked up again: one
    that appeared after the discovery is erased here, and reported) from ClickHouse; returns
    the rows removed and every id erased."""
    from sinks.erase import ClickHouseEraser

    params = settings.clickhouse
    with _clickhouse_errors(settings):
        client, execute = _clickhouse_execute(settings)
        try:
            eraser = ClickHouseEraser(execute, params.database, progress=progress,
                                      timeout_s=timeout_s)
            eraser.check_schema()
            if customer:
                late = eraser.linked_anonymous_ids(customer) - ids
                if late:
                    progress(f"warning: {len(late)} more anonymous id(s) appeared with the "
                             "customer during the erase: their rows are erased here, their "
                             "worker state and link are not: run the erase again")
                ids = ids | late
            progress(f"ClickHouse {params.host}:{params.port}/{params.database}: erasing "
                     f"{len(ids)} id(s)")
            return eraser.erase(ids), ids
        finally:
            client.disconnect()


def _write_audit(settings: Settings, sql: str) -> None:
    from clickhouse_driver.errors import Error as ClickHouseError

    try:
        client, execute = _clickhouse_execute(settings)
        try:
            execute(sql)
        finally:
            client.disconnect()
    except (ClickHouseError, OSError) as exc:
        raise Unavailable(f"the audit record could not be written ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:300]})") from exc


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "erase",
        help="erase one person everywhere: worker state, links, latest score, ClickHouse rows",
        description="Erase a customer (and the anonymous ids stored with it in ClickHouse) "
        "and/or anonymous ids: through the stream (the owning worker deletes state and links "
        "and tombstones the latest score), then every ClickHouse row, then an audit record "
        "without personal data. Idempotent. Exit 0 done, 1 bad arguments, 2 Kafka/ClickHouse "
        "unavailable, 3 a step timed out (run again).",
        epilog="examples: cxsignals erase --customer c-42\n"
        "          cxsignals erase --customer c-42 --anonymous-id a-9 --format json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--customer", help="customer id to erase (with the anonymous ids "
                        "ClickHouse holds together with it)")
    parser.add_argument("--anonymous-id", action="append", metavar="ID",
                        help="anonymous id to erase (repeatable): also the way to name linked "
                        "ids ClickHouse does not know (an identify event dead-lettered by the "
                        "sink, or dropped by retention)")
    parser.add_argument("--requested-by", help="who asked (default: the login name)")
    parser.add_argument("--timeout-s", type=float, default=120.0,
                        help="limit for each step (worker, sink, each mutation); default 120")
    parser.add_argument("--no-wait-sink", action="store_true",
                        help="do not wait for the sink to catch up (rows still on their way "
                        "to ClickHouse would escape the erase)")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(func=_run)
