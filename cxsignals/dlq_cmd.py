"""``cxsignals dlq show|replay``: inspect dead letters and re-publish them after an upstream fix.

Both read the dead-letter topic with a group-less consumer (nothing is committed, so reading has
no side effect) from the start offsets up to the end offsets taken when the command starts, then
stop: messages dead-lettered while the command runs (e.g. a replayed event that is still invalid)
are not read again, and a read that cannot finish within ``--timeout-s`` stops with a warning.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from cxsignals.settings import Settings
from streams.core.deadletter import (
    HEADER_PREFIX,
    DeadLetterInfo,
    format_received_at,
    original_value,
    parse_dead_letter_headers,
    value_omitted,
)
from streams.core.validation import ErrorCode

EPILOG_SHOW = """\
Prints each dead letter with its reason: error code and message, the source topic, partition
and offset, the receive time, the key and the start of the value. By default the most recent
N (--limit) are shown; --from-beginning shows the oldest N instead.

examples:
  cxsignals dlq show
  cxsignals dlq show --limit 100 --from-beginning
  cxsignals dlq show --code schema_violation

exit codes: 0 done, 2 Kafka unreachable or the topic does not exist
"""

EPILOG_REPLAY = """\
Re-publishes dead letters to the touchpoints topic with key and value byte-for-byte unchanged
(the pipeline's cx-* headers are dropped, other headers kept), oldest first, for after an
upstream fix. Nothing records what was replayed: replaying twice publishes twice, which is safe
because events are deduplicated by event_id. A replayed event that is still invalid returns to
the dead-letter topic with a new offset.

examples:
  cxsignals dlq replay --code schema_violation
  cxsignals dlq replay --limit 10 --dry-run

exit codes: 0 all re-published, 1 some sends failed, 2 Kafka unreachable or the topic missing
"""

# Dead letters can exceed the 1 MiB event limit (too_large ones); fetch and send up to this.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
POLL_MS = 500
PREVIEW_BYTES = 160
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

log = logging.getLogger(__name__)


class DlqError(Exception):
    """A condition the command reports in one line with exit code 2 (no traceback)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of the dead-letter topic, with its headers already parsed."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    info: DeadLetterInfo


@dataclass(frozen=True, slots=True)
class ReplayResult:
    read: int
    sent: int
    failed: int
    first_error: str | None


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "dlq",
        help="show or replay dead letters (events the pipeline rejected)",
        description="Inspect the dead-letter topic and re-publish its messages.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG_SHOW + "\n" + EPILOG_REPLAY,
    )
    actions = parser.add_subparsers(dest="dlq_action", metavar="ACTION", required=True)

    show = actions.add_parser(
        "show",
        help="print dead letters with their reasons",
        epilog=EPILOG_SHOW,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument(
        "--limit", type=_positive_int, default=20, metavar="N", help="at most N (default 20)"
    )
    show.add_argument(
        "--from-beginning", action="store_true", help="the oldest N instead of the newest N"
    )
    _add_common(show)
    show.set_defaults(func=run_show)

    replay = actions.add_parser(
        "replay",
        help="re-publish dead letters to the touchpoints topic",
        epilog=EPILOG_REPLAY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument(
        "--limit", type=_positive_int, default=None, metavar="N", help="at most N (default all)"
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="count what would be re-published, send nothing"
    )
    _add_common(replay)
    replay.set_defaults(func=run_replay)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--code",
        choices=[code.value for code in ErrorCode],
        default=None,
        help="only dead letters with this error code",
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=30.0,
        metavar="S",
        help="give up reading or sending after S seconds (default 30)",
    )


def _positive_int(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return number


def run_show(args: argparse.Namespace, settings: Settings) -> int:
    try:
        letters, total = show_dead_letters(
            settings,
            limit=args.limit,
            from_beginning=args.from_beginning,
            code=args.code,
            timeout_s=args.timeout_s,
        )
    except DlqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for letter in letters:
        print(render_dead_letter(letter, topic=settings.topic_dlq))
    which = "oldest" if args.from_beginning else "newest"
    matching = f" with code {args.code}" if args.code else ""
    print(
        f"shown: the {which} {len(letters)} dead letters{matching}; "
        f"{total} in {settings.topic_dlq} in all",
        file=sys.stderr,
    )
    return 0


def run_replay(args: argparse.Namespace, settings: Settings) -> int:
    try:
        result = replay_dead_letters(
            settings,
            limit=args.limit,
            code=args.code,
            dry_run=args.dry_run,
            timeout_s=args.timeout_s,
        )
    except DlqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    target = settings.topic_touchpoints
    if args.dry_run:
        print(f"dry run: {result.read} dead letters would be re-published to {target}")
        return 0
    print(f"re-published {result.sent} of {result.read} dead letters to {target}")
    if result.failed:
        print(f"error: {result.failed} sends failed, first: {result.first_error}", file=sys.stderr)
        return 1
    return 0


def show_dead_letters(
    settings: Settings,
    *,
    limit: int,
    from_beginning: bool = False,
    code: str | None = None,
    timeout_s: float = 30.0,
) -> tuple[list[DeadLetter], int]:
    """The newest (or oldest) ``limit`` dead letters, oldest first, and the topic's total count.

    With ``code`` the whole topic is scanned and only matching letters count; without it each
    partition is read from at most ``limit`` messages before its end (or after its start).
    Raises :class:`DlqError` when Kafka is unreachable or the topic does not exist.
    """
    with _consumer(settings, timeout_s=timeout_s) as consumer:
        begin, end = _offsets(consumer, settings.topic_dlq)
        total = sum(end[tp] - begin[tp] for tp in end)
        if code is None and not from_beginning:
            start = {tp: max(begin[tp], end[tp] - limit) for tp in end}
        else:
            start = dict(begin)
        per_partition_cap = limit if from_beginning else None
        letters = list(
            _read(
                consumer,
                start,
                end,
                timeout_s=timeout_s,
                per_partition=per_partition_cap,
                code=code,
            )
        )
    letters.sort(key=lambda letter: (letter.timestamp_ms, letter.partition, letter.offset))
    return (letters[:limit] if from_beginning else letters[-limit:]), total


def replay_dead_letters(
    settings: Settings,
    *,
    limit: int | None = None,
    code: str | None = None,
    dry_run: bool = False,
    timeout_s: float = 30.0,
) -> ReplayResult:
    """Re-publish dead letters to ``settings.topic_touchpoints``, oldest first per partition.

    Keys and values are sent byte-for-byte; headers starting with ``cx-`` are dropped. Waits for
    every send to be acknowledged (acks=all) or to fail before returning, bounded by
    ``timeout_s``. Raises :class:`DlqError` when Kafka is unreachable or the topic is missing.
    """
    from kafka.errors import KafkaError
    from tqdm import tqdm

    with _consumer(settings, timeout_s=timeout_s) as consumer:
        begin, end = _offsets(consumer, settings.topic_dlq)
        upper_bound = sum(end[tp] - begin[tp] for tp in end)
        if limit is not None:
            upper_bound = min(upper_bound, limit)
        letters = _read(consumer, dict(begin), end, timeout_s=timeout_s, code=code)
        if dry_run:
            read = sum(1 for _ in _take(letters, limit))
            return ReplayResult(read=read, sent=0, failed=0, first_error=None)
        with _producer(settings, timeout_s=timeout_s) as producer:
            outcome = _SendOutcome()
            read = 0
            with tqdm(total=upper_bound, unit="msg", desc="replay", disable=None) as progress:
                for letter in _take(letters, limit):
                    read += 1
                    # Kafka allows a header without a value; the client does not send one.
                    kept = [
                        (name, value)
                        for name, value in letter.headers
                        if not name.startswith(HEADER_PREFIX) and isinstance(value, bytes)
                    ]
                    omitted = value_omitted(letter.headers)
                    if omitted is not None:  # never send a tombstone in its place
                        outcome.failure(ValueError(f"value not kept: {omitted}"))
                        progress.update(1)
                        continue
                    try:
                        future = producer.send(
                            settings.topic_touchpoints,
                            key=letter.key,
                            value=letter.value,
                            headers=kept or None,
                        )
                    # ValueError: a message with neither key nor value, which cannot be re-sent.
                    except (KafkaError, ValueError) as exc:
                        outcome.failure(exc)
                    else:
                        future.add_callback(outcome.success)
                        future.add_errback(outcome.failure)
                    progress.update(1)
            # Whatever is still unacknowledged after the flush is counted as failed below.
            with suppress(KafkaError):
                producer.flush(timeout=timeout_s)
    unsettled = read - outcome.sent - outcome.failed
    failed = outcome.failed + unsettled
    first_error = outcome.first_error or (
        f"{unsettled} sends unacknowledged after {timeout_s:g} s" if unsettled else None
    )
    return ReplayResult(read=read, sent=outcome.sent, failed=failed, first_error=first_error)


def render_dead_letter(letter: DeadLetter, *, topic: str) -> str:
    """Three lines: where it is and came from, why it was rejected, and what it holds."""
    info = letter.info
    received = format_received_at(info.received_at) if info.received_at else "?"
    source = (
        f"{info.source_topic or '?'}/{_or_q(info.source_partition)}@{_or_q(info.source_offset)}"
    )
    value = letter.value or b""
    preview = _printable(value[:PREVIEW_BYTES])
    if len(value) > PREVIEW_BYTES:
        preview += " ..."
    key = "-" if letter.key is None else _printable(letter.key[:PREVIEW_BYTES])
    return (
        f"{topic}/{letter.partition}@{letter.offset}  received {received}  from {source}\n"
        f"  {info.code or '?'}: {info.message or '(no message)'}\n"
        f"  key {key}  value ({len(value)} bytes) {preview}"
    )


class _SendOutcome:
    """Counts acknowledgements and failures reported by the producer's I/O thread."""

    def __init__(self) -> None:
        self.sent = 0
        self.failed = 0
        self.first_error: str | None = None
        self._lock = threading.Lock()

    def success(self, _metadata: Any) -> None:
        with self._lock:
            self.sent += 1

    def failure(self, exc: BaseException) -> None:
        with self._lock:
            self.failed += 1
            if self.first_error is None:
                self.first_error = f"{type(exc).__name__}: {exc}"


def _take(letters: Iterator[DeadLetter], limit: int | None) -> Iterator[DeadLetter]:
    for count, letter in enumerate(letters):
        if limit is not None and count >= limit:
            return
        yield letter


def _bootstrap(settings: Settings) -> list[str]:
    return [host.strip() for host in settings.kafka_bootstrap_servers.split(",") if host.strip()]


def _client_config(cls: Any, timeout_s: float, **config: Any) -> dict[str, Any]:
    """Bounded timeouts for either kafka-python 2.x or 3.x (3.x added bootstrap_timeout_ms)."""
    timeout_ms = max(1000, int(timeout_s * 1000))
    bounded = {
        "bootstrap_timeout_ms": min(timeout_ms, 10_000),
        "request_timeout_ms": min(timeout_ms, 30_000) + POLL_MS,
        "api_version_auto_timeout_ms": min(timeout_ms, 10_000),
        "max_block_ms": timeout_ms,
    }
    known = cls.DEFAULT_CONFIG
    return {**{k: v for k, v in bounded.items() if k in known}, **config}


@contextmanager
def _consumer(settings: Settings, *, timeout_s: float) -> Iterator[Any]:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    # kafka-python logs every failed connection attempt; the command reports one clear line.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        consumer = KafkaConsumer(
            **_client_config(
                KafkaConsumer,
                timeout_s,
                bootstrap_servers=_bootstrap(settings),
                client_id="cxsignals-dlq",
                group_id=None,
                enable_auto_commit=False,
                allow_auto_create_topics=False,
                max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
                fetch_max_bytes=MAX_MESSAGE_BYTES,
                **settings.kafka_security.kafka_python_options(),
            )
        )
    except KafkaError as exc:
        from cxsignals.kafka_problems import explain

        reason = explain(settings.kafka_bootstrap_servers, settings.kafka_security, exc)
        raise DlqError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {reason}"
                       ) from None
    try:
        yield consumer
    except KafkaError as exc:
        raise DlqError(f"Kafka error while reading {settings.topic_dlq}: {exc}") from None
    finally:
        consumer.close(autocommit=False)


@contextmanager
def _producer(settings: Settings, *, timeout_s: float) -> Iterator[Any]:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    try:
        producer = KafkaProducer(
            **_client_config(
                KafkaProducer,
                timeout_s,
                bootstrap_servers=_bootstrap(settings),
                client_id="cxsignals-dlq-replay",
                acks="all",
                linger_ms=20,
                max_request_size=MAX_MESSAGE_BYTES,
                **settings.kafka_security.kafka_python_options(),
            )
        )
    except KafkaError as exc:
        from cxsignals.kafka_problems import explain

        reason = explain(settings.kafka_bootstrap_servers, settings.kafka_security, exc)
        raise DlqError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {reason}"
                       ) from None
    try:
        yield producer
    except KafkaError as exc:
        raise DlqError(f"Kafka error while replaying: {exc}") from None
    finally:
        producer.close(timeout=timeout_s)


def _offsets(consumer: Any, topic: str) -> tuple[dict[Any, int], dict[Any, int]]:
    """Assign every partition of ``topic``; return its beginning and end offsets."""
    from kafka import TopicPartition

    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise DlqError(f"topic {topic} does not exist (create it with `cxsignals topics create`)")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    return consumer.beginning_offsets(tps), consumer.end_offsets(tps)


def _read(
    consumer: Any,
    start: dict[Any, int],
    end: dict[Any, int],
    *,
    timeout_s: float,
    per_partition: int | None = None,
    code: str | None = None,
) -> Iterator[DeadLetter]:
    """Dead letters from ``start`` up to (not including) ``end`` per partition, in offset order
    per partition; stops early after ``per_partition`` matches in a partition, and at the
    deadline (with a warning on stderr) if the broker does not deliver everything in time."""
    pending = {tp for tp in end if start[tp] < end[tp]}
    if not pending:
        return
    consumer.assign(sorted(pending, key=lambda tp: tp.partition))
    for tp in pending:
        consumer.seek(tp, start[tp])
    matched = dict.fromkeys(pending, 0)
    deadline = time.monotonic() + timeout_s
    while pending:
        if time.monotonic() > deadline:
            print(
                f"warning: stopped after {timeout_s:g} s with {len(pending)} partitions unread",
                file=sys.stderr,
            )
            return
        batches = consumer.poll(timeout_ms=POLL_MS)
        for tp, records in batches.items():
            if tp not in pending:
                continue
            for record in records:
                if record.offset >= end[tp]:
                    break
                letter = _dead_letter(record)
                if code is not None and letter.info.code != code:
                    continue
                matched[tp] += 1
                yield letter
                if per_partition is not None and matched[tp] >= per_partition:
                    pending.discard(tp)
                    consumer.pause(tp)
                    break
        # Position, not the last record, decides: compaction and transaction markers leave
        # offsets without a record, and the end offset may never be a record's offset.
        for tp in list(pending):
            if consumer.position(tp) >= end[tp]:
                pending.discard(tp)


def _dead_letter(record: Any) -> DeadLetter:
    headers = tuple((name, value) for name, value in (record.headers or ()))
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=record.key,
        value=original_value(record.value, headers),
        headers=headers,
        info=parse_dead_letter_headers(headers),
    )


def _printable(raw: bytes) -> str:
    text = raw.decode("utf-8", "backslashreplace")
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _or_q(number: int | None) -> str:
    return "?" if number is None else str(number)
