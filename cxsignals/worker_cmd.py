"""``cxsignals worker``: score touchpoints with one Faust worker, and serve its /healthz and
/metrics.

Start-up never gives up on the broker: while Kafka cannot be reached the worker logs one line
per attempt (backed off 1, 2, 4 ... 10 s), /healthz answers 503 ``{"kafka": reason}``, and it
starts once the broker answers. SIGTERM or SIGINT stop it gracefully: no further fetch, the open
batch finished and made durable, exactly the processed offsets committed, the group left; it
exits within ~10 s (what is not durable by then is not committed and is processed again by the
next owner). The last line says how many messages it consumed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import threading
from typing import Any

from cxsignals.gc_tuning import WORKER_YOUNG_ALLOCATIONS, tune_collector
from cxsignals.settings import Settings

log = logging.getLogger("cxsignals")

LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
# A stop exits by then at the latest (the open batch gets 4 s to be durable, 2 s to commit).
STOP_DEADLINE_S = 8.5
_stop_timer: threading.Timer | None = None


def _wait_for_kafka(settings: Settings, health: Any) -> bool:
    """Block until the broker answers; False when SIGTERM/SIGINT came first."""
    from streams.faust_internals import wait_for_broker

    async def main() -> bool:
        task = asyncio.ensure_future(wait_for_broker(
            settings.kafka_bootstrap_servers, waiting, security=settings.kafka_security))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            return False
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return True

    def waiting(reason: str, attempt: int, retry_in_s: float) -> None:
        health.problem("kafka", reason)
        log.warning("waiting for Kafka at %s: %s (attempt %d, next in %.0f s)",
                    settings.kafka_bootstrap_servers, reason, attempt, retry_in_s)

    ok = asyncio.run(main())
    if ok:
        health.clear("kafka")
    return ok


def _arm_stop_deadline(deadline_s: float = STOP_DEADLINE_S) -> None:
    """After SIGTERM/SIGINT, exit at the latest ``deadline_s`` later. A stop normally takes
    ~1 s; with the broker unreachable Faust's producer flush and group leave would wait for it
    forever. Whatever was not committed by then is processed again by the next owner."""
    def expire() -> None:
        log.error("stop did not finish within %.1f s (is Kafka reachable?): exiting now; "
                  "uncommitted messages will be processed again. stopped: messages consumed %s",
                  deadline_s, json.dumps(_consumed()))
        logging.shutdown()
        os._exit(1)

    global _stop_timer
    if _stop_timer is None:
        _stop_timer = threading.Timer(deadline_s, expire)
        _stop_timer.daemon = True
        _stop_timer.start()


def _consumed() -> dict[str, int]:
    from streams import metrics

    return {sample.labels["topic"]: int(sample.value)
            for metric in metrics.messages_consumed.collect() for sample in metric.samples
            if sample.name.endswith("_total")}


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from faust.worker import Worker as FaustWorker

    from streams import log_limit
    from streams.app import create_worker
    from streams.core.churn_model import ChurnParamsError
    from streams.faust_internals import UnsupportedVersion
    from streams.health import Health, PortUnavailable, serve_health
    from streams.huge_pages import use_huge_pages

    loglevel = (args.loglevel or settings.log_level).upper()
    logging.basicConfig(level=loglevel, format=LOG_FORMAT)
    log_limit.install(logging.getLogger())
    if settings.huge_pages:  # before the states are loaded: see streams/huge_pages.py
        log.info("%s", use_huge_pages())
    health = Health()
    if settings.metrics_port:
        try:
            serve_health(health, settings.metrics_port, args.metrics_host)
        except PortUnavailable as exc:
            log.error("%s (set CX_METRICS_PORT to a free port, one per worker)", exc)
            return 2
    health.problem("starting", "joining the consumer group, recovering tables")
    if not _wait_for_kafka(settings, health):
        log.info("stopped before Kafka answered")
        return 0
    try:
        worker = create_worker(settings.worker_config(), health=health)
    except (UnsupportedVersion, ChurnParamsError) as exc:
        log.error("%s", exc)
        return 2
    # states, events and records are short-lived; short young collections: see gc_tuning
    tune_collector(WORKER_YOUNG_ALLOCATIONS)

    class Worker(FaustWorker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            log_limit.install(logger)  # Faust replaced the handlers

        def _on_sigterm(self) -> None:
            _arm_stop_deadline()
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            _arm_stop_deadline()
            super()._on_sigint()

    faust_worker = Worker(
        worker.app,
        loglevel=loglevel.lower(),
        quiet=True,
        override_logging=True,
    )
    # Faust's terminal spinner sets the root logger to DEBUG whenever the level is WARN or above,
    # so that every log call spins it: aiokafka and Faust then build a LogRecord for every debug
    # line of every produced record (several us each) only for the handler to drop it.
    faust_worker.spinner = None
    log.info("worker for %s (%s), /healthz and /metrics on :%s", settings.kafka_bootstrap_servers,
             settings.kafka_security.describe(), settings.metrics_port)
    try:
        faust_worker.execute_from_commandline()  # returns only via SystemExit
    finally:
        log.info("stopped: messages consumed %s", json.dumps(_consumed()))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "worker",
        help="run a scoring worker (Faust): scores, alerts, score updates",
        description=(
            "Consume cx.touchpoints in whole fetches, keep per-customer scores, publish alerts, "
            "score updates and dead letters. Scales by partitions: start more workers with "
            "the same CX_APP_ID. ClickHouse is written by `cxsignals sink`, a separate process. "
            "Waits for Kafka at start-up (GET /healthz says why). SIGTERM or Ctrl-C stop it "
            "cleanly: the open batch is finished and committed, within ~10 s."
        ),
        epilog=(
            "example: CX_METRICS_PORT=9465 CX_STATE_DIR=/tmp/w2 cxsignals worker  "
            "(a second worker on the same host)"
        ),
    )
    parser.add_argument(
        "--loglevel", default=None, help="debug, info, warning (default: CX_LOG_LEVEL)"
    )
    parser.add_argument("--metrics-host", default="127.0.0.1",
                        help="bind address of /healthz and /metrics")
    parser.set_defaults(func=_run)
