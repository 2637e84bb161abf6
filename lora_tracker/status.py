"""What `lora-tracker db status` reports about the database target."""

from __future__ import annotations

from typing import Any

from .db import Database
from .errors import DatabaseUnavailable

TABLES = (
    "training_runs",
    "epoch_results",
    "caption_versions",
    "test_prompts",
    "prompt_test_results",
)


def database_status(database_url: str | None = None) -> dict[str, Any]:
    """Target (password masked), server version, migrations and row counts.

    Raises DatabaseUnavailable (with the masked target in its message) when unreachable.
    """
    from . import migrations

    with Database(database_url, auto_migrate=False) as db:
        status: dict[str, Any] = {
            "target": db.target.display(),
            "source": db.target.source,
            "home": str(db.target.home),
        }
        try:
            conn = db.connect()
        except DatabaseUnavailable as exc:
            raise DatabaseUnavailable(f"{exc} (data folder {db.target.home})") from None
        version = conn.execute("SHOW server_version").fetchone()
        status["server_version"] = f"PostgreSQL {version['server_version']}" if version else "?"
        status["applied_migrations"] = migrations.applied_versions(conn)
        status["pending_migrations"] = migrations.pending_versions(conn)
        counts: dict[str, int | None] = {}
        if not status["pending_migrations"]:
            for table in TABLES:
                row = conn.execute(
                    "SELECT reltuples::bigint AS n FROM pg_class WHERE oid = to_regclass(%s)",
                    (table,),
                ).fetchone()
                counts[table] = (
                    _exact_count(conn, table)
                    if row is None or row["n"] < 100_000
                    else int(row["n"])
                )
        status["row_counts"] = counts
        return status


def _exact_count(conn: Any, table: str) -> int:
    from psycopg import sql

    row = conn.execute(
        sql.SQL("SELECT count(*) AS n FROM {}").format(sql.Identifier(table))
    ).fetchone()
    return int(row["n"]) if row else 0
