"""psycopg plumbing at the bottom of the stack: the connection type and the translation of
database errors into one-line domain errors.

Both ``db`` (connections, transactions) and ``migrations`` import from here, and nothing
here imports either, so the two never import each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from typing import Any

import psycopg

from .errors import AlreadyExists, DatabaseUnavailable, InvalidInput, NotFound, SchemaNotInitialized

Connection = psycopg.Connection[dict[str, Any]]


def first_line(text: str) -> str:
    for line in text.strip().splitlines():
        line = line.strip()
        if line:
            return line
    return ""


@contextmanager
def translate_errors(conn: Connection | None = None) -> Iterator[None]:
    """Turn psycopg errors from a unit of work into one-line domain errors."""
    try:
        yield
    except psycopg.errors.CheckViolation as exc:
        raise InvalidInput(_check_message(conn, exc)) from None
    except psycopg.errors.NotNullViolation as exc:
        column = exc.diag.column_name or "a column"
        raise InvalidInput(f"{exc.diag.table_name}.{column} must not be empty") from None
    except psycopg.errors.UniqueViolation as exc:
        raise AlreadyExists(_unique_message(exc)) from None
    except psycopg.errors.ForeignKeyViolation as exc:
        if "still referenced" in (exc.diag.message_detail or ""):
            raise InvalidInput(_foreign_key_message(exc)) from None
        raise NotFound(_foreign_key_message(exc)) from None
    except (psycopg.errors.InvalidTextRepresentation, psycopg.errors.NumericValueOutOfRange) as exc:
        raise InvalidInput(first_line(exc.diag.message_primary or str(exc))) from None
    except (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgramLimitExceeded) as exc:
        # Anything else the database refuses as data (a NUL character, a value too long for
        # an index, an exclusion): the value is wrong, not the server; retrying cannot help.
        raise InvalidInput(refusal_message(exc)) from None
    except psycopg.OperationalError as exc:
        # Only connection-level failures (no SQLSTATE, class 08, or a server shutdown) mean
        # the database is unavailable; a cancelled query or a full disk is an ordinary error.
        if exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P")):
            raise DatabaseUnavailable(f"database connection lost: {first_line(str(exc))}") from None
        raise
    except psycopg.errors.UndefinedTable as exc:
        raise SchemaNotInitialized(
            f"{first_line(str(exc))}: run `lora-tracker init` on this database"
        ) from None


@contextmanager
def sent_together(conn: Connection) -> Iterator[None]:
    """Statements sent without waiting for one another's answers (pipeline mode, where
    the connection can): an answer is awaited when read, and this side works meanwhile."""
    if not psycopg.Pipeline.is_supported():
        yield
        return
    stack = ExitStack()
    pipeline = stack.enter_context(conn.pipeline())
    try:
        yield
    except BaseException as exc:
        leave_pipeline(stack, pipeline, exc)
        raise
    leave_pipeline(stack, pipeline, None)


def leave_pipeline(
    stack: ExitStack, pipeline: psycopg.Pipeline, error: BaseException | None
) -> None:
    """Leave pipeline mode; with ``error`` (on its way out: the caller rolls back), without
    a second error or psycopg's warning about the statements that failed with it."""
    if error is None:
        stack.close()
        return
    with suppress(psycopg.Error):  # what was sent fails with the batch
        pipeline.sync()
    with suppress(psycopg.Error):
        stack.close()


def refusal_message(exc: psycopg.Error) -> str:
    """One line saying what the database refused (client-side adapter errors included)."""
    diag = getattr(exc, "diag", None)
    primary = diag.message_primary if diag is not None else None
    return first_line(primary or str(exc)) or type(exc).__name__


def _check_message(conn: Connection | None, exc: psycopg.errors.CheckViolation) -> str:
    name = exc.diag.constraint_name or ""
    table = exc.diag.table_name or ""
    rule = _constraint_definition(conn, name)
    column = _column_from_constraint(name, table)
    what = f"{table}.{column}" if column else table or "value"
    if rule:
        return f"invalid {what}: the rule is {rule}"
    return f"invalid {what}: {first_line(exc.diag.message_primary or str(exc))}"


def _column_from_constraint(name: str, table: str) -> str:
    # PostgreSQL names a column CHECK "<table>_<column>_check".
    if table and name.startswith(table + "_") and name.endswith("_check"):
        return name[len(table) + 1 : -len("_check")]
    return ""


def _constraint_definition(conn: Connection | None, name: str) -> str:
    if conn is None or conn.closed or not name:
        return ""
    try:
        row = conn.execute(
            "SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conname = %s LIMIT 1",
            (name,),
        ).fetchone()
    except psycopg.Error:
        return ""
    if not row:
        return ""
    return _strip_outer_parens(str(row["def"]).removeprefix("CHECK "))


def _strip_outer_parens(text: str) -> str:
    """``((a >= 0) AND (a <= 10))`` -> ``(a >= 0) AND (a <= 10)``."""
    while text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, char in enumerate(text):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0 and i < len(text) - 1:
                return text  # the first parenthesis closes before the end
        text = text[1:-1]
    return text


def _unique_message(exc: psycopg.errors.UniqueViolation) -> str:
    detail = exc.diag.message_detail or ""
    # "Key (run_name)=(x) already exists."
    if detail.startswith("Key "):
        return f"{exc.diag.table_name}: {detail.removeprefix('Key ').rstrip('.')}"
    return first_line(exc.diag.message_primary or str(exc))


def _foreign_key_message(exc: psycopg.errors.ForeignKeyViolation) -> str:
    detail = exc.diag.message_detail or ""
    if "is not present in table" in detail:
        return f"{exc.diag.table_name}: {detail.removeprefix('Key ').rstrip('.')}"
    if "is still referenced" in detail:
        return f"cannot delete: {detail.removeprefix('Key ').rstrip('.')}"
    return first_line(exc.diag.message_primary or str(exc))


__all__ = ["Connection", "first_line", "refusal_message", "translate_errors"]
