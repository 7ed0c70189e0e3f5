"""``cxsignals retention apply [--dry-run]``: enforce ``CX_RETENTION_DAYS`` in ClickHouse.

Drops the monthly partitions that lie wholly beyond the retention (every server) and, on
servers with table TTL (20.3+), sets each table's TTL so that merges remove expired rows on
their own (:mod:`sinks.retention`). Kafka topics get ``retention.ms`` from ``cxsignals topics
create``. Run it daily (cron, a Kubernetes CronJob). Exit 0 done, 1 no retention configured,
2 ClickHouse unavailable or failed.
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from cxsignals.settings import Settings


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from clickhouse_driver.errors import Error as ClickHouseError

    from sinks.migrations import _client, parse_version
    from sinks.retention import Retention

    days = args.days if args.days is not None else settings.retention_days
    if days is None:
        print("error: no retention: set CX_RETENTION_DAYS (or --days N)", file=sys.stderr)
        return 1
    params = settings.clickhouse
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"retention [{time.monotonic() - started:5.1f} s] {line}", file=sys.stderr,
              flush=True)

    try:
        client = _client(params)
        try:
            version = parse_version(str(client.execute("SELECT version()")[0][0]))
            progress(f"ClickHouse {'.'.join(map(str, version))} at {params.host}:{params.port}"
                     f"/{params.database}: keeping {days} days")
            run = Retention(client.execute, params.database, version,
                            progress=progress).apply(days, dry_run=args.dry_run)
        finally:
            client.disconnect()
    except (ClickHouseError, OSError) as exc:
        print(f"error: ClickHouse at {params.host}:{params.port} failed: "
              f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(orjson.dumps({
            "retention_days": days, "dry_run": run.dry_run,
            "dropped": [{"table": d.table, "partition": d.partition_id, "rows": d.rows}
                        for d in run.drops],
            "ttl": run.ttl}).decode())
    else:
        verb = "would drop" if run.dry_run else "dropped"
        print(f"{verb} {len(run.drops)} partitions ({sum(d.rows for d in run.drops)} rows); "
              f"table TTL {'set' if run.ttl else 'not supported by this server'}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "retention",
        help="enforce CX_RETENTION_DAYS in ClickHouse (drop expired partitions, set TTL)",
        description="Drop the monthly partitions older than the retention; set table TTL "
        "where the server supports it. Exit 0 done, 1 no retention set, 2 ClickHouse failed.",
        epilog="example: CX_RETENTION_DAYS=395 cxsignals retention apply --dry-run",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    apply = actions.add_parser("apply", help="drop expired partitions, set table TTL")
    apply.add_argument("--dry-run", action="store_true", help="say what would go, change "
                       "nothing")
    apply.add_argument("--days", type=int, help="override CX_RETENTION_DAYS")
    apply.add_argument("--format", choices=("text", "json"), default="text")
    apply.set_defaults(func=_run)
