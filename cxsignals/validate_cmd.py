"""``cxsignals validate FILE|-``: check JSON-lines events against the contract before publishing."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import BinaryIO, TextIO

from cxsignals.settings import Settings
from schemas.event_records import Event
from streams.core.validation import Invalid, validate_event

EPILOG = """\
Reads one JSON event per line (blank lines are skipped) and checks each exactly as the pipeline
does, including the size limit and the event-time range (receive time = now). Prints one line per
event:

  <line>: ok
  <line>: <error code>: <field>: <what is wrong>

and a summary on stderr. Error codes are listed in docs/events.md.

examples:
  cxsignals validate events.jsonl
  my-exporter | cxsignals validate -
  cxsignals validate --quiet events.jsonl || echo "fix the events above before publishing"

exit codes: 0 every event valid, 1 at least one invalid, 2 the file cannot be read
"""


@dataclass(frozen=True, slots=True)
class LineResult:
    """The verdict on one non-blank input line (1-based ``line`` number)."""

    line: int
    result: Event | Invalid

    def render(self) -> str:
        if isinstance(self.result, Invalid):
            return f"{self.line}: {self.result.code.value}: {self.result.message}"
        return f"{self.line}: ok"


def validate_lines(
    lines: Iterable[bytes], *, now: datetime, max_bytes: int, max_future_skew_s: float
) -> Iterator[LineResult]:
    """Validate each line as one message value; whitespace-only lines are skipped.

    The line terminator (``\\n`` or ``\\r\\n``) is not part of the value; everything else is
    passed byte-for-byte, so invalid UTF-8 and oversized lines get the codes Kafka messages get.
    """
    for number, raw in enumerate(lines, start=1):
        value = raw.rstrip(b"\r\n")
        if not value.strip():
            continue
        yield LineResult(
            number,
            validate_event(
                value, now=now, max_bytes=max_bytes, max_future_skew_s=max_future_skew_s
            ),
        )


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "validate",
        help="check JSON-lines touchpoint events against the event contract",
        description="Validate touchpoint events, one JSON object per line, as the pipeline would.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", help="JSON-lines file, or - for stdin")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the invalid lines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Validate ``args.file``; exit 0 all valid, 1 some invalid, 2 unreadable input."""
    now = datetime.now(timezone.utc)
    try:
        if args.file == "-":
            return _report(sys.stdin.buffer, args=args, settings=settings, now=now)
        with open(args.file, "rb") as stream:
            return _report(stream, args=args, settings=settings, now=now)
    except BrokenPipeError:  # stdout, not the input: the reader closed it (cli.main)
        raise
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2


def _report(
    stream: BinaryIO, *, args: argparse.Namespace, settings: Settings, now: datetime
) -> int:
    out: TextIO = sys.stdout
    codes: Counter[str] = Counter()
    valid = 0
    for verdict in validate_lines(
        stream,
        now=now,
        max_bytes=settings.max_event_bytes,
        max_future_skew_s=settings.max_future_skew_s,
    ):
        if isinstance(verdict.result, Invalid):
            codes[verdict.result.code.value] += 1
        else:
            valid += 1
            if args.quiet:
                continue
        print(verdict.render(), file=out)
    invalid = sum(codes.values())
    summary = f"{valid + invalid} events: {valid} ok, {invalid} invalid"
    if codes:
        summary += " (" + ", ".join(f"{code} {n}" for code, n in sorted(codes.items())) + ")"
    print(summary, file=sys.stderr)
    return 1 if invalid else 0
