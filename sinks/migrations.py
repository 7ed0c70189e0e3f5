"""Versioned ClickHouse schema migrations (``sinks/sql/NNNN_<name>.sql``, shipped as package data).

A migration is a numbered SQL file of one or more statements separated by ``;``, with ``{db}``
standing for the database. A header line ``-- min_server_version: 20.3`` marks a modern-only
migration (TTL, DateTime64): it is skipped, not recorded, on older servers, so it is applied
after the server is upgraded. Applied migrations are recorded in ``{db}.schema_migrations``
with a checksum of their text.

Guarantees: applying is idempotent (a recorded migration is never run again; every statement
also uses IF NOT EXISTS or is a no-op when repeated, so a run that died half-way can be
re-run). Migrations are append-only: a recorded migration whose file changed raises
:class:`MigrationError` instead of silently diverging from the deployed schema.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sinks.config import ClickHouseParams

# Package data: found the same way in a checkout and in an installed wheel.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "sql"

_FILE_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_MIN_VERSION_RE = re.compile(r"^--\s*min_server_version:\s*([0-9][0-9.]*)\s*$", re.MULTILINE)
_DATABASE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# ``ALTER TABLE db.t ADD COLUMN IF NOT EXISTS c ...`` (one column): 18.16 cannot parse the
# IF NOT EXISTS, so the runner asks system.columns instead (see _add_column_if_missing).
_ADD_COLUMN_RE = re.compile(
    r"^ALTER\s+TABLE\s+([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)\s+"
    r"ADD\s+COLUMN\s+IF\s+NOT\s+EXISTS\s+([A-Za-z_][A-Za-z0-9_]*)\s",
    re.IGNORECASE,
)

BOOKKEEPING_DDL = """
CREATE TABLE IF NOT EXISTS {db}.schema_migrations
(
    name String,
    checksum String,
    applied_at DateTime('UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY name
"""


class MigrationError(RuntimeError):
    """A migration file is malformed, changed after it was applied, or failed on the server."""


@dataclass(frozen=True)
class Migration:
    name: str
    statements: tuple[str, ...]
    checksum: str
    min_server_version: tuple[int, ...] | None

    def supported_by(self, server_version: tuple[int, ...]) -> bool:
        return self.min_server_version is None or server_version >= self.min_server_version


def parse_version(text: str) -> tuple[int, ...]:
    """``'18.16.1'`` -> ``(18, 16, 1)``; non-numeric suffixes (``'26.9.2.1-stable'``) are cut."""
    parts: list[int] = []
    for piece in text.strip().split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    if not parts:
        raise ValueError(f"not a ClickHouse version: {text!r}")
    return tuple(parts)


def split_statements(sql: str) -> list[str]:
    """Split on ``;`` outside quotes and comments; drop ``--`` comments and empty statements."""
    statements: list[str] = []
    current: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(sql):
        char = sql[i]
        if quote is not None:
            current.append(char)
            if char == "\\" and i + 1 < len(sql):
                current.append(sql[i + 1])
                i += 1
            elif char == quote:
                quote = None
        elif char in ("'", '"', "`"):
            quote = char
            current.append(char)
        elif sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = len(sql) if newline < 0 else newline
            continue
        elif char == ";":
            statements.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    statements.append("".join(current))
    return [s.strip() for s in statements if s.strip()]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """All migrations in file-name order; raises MigrationError on a bad name or numbering."""
    migrations: list[Migration] = []
    seen: set[str] = set()
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_<name>.sql")
        if match.group(1) in seen:
            raise MigrationError(f"{path.name}: migration number {match.group(1)} is used twice")
        seen.add(match.group(1))
        text = path.read_text(encoding="utf-8")
        header = _MIN_VERSION_RE.search(text)
        statements = tuple(split_statements(text))
        if not statements:
            raise MigrationError(f"{path.name}: no SQL statement")
        migrations.append(
            Migration(
                name=path.stem,
                statements=statements,
                checksum=hashlib.sha256(text.encode("utf-8")).hexdigest(),
                min_server_version=parse_version(header.group(1)) if header else None,
            )
        )
    return migrations


def _render(sql: str, database: str) -> str:
    return sql.replace("{db}", database)


def _execute_statement(execute: Callable[[str], Any], statement: str) -> None:
    """Run one rendered statement; an ``ADD COLUMN IF NOT EXISTS`` of a single column runs
    without the IF NOT EXISTS when system.columns lacks the column, and not at all otherwise,
    so it works (and repeats as a no-op) on 18.16 as on modern servers."""
    match = _ADD_COLUMN_RE.match(statement)
    if match is None:
        execute(statement)
        return
    database, table, column = match.groups()
    rows = execute(
        f"SELECT count() FROM system.columns WHERE database = '{database}' "
        f"AND table = '{table}' AND name = '{column}'"
    )
    if rows and int(rows[0][0]) > 0:
        return
    execute(re.sub(r"\s+IF\s+NOT\s+EXISTS\s+", " ", statement, count=1, flags=re.IGNORECASE))


def _check_database(database: str) -> None:
    # The name is pasted into DDL, so it must be a plain identifier.
    if not _DATABASE_RE.match(database):
        raise MigrationError(f"database name {database!r} must match {_DATABASE_RE.pattern}")


def applied_migrations(
    execute: Callable[[str], Any], *, database: str
) -> dict[str, str]:
    """Recorded migration name -> checksum (empty before the bookkeeping table exists)."""
    _check_database(database)
    execute(_render(BOOKKEEPING_DDL, database))
    rows = execute(
        f"SELECT name, argMax(checksum, applied_at) FROM {database}.schema_migrations "
        "GROUP BY name"
    )
    return {str(name): str(checksum) for name, checksum in rows or ()}


def apply_migrations(
    execute: Callable[[str], Any],
    *,
    server_version: tuple[int, ...],
    database: str,
    migrations: Sequence[Migration] | None = None,
) -> list[str]:
    """Apply the pending migrations the server supports; return their names in order.

    ``execute(sql)`` runs one statement and returns its rows as a sequence of tuples (for
    SELECT). The database must exist. Raises MigrationError when a statement fails (the
    migration is then not recorded and is retried by the next run) or when a recorded
    migration's file changed.
    """
    _check_database(database)
    pending = list(load_migrations() if migrations is None else migrations)
    done = applied_migrations(execute, database=database)
    applied: list[str] = []
    for migration in pending:
        if migration.name in done:
            if done[migration.name] != migration.checksum:
                raise MigrationError(
                    f"{migration.name} was changed after it was applied to {database}; "
                    "migrations are append-only, add a new one instead (a development "
                    f"database can be dropped, DROP DATABASE {database}, and migrated again)"
                )
            continue
        if not migration.supported_by(server_version):
            continue
        for statement in migration.statements:
            try:
                _execute_statement(execute, _render(statement, database))
            except Exception as exc:
                raise MigrationError(f"{migration.name} failed: {exc}") from exc
        execute(
            f"INSERT INTO {database}.schema_migrations (name, checksum, applied_at) "
            f"SELECT '{migration.name}', '{migration.checksum}', now()"
        )
        applied.append(migration.name)
    return applied


def _client(params: ClickHouseParams) -> Any:
    from clickhouse_driver import Client

    return Client(
        **params.client_options(),
        connect_timeout=5,
        send_receive_timeout=60,
    )


@dataclass(frozen=True)
class MigrationRun:
    database: str
    server_version: tuple[int, ...]
    applied: list[str]
    skipped: list[str]


def run_migrations(params: ClickHouseParams) -> MigrationRun:
    """Create the database if needed, apply the pending migrations, say what was skipped.

    Raises clickhouse_driver errors (e.g. NetworkError) when the server is unreachable and
    MigrationError when a migration fails.
    """
    database = params.database
    _check_database(database)
    client = _client(params)
    try:
        client.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
        version = parse_version(str(client.execute("SELECT version()")[0][0]))
        migrations = load_migrations()
        applied = apply_migrations(
            client.execute, server_version=version, database=database, migrations=migrations
        )
    finally:
        client.disconnect()
    skipped = [m.name for m in migrations if not m.supported_by(version)]
    return MigrationRun(database, version, applied, skipped)

