"""Connections and transactions (database errors become domain errors in ``pg.py``, whose
names this module re-exports).

``Database`` is the one way into PostgreSQL: it resolves the target (explicit URL,
environment, or the embedded server), connects in autocommit mode, and hands out explicit
transactions, one per unit of work, so no connection is ever left idle in a transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg.rows import dict_row

from . import embedded
from .errors import DatabaseUnavailable, LoraTrackerError, SchemaNotInitialized
from .pg import Connection, first_line, refusal_message, translate_errors
from .settings import Target, mask_password, redact, resolve_target

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5
AHEAD_ERROR_S = 5.0  # how long connect_ahead's failure stands for the next connect()


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
        self._connecting = threading.Lock()  # connect_ahead's thread and the first user
        self._ahead_error: tuple[float, Exception] | None = None

    # -- connection --------------------------------------------------------------------
    def conninfo(self) -> str:
        """The libpq connection string (starts the embedded server if it is down)."""
        if self.target.url is not None:
            return self.target.url
        return embedded.ensure_running(self.target.home)

    def connect(self) -> Connection:
        """Open (once) and return the connection, with the schema checked or migrated."""
        with self._connecting:
            failed = self._ahead_error
            self._ahead_error = None
            if failed is not None and time.monotonic() - failed[0] < AHEAD_ERROR_S:
                raise failed[1]  # what connect_ahead met just now: not met twice
            return self._connect()

    def connect_ahead(self) -> None:
        """Start connecting on a thread of its own, for a command with much to import first
        (`watch`: the connection is made, or the embedded server started, meanwhile; to a
        far database that is several round trips). `connect` returns that connection, or
        raises what the thread met, once."""

        def run() -> None:
            with self._connecting:
                try:
                    self._connect()
                except Exception as exc:  # for the next caller of connect()
                    self._ahead_error = (time.monotonic(), exc)

        threading.Thread(target=run, name="lora-tracker-connect", daemon=True).start()

    def _connect(self) -> Connection:
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

    @property
    def connected(self) -> Connection | None:
        """The connection when one was opened and not closed here (never opens one)."""
        return self._conn

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

        pending = migrations.pending_at_connect(conn)
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


__all__ = [
    "Connection",
    "Database",
    "LoraTrackerError",
    "first_line",
    "parse_conninfo",
    "refusal_message",
    "translate_errors",
]
