"""The ``cxsignals`` command line: one entry point, one subcommand per module.

Each command module exposes ``add_parser(sub)`` which registers its sub-parser and sets
``func(args, settings) -> int`` (the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import os
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


def _main(argv: Sequence[str] | None) -> int:
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


EXIT_BROKEN_PIPE = 141
"""128 + SIGPIPE, what a shell reports for a program killed by a closed pipe."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code.

    A reader that closes the pipe early (``cxsignals acls list | head``) ends the command
    quietly with :data:`EXIT_BROKEN_PIPE`, without a traceback: stdout is pointed at devnull
    so that the interpreter's final flush cannot fail again (Python docs, "Note on SIGPIPE").
    """
    try:
        try:
            return _main(argv)
        finally:  # also on SystemExit: a broken pipe shows here, not at exit
            if not sys.stdout.closed:
                sys.stdout.flush()
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE


def _stdout_to_devnull() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file descriptor (captured output in tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
