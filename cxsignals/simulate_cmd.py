"""``cxsignals simulate``: publish realistic, seeded customer-journey traffic to Kafka."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import BinaryIO

from cxsignals.settings import Settings
from cxsignals.simulator.journeys import SimConfig, SimMessage, generate
from cxsignals.simulator.publisher import BrokerUnavailable, TokenBucket, publish
from cxsignals.simulator.responder_thread import start_responder
from cxsignals.simulator.response import ResponseModel, cart_experiment

DEFAULT_RATE_PER_S = 50.0
EXIT_BROKER_UNAVAILABLE = 2

EPILOG = """\
examples:
  cxsignals simulate                                  # 200 customers, 50 events/s until Ctrl-C
  cxsignals simulate --events 10000 --rate 0          # as fast as possible, then stop
  cxsignals simulate --customers 50000 --events 500000 --rate 0 --bad-share 0
  cxsignals simulate --start 2026-11-01T00:00:00Z --event-gap-s 5 --events 100000 --rate 0
                                                      # a backfill: event time runs 5 s per event
  cxsignals simulate --dry-run --events 1000 | cxsignals validate -

Same --seed and same --start (and other options) give byte-identical messages; without --start
the start is now, rounded down to the second. Event time advances by --event-gap-s per message
on average (default: 1/rate, so event time follows wall time). The validator rejects events more
than 24 h in the future, so a fast event clock should start in the past.
"""


def _aware(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from exc
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"--start needs a zone, e.g. {text}Z")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _reaction(text: str) -> tuple[str, float]:
    rule, _, share = text.partition("=")
    try:
        value = float(share)
    except ValueError:
        value = -1.0
    if not rule or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected RULE=R with R within 0-1, got {text!r}")
    return rule, value


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0-1, got {text}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "simulate",
        help="publish simulated customer journeys (with friction and bad messages) to Kafka",
        description=(
            "Customers with personas walk the journey stages over channels and touchpoints;\n"
            "friction is injected, survey answers follow experience, and a share of\n"
            "deliberately bad messages exercises the dead-letter topic."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--customers", type=int, default=200, help="simulated customers (200)")
    parser.add_argument(
        "--rate",
        type=_seconds,
        default=None,
        help="events per second, 0 = unthrottled (default 50; unthrottled with --dry-run)",
    )
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--events", type=_count, help="stop after N messages")
    stop.add_argument("--duration-s", type=_seconds, help="stop after this many wall seconds")
    parser.add_argument("--seed", type=int, default=42, help="random seed (42)")
    parser.add_argument("--start", type=_aware, help="event time of the first message, ISO-8601")
    parser.add_argument(
        "--event-gap-s",
        type=_seconds,
        help="mean event-time gap between messages (default 1/rate, or 0.02 s unthrottled)",
    )
    parser.add_argument(
        "--bad-share", type=_share, default=0.01, help="share of deliberately bad messages (0.01)"
    )
    parser.add_argument("--topic", help="target topic (default: settings.topic_touchpoints)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="write JSON lines to stdout instead of Kafka (keys are not written)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    loop = parser.add_argument_group(
        "closing the loop (docs/alerts.md)",
        "Simulated customers react to the alerts actually sent (read from the marketing alert "
        "topic; control alerts never reach it).",
    )
    loop.add_argument(
        "--respond", action="append", type=_reaction, default=[], metavar="RULE=R",
        help="reaction probability R of a customer who got a RULE alert and would not have "
        "bought anyway: true uplift = R x (1 - baseline), e.g. cart_recovery=0.25",
    )
    loop.add_argument("--respond-idle-s", type=_seconds, default=15.0,
                      help="after publishing, keep reacting until no alert came for this long "
                      "(15)")
    loop.add_argument("--respond-max-s", type=_seconds, default=600.0,
                      help="... but at most this long (600)")
    loop.add_argument(
        "--scenario", choices=("journeys", "cart-experiment"), default="journeys",
        help="journeys (default) or cart-experiment: one abandoned cart per customer, starting "
        "at --start (default 3 days ago, 10:00 UTC), bought anyway with --baseline",
    )
    loop.add_argument("--baseline", type=_share, default=0.2,
                      help="cart-experiment: share of customers who buy anyway (0.2)")
    loop.add_argument("--customer-prefix", default=None,
                      help="cart-experiment customer ids (default x-); only customers with this "
                      "prefix react (journeys: c-)")
    loop.add_argument("--segment", default="experiment", help="cart-experiment segment")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> tuple[SimConfig, float | None]:
    """The generator config and the publish rate (None = unthrottled) the options ask for."""
    rate = args.rate
    if rate is None:
        rate = 0.0 if args.dry_run else DEFAULT_RATE_PER_S
    gap_s = args.event_gap_s
    if gap_s is None:
        gap_s = 1.0 / rate if rate > 0 else 0.02
    start = args.start or datetime.now(timezone.utc).replace(microsecond=0)
    config = SimConfig(
        customers=args.customers,
        seed=args.seed,
        start=start,
        total_events=args.events,
        event_gap_s=gap_s,
        bad_share=args.bad_share,
    )
    return config, (rate or None)


def until(messages: Iterable[SimMessage], deadline: float) -> Iterator[SimMessage]:
    """``messages`` until ``time.monotonic()`` passes ``deadline``."""
    for i, message in enumerate(messages):
        # The clock is read every 64 messages only: cheap at 100k msg/s, precise enough at 50/s.
        if i % 64 == 0 and time.monotonic() >= deadline:
            return
        yield message


def write_lines(messages: Iterable[SimMessage], out: BinaryIO, rate_per_s: float | None) -> int:
    """Write one value per line to the binary stream ``out``; return the number written."""
    write = out.write
    bucket = TokenBucket(rate_per_s) if rate_per_s else None
    count = 0
    for message in messages:
        if bucket is not None:
            bucket.take()
        write(message.value + b"\n")
        count += 1
    return count


def _warn_future(config: SimConfig, rate: float | None) -> None:
    now = datetime.now(timezone.utc)
    horizon = now + timedelta(hours=24)
    if config.total_events is not None:
        last = config.start + timedelta(seconds=config.total_events * config.event_gap_s)
        if last > horizon:
            print(
                f"warning: event time will reach {last:%Y-%m-%d %H:%M}Z, more than 24 h ahead: "
                "the pipeline dead-letters such events; start earlier (--start)",
                file=sys.stderr,
            )
    elif rate and config.event_gap_s * rate > 1.0 and config.start > now - timedelta(hours=1):
        print(
            "warning: event time runs faster than wall time and will pass now + 24 h after "
            f"{24 / (config.event_gap_s * rate - 1):.1f} h of wall time",
            file=sys.stderr,
        )


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        config, rate = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    messages: Iterable[SimMessage]
    prefix = args.customer_prefix or ("x-" if args.scenario == "cart-experiment" else "c-")
    if args.scenario == "cart-experiment":
        start = args.start or (datetime.now(timezone.utc) - timedelta(days=3)).replace(
            hour=10, minute=0, second=0, microsecond=0)
        messages = cart_experiment(args.customers, start, baseline=args.baseline,
                                   seed=args.seed, prefix=prefix, segment=args.segment)
    else:
        _warn_future(config, rate)
        messages = generate(config)
    if args.duration_s is not None:
        messages = until(messages, time.monotonic() + args.duration_s)

    if args.dry_run:
        out = sys.stdout.buffer
        try:
            write_lines(messages, out, rate)
            out.flush()
        except BrokenPipeError:  # e.g. piped into `head`: the reader has what it wanted
            sys.stderr.close()
        except KeyboardInterrupt:
            out.flush()
        return 0

    topic = args.topic or settings.topic_touchpoints
    progress = not args.no_progress and sys.stderr.isatty()
    responder = None
    if args.respond:
        live = args.scenario == "journeys" and args.start is None
        model = ResponseModel(dict(args.respond), seed=args.seed, customer_prefix=prefix,
                              # live traffic: react within minutes, on the wall clock
                              delay_s=(60.0, 600.0) if live else (3600.0, 20 * 3600.0))
        try:
            responder = start_responder(model, settings, topic)
        except BrokerUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BROKER_UNAVAILABLE
    try:
        stats = publish(
            messages,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            topic=topic,
            rate_per_s=rate,
            progress=progress,
            total=config.total_events,
            security=settings.kafka_security,
        )
    except BrokerUnavailable as exc:
        if responder is not None:
            responder.finish(0.0, 0.0)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BROKER_UNAVAILABLE
    if responder is not None:
        # After Ctrl-C: stop now; else react to the alerts the last events cause, until idle.
        linger_s = 0.0 if stats.interrupted else args.respond_max_s
        responder.finish(args.respond_idle_s, linger_s)
    print(f"{topic}: {stats.summary()}", file=sys.stderr)
    if responder is not None:
        print(f"responder: {responder.summary()}", file=sys.stderr)
    return 1 if stats.failed else 0
