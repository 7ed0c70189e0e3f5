"""``cxsignals tail TOPIC``: print a topic's messages (alerts, scores) as they arrive."""

from __future__ import annotations

import argparse
import sys

from cxsignals.settings import Settings

ALIASES = {
    "marketing": "topic_alerts_marketing",
    "support": "topic_alerts_support",
    "scores": "topic_scores",
    "touchpoints": "topic_touchpoints",
    "dlq": "topic_dlq",
}


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    topic = getattr(settings, ALIASES[args.topic]) if args.topic in ALIASES else args.topic
    if settings.kafka_security.protocol != "PLAINTEXT":
        # kafka-python's consumer would wait for ever on a refused password or TLS handshake.
        from streams.faust_internals import connection_problem_now

        problem = connection_problem_now(settings.kafka_bootstrap_servers,
                                         settings.kafka_security)
        if problem is not None:
            print(f"error: cannot use Kafka at {settings.kafka_bootstrap_servers}: {problem}",
                  file=sys.stderr)
            return 2
    try:
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            auto_offset_reset="earliest" if args.from_beginning else "latest",
            enable_auto_commit=False,
            group_id=None,
            consumer_timeout_ms=int(args.idle_timeout_s * 1000) if args.idle_timeout_s else None,
            **settings.kafka_security.kafka_python_options(),
        )
    except KafkaError as exc:
        from cxsignals.kafka_problems import explain

        print(f"error: Kafka at {settings.kafka_bootstrap_servers} did not answer "
              f"({explain(settings.kafka_bootstrap_servers, settings.kafka_security, exc)})",
              file=sys.stderr)
        return 2
    # A topic this principal may not read would otherwise look like an empty one.
    if topic not in consumer.topics():
        from cxsignals.kafka_problems import unreadable_topic

        consumer.close()
        print(f"error: {unreadable_topic(topic, settings.kafka_security)}", file=sys.stderr)
        return 2
    shown = 0
    try:
        for record in consumer:
            key = record.key.decode(errors="replace") if record.key else ""
            value = record.value.decode(errors="replace") if record.value else ""
            print(f"{key}\t{value}" if args.keys else value, flush=True)
            shown += 1
            if args.limit and shown >= args.limit:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "tail",
        help="print messages of a topic (alerts, scores, ...) as they arrive",
        description="Print the values of a topic, one per line. TOPIC is a topic name or one "
        f"of: {', '.join(ALIASES)}.",
        epilog="examples: cxsignals tail marketing --from-beginning --limit 5 | jq .rule\n"
        "          cxsignals tail support --keys",
    )
    parser.add_argument("topic")
    parser.add_argument("--from-beginning", action="store_true")
    parser.add_argument("--limit", type=int, default=0, help="stop after N messages")
    parser.add_argument("--keys", action="store_true", help="print KEY<TAB>VALUE")
    parser.add_argument("--idle-timeout-s", type=float, default=0.0,
                        help="stop when nothing arrived for this long (default: never)")
    parser.set_defaults(func=_run)
