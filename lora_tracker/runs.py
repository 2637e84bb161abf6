"""training_runs: create, find and update runs. All SQL about runs lives here."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from . import _sqlbuild
from .db import Connection
from .errors import AmbiguousName, InvalidInput, NotFound
from .models import RunCreate, RunFields, TrainingRun

_MAX_CANDIDATES = 10


def create_run(conn: Connection, run: RunCreate) -> TrainingRun:
    """Insert a run; a taken run_name raises AlreadyExists."""
    query, params = _sqlbuild.insert("training_runs", run.given() | {"run_name": run.run_name})
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return TrainingRun.model_validate(row)


def get_run(conn: Connection, ref: str | int) -> TrainingRun:
    """A run by id, exact name, or unique name prefix.

    Raises NotFound when nothing matches and AmbiguousName, listing the candidates, when a
    prefix matches several runs.
    """
    return TrainingRun.model_validate(_find(conn, ref))


def _find(conn: Connection, ref: str | int) -> dict[str, Any]:
    text = str(ref).strip()
    if not text:
        raise InvalidInput("a run name or id is required")
    if text.isdigit():
        row = conn.execute("SELECT * FROM training_runs WHERE id = %s", (int(text),)).fetchone()
        if row:
            return row
    row = conn.execute("SELECT * FROM training_runs WHERE run_name = %s", (text,)).fetchone()
    if row:
        return row
    pattern = _sqlbuild.like_prefix(text)
    rows = conn.execute(
        "SELECT * FROM training_runs WHERE run_name LIKE %s ORDER BY run_name LIMIT %s",
        (pattern, _MAX_CANDIDATES + 1),
    ).fetchall()
    if len(rows) == 1:
        return rows[0]
    if not rows:
        raise NotFound(f"no run named {text!r}")
    names = ", ".join(r["run_name"] for r in rows[:_MAX_CANDIDATES])
    more = " ..." if len(rows) > _MAX_CANDIDATES else ""
    raise AmbiguousName(f"{text!r} matches several runs: {names}{more}")


def update_run(conn: Connection, ref: str | int, fields: RunFields) -> TrainingRun:
    """Set only the fields given; returns the updated run."""
    run = _find(conn, ref)
    values = fields.given()
    if not values:
        return TrainingRun.model_validate(run)
    assignments, params = _sqlbuild.assignments(values)
    row = conn.execute(
        sql.SQL("UPDATE training_runs SET {} WHERE id = %s RETURNING *").format(assignments),
        [*params, run["id"]],
    ).fetchone()
    assert row is not None
    return TrainingRun.model_validate(row)


def delete_run(conn: Connection, ref: str | int) -> TrainingRun:
    """Delete a run with its epochs and prompt results (ON DELETE CASCADE)."""
    run = _find(conn, ref)
    conn.execute("DELETE FROM training_runs WHERE id = %s", (run["id"],))
    return TrainingRun.model_validate(run)


def list_runs(conn: Connection, limit: int | None = None) -> list[TrainingRun]:
    """Runs, newest first."""
    rows = conn.execute(
        "SELECT * FROM training_runs ORDER BY run_date DESC, id DESC LIMIT %s", (limit,)
    ).fetchall()
    return [TrainingRun.model_validate(r) for r in rows]
