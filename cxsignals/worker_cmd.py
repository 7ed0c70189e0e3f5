"""``cxsignals worker``: score touchpoints with one Faust worker, and serve its /metrics."""

from __future__ import annotations

import argparse
import gc
import logging

from cxsignals.settings import Settings


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from faust.worker import Worker as FaustWorker
    from prometheus_client import start_http_server

    from streams.app import create_worker
    from streams.faust_internals import UnsupportedVersion

    try:
        worker = create_worker(settings.worker_config())
    except UnsupportedVersion as exc:
        logging.getLogger("cxsignals").error("%s", exc)
        return 2
    # Per-event work allocates many short-lived objects; the default collector thresholds spend
    # ~15 % of the engine's time in gen-0 collections. Freeze what start-up allocated.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=args.metrics_host)
    faust_worker = FaustWorker(
        worker.app,
        loglevel=args.loglevel or settings.log_level,
        quiet=True,
        override_logging=True,
    )
    # Faust's terminal spinner sets the root logger to DEBUG whenever the level is WARN or above,
    # so that every log call spins it: aiokafka and Faust then build a LogRecord for every debug
    # line of every produced record (several us each) only for the handler to drop it.
    faust_worker.spinner = None
    logging.getLogger("cxsignals").info(
        "worker for %s, metrics on :%s", settings.kafka_bootstrap_servers, settings.metrics_port
    )
    faust_worker.execute_from_commandline()  # returns only via SystemExit
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "worker",
        help="run a scoring worker (Faust): scores, alerts, score updates",
        description=(
            "Consume cx.touchpoints in whole fetches, keep per-customer scores, publish alerts, "
            "score updates and dead letters. Scales by partitions: start more workers with "
            "the same CX_APP_ID. ClickHouse is written by `cxsignals sink`, a separate process. "
            "Stops cleanly on Ctrl-C."
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
