"""Raw SQL for `lora-tracker sql`: the reference workflow is SQL, and embedded users have
no psql of their own. The text is the user's own query, run as is, in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from .errors import SQLError
from .pg import Connection, translate_errors


@dataclass
class ResultSet:
    """One statement's outcome: column names and rows, or only a status like ``UPDATE 3``."""

    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    status: str = ""

    @property
    def has_rows(self) -> bool:
        return bool(self.columns)


def run_sql(conn: Connection, text: str) -> list[ResultSet]:
    """Run SQL text (one statement, or several separated by ``;``) in one transaction.

    Either everything commits or, on the first error, nothing does.
    """
    if not text.strip():
        raise SQLError("no SQL statement given")
    results: list[ResultSet] = []
    try:
        with translate_errors(conn):
            try:
                with conn.transaction():
                    cur = conn.cursor(row_factory=tuple_row)
                    cur.execute(sql.SQL(text))
                    while True:
                        result = ResultSet(status=cur.statusmessage or "")
                        if cur.description is not None:
                            result.columns = [d.name for d in cur.description]
                            result.rows = cur.fetchall()
                        results.append(result)
                        if not cur.nextset():
                            break
            except psycopg.errors.UndefinedTable as exc:
                raise SQLError(_unknown_table(conn, exc)) from None
    except psycopg.errors.QueryCanceled as exc:
        raise SQLError(f"statement cancelled: {_one_line(exc)}") from None
    except psycopg.DatabaseError as exc:
        if isinstance(exc, psycopg.OperationalError):
            raise
        raise SQLError(_one_line(exc)) from None
    return results


def _unknown_table(conn: Connection, exc: psycopg.errors.UndefinedTable) -> str:
    """Which table is unknown, with close names; `init` only when there is no schema."""
    import difflib
    import re

    from .migrations import is_blank

    message = _one_line(exc)
    if is_blank(conn):
        return f"{message}: this database has no lora-tracker schema; run `lora-tracker init`"
    match = re.search(r'relation "([^"]+)"', exc.diag.message_primary or "")
    if match is None:
        return message
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = ANY(current_schemas(false)) ORDER BY 1"
    ).fetchall()
    names = [r["table_name"] for r in rows]
    unknown = match.group(1).split(".")[-1]
    close = difflib.get_close_matches(unknown.lower(), names, n=3, cutoff=0.5)
    if close:
        return f"no table or view named {unknown}; did you mean {' or '.join(close)}?"
    return f"no table or view named {unknown} (there are: {', '.join(names)})"


def _one_line(exc: psycopg.Error) -> str:
    message = exc.diag.message_primary or str(exc).strip().splitlines()[0]
    detail = exc.diag.message_detail
    return f"{message} ({detail})" if detail else message
