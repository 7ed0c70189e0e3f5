"""``cxsignals schema export DIR``: write the event contract as JSON Schema files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cxsignals.settings import Settings
from schemas.export import SCHEMA_DIR, export_json_schemas

EPILOG = f"""\
Writes one JSON Schema (draft 2020-12) per event type (<event_type>.schema.json), the envelope
(envelope.schema.json) and the union of all types (touchpoint.schema.json). The committed copies
live in {SCHEMA_DIR.parent.name}/{SCHEMA_DIR.name}/; a test fails when they are stale, so refresh
them after a model change.

examples:
  cxsignals schema export schemas/json
  cxsignals schema export /tmp/cx-schemas && ls /tmp/cx-schemas

exit codes: 0 written, 2 the directory cannot be written
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "schema",
        help="export the touchpoint event contract as JSON Schema",
        description="Work with the published JSON Schemas of the touchpoint events.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="schema_action", metavar="ACTION", required=True)
    export = actions.add_parser(
        "export",
        help="write the JSON Schema files into DIR",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export.add_argument("directory", type=Path, metavar="DIR", help="target directory")
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace, settings: Settings) -> int:
    """Export into ``args.directory``; an unwritable directory is a one-line error, exit 2."""
    try:
        paths = export_json_schemas(args.directory)
    except OSError as exc:
        print(
            f"error: cannot write schemas to {args.directory}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 2
    for path in paths:
        print(path)
    print(f"wrote {len(paths)} schemas to {args.directory}", file=sys.stderr)
    return 0
