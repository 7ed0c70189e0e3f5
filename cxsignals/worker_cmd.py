"""``cxsignals worker``: run one Faust worker with every agent, and its /metrics endpoint."""

from __future__ import annotations

import argparse
import gc
import logging

from cxsignals.settings import Settings


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from faust.worker import Worker
    from prometheus_client import start_http_server

    import streams.agents  # noqa: F401  (registers every agent, table and timer)
    from streams.app import app

    # Per-event work allocates many short-lived objects; the default collector thresholds spend
    # ~15 % of the engine's time in gen-0 collections. Freeze what start-up allocated.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=args.metrics_host)
    worker = Worker(
        app,
        loglevel=args.loglevel or settings.log_level,
        quiet=True,
        override_logging=True,
    )
    # Faust's terminal spinner sets the root logger to DEBUG whenever the level is WARN or above,
    # so that every log call spins it: aiokafka and Faust then build a LogRecord for every debug
    # line of every produced record (several us each) only for the handler to drop it.
    worker.spinner = None
    logging.getLogger("cxsignals").info(
        "worker for %s, metrics on :%s", settings.kafka_bootstrap_servers, settings.metrics_port
    )
    worker.execute_from_commandline()  # returns only via SystemExit
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "worker",
        help="run a stream-processing worker (Faust)",
        description=(
            "Consume cx.touchpoints, keep per-customer scores, publish alerts and scores, and "
            "write events, scores, alerts and dead letters to ClickHouse. Stops cleanly on Ctrl-C."
        ),
        epilog=(
            "example: CX_METRICS_PORT=9465 CX_STATE_DIR=/tmp/w2 cxsignals worker  "
            "(a second worker on the same host)"
        ),
    )
    parser.add_argument(
        "--loglevel", default=None, help="debug, info, warning (default: CX_LOG_LEVEL)"
    )
    parser.add_argument("--metrics-host", default="127.0.0.1", help="bind address of /metrics")
    parser.set_defaults(func=_run)
