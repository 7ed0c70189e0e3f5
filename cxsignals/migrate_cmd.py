"""``cxsignals migrate``: create the ClickHouse database and apply pending schema migrations."""

from __future__ import annotations

import argparse
import logging
import sys

from cxsignals.settings import Settings
from sinks.migrations import MigrationError, run_migrations

EPILOG = """\
Idempotent: migrations already recorded in <db>.schema_migrations are not run again, so
`make run`, `make test` and the compose init step all call it. Migrations that need a newer
server (TTL, DateTime64) are skipped and applied once the server is upgraded.

examples:
  cxsignals migrate
  CLICKHOUSE_URL=clickhouse://default:@127.0.0.1:9000/cx_test cxsignals migrate

exit codes: 0 done, 1 a migration failed, 2 ClickHouse unreachable
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "migrate",
        help="apply pending ClickHouse schema migrations",
        description="Create the database named in CLICKHOUSE_URL and apply pending migrations.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from clickhouse_driver import errors as ch_errors

    # The driver logs each refused connection with a traceback; the message below says it.
    logging.getLogger("clickhouse_driver.connection").setLevel(logging.ERROR)
    params = settings.clickhouse
    where = params.where
    try:
        result = run_migrations(settings.clickhouse)
    except (ch_errors.NetworkError, ch_errors.SocketTimeoutError, OSError, EOFError) as exc:
        print(
            f"cxsignals migrate: ClickHouse is unreachable at {where} ({exc}). "
            "Start it (make services) or set CLICKHOUSE_URL.",
            file=sys.stderr,
        )
        return 2
    except (MigrationError, ch_errors.Error) as exc:
        print(f"cxsignals migrate: {exc}", file=sys.stderr)
        return 1
    version = ".".join(str(part) for part in result.server_version)
    print(f"ClickHouse {version} at {where}, database {result.database}")
    for name in result.applied:
        print(f"applied  {name}")
    for name in result.skipped:
        print(f"skipped  {name} (needs a newer server)")
    if not result.applied:
        print("schema is up to date")
    return 0
