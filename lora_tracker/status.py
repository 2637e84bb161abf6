"""What `lora-tracker db status` reports about the database target and the local spool."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from .db import Connection, Database
from .errors import DatabaseUnavailable
from .spool import spool_for

TABLES = (
    "training_runs", "epoch_results", "caption_versions", "test_prompts",
    "prompt_test_results", "checkpoints",
)  # fmt: skip
EXACT_COUNT_BELOW = 100_000


def database_status(database_url: str | None = None) -> dict[str, Any]:
    """Target (password masked), spool, server version, migrations and row counts.

    When the database cannot be reached, ``error`` says why and the database fields are
    missing; everything local is still reported.
    """
    from . import migrations

    with Database(database_url, auto_migrate=False) as db:
        spool = spool_for(db.target.home)
        status: dict[str, Any] = {
            "target": db.target.display(),
            "source": db.target.source,
            "home": str(db.target.home),
            "spool_waiting": spool.pending(),
            "spool_rejected": spool.rejected(),
        }
        try:
            conn = db.connect()
        except DatabaseUnavailable as exc:
            status["error"] = str(exc)
            return status
        version = conn.execute("SHOW server_version").fetchone()
        status["server_version"] = f"PostgreSQL {version['server_version']}" if version else "?"
        status["applied_migrations"] = migrations.applied_versions(conn)
        status["pending_migrations"] = migrations.pending_versions(conn)
        # the embedded database gets its schema by itself the first time lora-tracker uses it
        status["migrations_automatic"] = db.target.embedded
        status["row_counts"] = {
            table: _count(conn, table) for table in TABLES if _exists(conn, table)
        }
        return status


def _exists(conn: Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (table,)).fetchone()
    return bool(row and row["present"])


def _count(conn: Connection, table: str) -> int:
    """Exact below 100,000 rows, else the planner's estimate (instant on big tables)."""
    estimate = conn.execute(
        "SELECT reltuples::bigint AS n FROM pg_class WHERE oid = to_regclass(%s)", (table,)
    ).fetchone()
    if estimate is not None and estimate["n"] >= EXACT_COUNT_BELOW:
        return int(estimate["n"])
    row = conn.execute(
        sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(table))
    ).fetchone()
    return int(row["n"]) if row else 0
