"""Connections, transactions, and the translation of database errors into domain errors.

``Database`` is the one way into PostgreSQL: it resolves the target (explicit URL,
environment, or the embedded server), connects in autocommit mode, and hands out explicit
transactions, one per unit of work, so no connection is ever left idle in a transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from . import embedded
from .errors import (
    AlreadyExists,
    DatabaseUnavailable,
    InvalidInput,
    LoraTrackerError,
    NotFound,
    SchemaNotInitialized,
)
from .settings import Target, mask_password, redact, resolve_target

log = logging.getLogger(__name__)

Connection = psycopg.Connection[dict[str, Any]]

CONNECT_TIMEOUT_S = 5


class Database:
    """A lazily opened connection to the resolved target.

    >>> with Database() as db:            # embedded default, started if needed
    ...     with db.transaction() as conn:
    ...         conn.execute("SELECT 1")
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        target: Target | None = None,
        auto_migrate: bool = True,
        on_connect: Callable[[Connection], None] | None = None,
    ) -> None:
        self.target = target or resolve_target(database_url)
        self.auto_migrate = auto_migrate
        self.on_connect = on_connect  # adapts each new connection (capture: NUL-safe)
        self._conn: Connection | None = None

    # -- connection --------------------------------------------------------------------
    def conninfo(self) -> str:
        """The libpq connection string (starts the embedded server if it is down)."""
        if self.target.url is not None:
            return self.target.url
        return embedded.ensure_running(self.target.home)

    def connect(self) -> Connection:
        """Open (once) and return the connection, with the schema checked or migrated."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = self._open()
        try:
            if self.on_connect is not None:
                self.on_connect(self._conn)
            self._check_schema(self._conn)
        except BaseException:
            self.close()
            raise
        return self._conn

    @property
    def conn(self) -> Connection:
        return self.connect()

    def _open(self) -> Connection:
        if self.target.embedded:
            conninfo = embedded.running_conninfo(self.target.home)
            if conninfo is not None:
                try:
                    return _connect(conninfo)
                except psycopg.OperationalError:
                    log.info("embedded server not answering; starting it")
            return _connect_or_raise(embedded.start(self.target.home), self.target)
        assert self.target.url is not None
        return _connect_or_raise(self.target.url, self.target)

    def _check_schema(self, conn: Connection) -> None:
        from . import migrations

        pending = migrations.pending_versions(conn)
        if not pending:
            return
        if self.auto_migrate and self.target.embedded:
            migrations.migrate(conn)
            return
        if self.auto_migrate and migrations.is_blank(conn):
            raise SchemaNotInitialized(
                f"{self.target.display()} has no lora-tracker schema: run `lora-tracker init`"
            )
        if self.auto_migrate:
            raise SchemaNotInitialized(
                f"{self.target.display()} lacks migrations {', '.join(pending)}: "
                "run `lora-tracker init`"
            )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- units of work -----------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One explicit transaction; database errors leave as domain errors."""
        conn = self.connect()
        with translate_errors(conn), conn.transaction():
            yield conn


def _connect(conninfo: str) -> Connection:
    # prepare_threshold=None: never prepare statements. A transaction-mode pooler (PgBouncer,
    # Supabase's port 6543) runs each transaction on any server connection, where a statement
    # prepared by another client may already hold the name "_pg3_0" or be missing altogether.
    return psycopg.connect(
        conninfo,
        autocommit=True,
        row_factory=dict_row,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name="lora-tracker",
        prepare_threshold=None,
    )


def _connect_or_raise(conninfo: str, target: Target) -> Connection:
    try:
        return _connect(conninfo)
    except (psycopg.ProgrammingError, UnicodeDecodeError) as exc:  # libpq cannot parse it
        raise _invalid_conninfo(exc, target.url or conninfo, target.display()) from None
    except psycopg.OperationalError as exc:
        reason = first_line(str(exc)) or type(exc).__name__
        # libpq messages may quote the conninfo or a piece of it: never let a password through.
        if target.url:
            reason = redact(reason, target.url)
        raise DatabaseUnavailable(f"cannot connect to {target.display()}: {reason}") from None


def parse_conninfo(conninfo: str) -> dict[str, str]:
    """The parameters of a URL or key=value connection string (password included).

    A malformed one is a one-line ``DatabaseUnavailable`` with the password masked.
    """
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(conninfo)
    except (psycopg.ProgrammingError, UnicodeDecodeError) as exc:
        raise _invalid_conninfo(exc, conninfo, mask_password(conninfo)) from None
    return {key: str(value) for key, value in params.items() if value is not None}


def _invalid_conninfo(exc: Exception, conninfo: str, shown: str) -> DatabaseUnavailable:
    if isinstance(exc, UnicodeDecodeError):  # e.g. "%AA": psycopg decodes values as UTF-8
        reason = "a %-escape in it is not UTF-8 text"
    else:
        # psycopg and libpq quote the piece they stumble on, which may be the password.
        reason = redact(first_line(str(exc)) or type(exc).__name__, conninfo)
    return DatabaseUnavailable(f"cannot connect to {shown}: invalid connection string: {reason}")


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


__all__ = ["Connection", "Database", "LoraTrackerError", "parse_conninfo", "translate_errors"]
