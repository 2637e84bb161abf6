"""Append-only SQL migrations: ``sql/NNNN_name.sql``, applied in order.

Each file is plain SQL that also runs by hand (``psql -1 -f``, the Supabase SQL editor) and
records itself in ``schema_migrations``. Here each one runs in its own transaction under a
transaction-level advisory lock, so two processes that migrate at once apply every file exactly
once, also through a transaction-mode pooler.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from .errors import MigrationError
from .pg import Connection, first_line, translate_errors

log = logging.getLogger(__name__)

_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# An arbitrary constant shared by every lora-tracker process: "lora" in ASCII.
_ADVISORY_LOCK_KEY = 0x6C6F7261
EXAMPLES_FILE = "example_data.sql"


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str


def sql_dir() -> Traversable:
    """The folder of SQL files: inside the installed wheel, or ``sql/`` of a checkout."""
    packaged = resources.files("lora_tracker") / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


@cache
def available() -> tuple[Migration, ...]:
    """Every migration shipped with this version, in order."""
    found = []
    for entry in sql_dir().iterdir():
        match = _FILENAME.match(entry.name)
        if match:
            found.append(Migration(match[1], match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    return tuple(found)


@cache
def available_versions() -> tuple[str, ...]:
    """The versions of every migration shipped, in order (from the file names alone)."""
    names = (_FILENAME.match(entry.name) for entry in sql_dir().iterdir())
    return tuple(sorted(match[1] for match in names if match))


def read_sql_file(name: str) -> str:
    """The text of a non-migration SQL file shipped with lora-tracker (e.g. example data)."""
    return (sql_dir() / name).read_text(encoding="utf-8")


def is_blank(conn: Connection) -> bool:
    """True when the database has no schema_migrations table at all."""
    # A plain query on pg_class rather than to_regclass(): it reads the catalog with this
    # statement's snapshot, never a name cache that may predate another process's commit.
    row = conn.execute(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = 'schema_migrations' AND n.nspname = ANY(current_schemas(false))"
        ") AS blank"
    ).fetchone()
    return bool(row and row["blank"])


def applied_versions(conn: Connection) -> list[str]:
    """Versions recorded in schema_migrations (empty on a blank database)."""
    if is_blank(conn):
        return []
    rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [r["version"] for r in rows]


def pending_versions(conn: Connection) -> list[str]:
    """Versions this lora-tracker ships that the database has not applied."""
    done = set(applied_versions(conn))
    return [m.version for m in available() if m.version not in done]


def pending_at_connect(conn: Connection) -> list[str]:
    """``pending_versions`` for a connection just opened (autocommit, idle): one query when
    the schema is there; only a database without ``schema_migrations`` takes the longer way
    (catalog lookup, then the versions)."""
    if not conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
        return pending_versions(conn)
    try:
        row = conn.execute(
            "SELECT array_agg(version) AS versions FROM schema_migrations"
        ).fetchone()
    except psycopg.errors.UndefinedTable:  # a blank database (or not on the search_path)
        return pending_versions(conn)
    done = set((row and row["versions"]) or ())
    return [version for version in available_versions() if version not in done]


def migrate(conn: Connection) -> list[str]:
    """Apply every pending migration, each with its schema_migrations row in one transaction.

    Returns the versions applied by this call (empty when the schema is current).
    """
    applied: list[str] = []
    for migration in available():
        with translate_errors(conn), conn.transaction():
            # A transaction-level lock, the transaction's first statement: it works through
            # a transaction-mode pooler (Supabase's port 6543), where a session lock could
            # be taken on one server connection and released on another. Every statement
            # after it runs with a snapshot taken once the lock is held (READ COMMITTED),
            # so it sees what another process's migration committed while this one waited.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_LOCK_KEY,))
            if migration.version in applied_versions(conn):
                continue
            _apply(conn, migration)
            applied.append(migration.version)
    return applied


def _apply(conn: Connection, migration: Migration) -> None:
    log.info("applying migration %s_%s", migration.version, migration.name)
    try:
        conn.execute(sql.SQL(migration.sql))
    except psycopg.errors.DatabaseError as exc:
        if isinstance(exc, psycopg.OperationalError):
            raise
        raise MigrationError(
            f"migration {migration.version}_{migration.name} failed and was rolled "
            f"back: {first_line(str(exc))}"
        ) from None
    conn.execute(
        "INSERT INTO schema_migrations (version) VALUES (%s) ON CONFLICT (version) DO NOTHING",
        (migration.version,),
    )


EXAMPLE_RUNS = ("SD15_PERFECT_Nov9", "SD15_bespoke_baby_Nov7", "SDXL_Current_Nov12")


def load_examples(conn: Connection) -> bool:
    """Load the reference document's three runs; False when they are all there already
    (then nothing runs, so no sequence value is used up)."""
    text = read_sql_file(EXAMPLES_FILE)
    with translate_errors(conn), conn.transaction():
        row = conn.execute(
            "SELECT count(*) AS n FROM training_runs WHERE run_name = ANY(%s)",
            (list(EXAMPLE_RUNS),),
        ).fetchone()
        if row is not None and row["n"] == len(EXAMPLE_RUNS):
            return False
        conn.execute(sql.SQL(text))
    return True
