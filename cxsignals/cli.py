"""The ``cxsignals`` command line: one entry point, one subcommand per module.

Each command module exposes ``add_parser(sub)`` which registers its sub-parser and sets
``func(args, settings) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cxsignals.settings import SettingsError, checked_settings

COMMAND_MODULES: tuple[str, ...] = (
    "cxsignals.worker_cmd",
    "cxsignals.sink_cmd",
    "cxsignals.topics_cmd",
    "cxsignals.migrate_cmd",
    "cxsignals.report_cmd",
    "cxsignals.tail_cmd",
    "cxsignals.simulate_cmd",
    "cxsignals.validate_cmd",
    "cxsignals.schema_cmd",
    "cxsignals.dlq_cmd",
    "cxsignals.state_cmd",
    "cxsignals.acls_cmd",
    "cxsignals.erase_cmd",
    "cxsignals.retention_cmd",
    "cxsignals.churn_cmd",
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cxsignals")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxsignals",
        description="CX Signals: real-time customer-experience signals from Kafka to ClickHouse.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = checked_settings()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, settings))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
