"""``cxsignals sink``: write events, scores, alerts and dead letters to ClickHouse."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from cxsignals.gc_tuning import tune_collector
from cxsignals.settings import Settings

log = logging.getLogger("cxsignals")


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.consumer import build_sink, serve
    from streams import log_limit
    from streams.health import Health, PortUnavailable, serve_health

    logging.basicConfig(
        level=(args.loglevel or settings.log_level).upper(),
        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s",
    )
    # aiokafka repeats its reconnect errors every few milliseconds while the broker is away.
    log_limit.install(logging.getLogger())
    # clickhouse-driver logs every failed connect with a traceback; the sink says once (then
    # at most every 30 s) what it waits for.
    logging.getLogger("clickhouse_driver.connection").setLevel(logging.ERROR)
    config = settings.sink_config()
    health = Health()
    if settings.sink_metrics_port:
        # /healthz (503 naming what the sink waits for: clickhouse, kafka, sink_dlq) + /metrics
        try:
            serve_health(health, settings.sink_metrics_port, addr=args.metrics_host)
        except PortUnavailable as exc:
            log.error("%s (set CX_SINK_METRICS_PORT to a free port, one per sink)", exc)
            return 2

    sink = build_sink(config, health)
    tune_collector()  # rows and records are short-lived; see gc_tuning

    async def main() -> None:
        task = asyncio.ensure_future(serve(sink))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        log.info("sink for %s (%s) -> ClickHouse %s/%s as %s, group %s, metrics on :%s",
                 config.kafka_bootstrap_servers, config.kafka_security.describe(),
                 config.clickhouse.where, config.clickhouse.database, config.clickhouse.user,
                 config.group_id, settings.sink_metrics_port)
        try:
            await task
        except asyncio.CancelledError:
            log.info("sink stopped")

    asyncio.run(main())
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sink",
        help="write events, scores, alerts and dead letters to ClickHouse",
        description=(
            "Consume the touchpoint, alert, score and dead-letter topics with its own consumer "
            "group and write them to ClickHouse, committing offsets only after ClickHouse "
            "acknowledged the rows (rows ClickHouse can never take go to the sink dead-letter "
            "topic first). Waits for ClickHouse and Kafka while they are away (/healthz says "
            "why). Scales by partitions: start more sinks with the same "
            "CX_APP_ID. Stops cleanly on Ctrl-C or SIGTERM."
        ),
        epilog="example: CX_SINK_METRICS_PORT=9467 cxsignals sink  (a second sink on one host)",
    )
    parser.add_argument(
        "--loglevel", default=None, help="debug, info, warning (default: CX_LOG_LEVEL)"
    )
    parser.add_argument(
        "--metrics-host", default="127.0.0.1", help="bind address of /metrics and /healthz"
    )
    parser.set_defaults(func=_run)
