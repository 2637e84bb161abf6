"""Getting events into the database, or into the spool when it cannot be reached.

``EventDelivery.submit`` never raises for a database problem: the event is either recorded or
durably spooled, and the caller (a watcher, a hook, the CLI) carries on. Spooled events are
replayed, in order, before new ones whenever the database answers again.

This is the one door to the spool: sources (the watcher, the Python API's background
thread, the kohya hook) hand events to an ``EventDelivery`` and ask it to replay; none of
them opens the spool. One ``EventDelivery`` per process and target is shared by the API's
thread and the kohya hook's fallback watcher (``tracking.Dispatcher.delivery``); its
operations take turns on its one connection. Whoever creates an ``EventDelivery`` closes
it (a ``Watcher`` given one does not).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import psycopg

from ..db import Connection, Database
from ..errors import DatabaseUnavailable, LoraTrackerError, SchemaNotInitialized
from ..pg import translate_errors
from ..settings import Target, resolve_target
from ..spool import (
    ForAnotherDatabase,
    ReplayResult,
    Spool,
    SpoolWriteError,
    Unappliable,
    spool_for,
)
from .apply import Applied, KnownFiles, apply_event, apply_events, known_files, recorded_files
from .events import AnyEvent, event_from_json, event_to_dict, event_to_json
from .nul_safe import make_nul_safe

log = logging.getLogger(__name__)

Event = AnyEvent
# "unsaved": the database was unreachable and the spool could not be written either (a
# full disk); the caller still has the file and must offer it again later.
DeliveryOutcome = Literal[
    "recorded", "duplicate", "unmatched", "deleted", "spooled", "rejected", "unsaved"
]

T = TypeVar("T")

RETRY_AFTER_S = 5.0  # after a failure, how long to spool without trying the database


@dataclass
class BatchResult:
    outcomes: list[tuple[Event, DeliveryOutcome, Applied | None]] = field(default_factory=list)

    def count(self, outcome: DeliveryOutcome) -> int:
        return sum(1 for _, d, _ in self.outcomes if d == outcome)


class EventDelivery:
    """Delivers capture events to one database target, spooling what cannot go through."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        target: Target | None = None,
        retry_after_s: float = RETRY_AFTER_S,
        database: Database | None = None,
    ) -> None:
        """``database``: one already connecting (`Database.connect_ahead`), made with
        `make_nul_safe` as its ``on_connect``; its target is this delivery's."""
        self.target = database.target if database else target or resolve_target(database_url)
        self.retry_after_s = retry_after_s
        self.spool: Spool = spool_for(self.target.home)
        self._db: Database | None = database
        self._down_until = 0.0
        self._spool_error: str | None = None  # the spool's last write failure, until one works
        self._said_down = False  # the outage was logged (a line per outage, not per retry)
        # one thread at a time on the connection (the API's thread and a fallback watcher
        # may share this object); spooling alone and close() do not wait for it
        self._turn = threading.RLock()

    # -- database ------------------------------------------------------------------------
    def _database(self) -> Database:
        if self._db is None:
            self._db = Database(target=self.target, on_connect=make_nul_safe)
        return self._db

    def _mark_down(self, exc: Exception) -> None:
        if not self._said_down:  # once per outage, not at every retry
            # (a database whose schema is behind this version answers: it is not down)
            what = "not ready" if isinstance(exc, SchemaNotInitialized) else "unavailable"
            log.warning("database %s, events go to the spool: %s", what, exc)
            self._said_down = True
        self._down_until = time.monotonic() + self.retry_after_s
        if self._db is not None:
            self._db.close()
            self._db = None

    def _mark_up(self) -> None:
        if self._said_down:
            log.warning("database reachable again")
            self._said_down = False

    @property
    def database_down(self) -> bool:
        return time.monotonic() < self._down_until

    def close(self) -> None:
        """Close the connection (never waits: at exit, another thread may be stuck on it)."""
        db, self._db = self._db, None
        if db is not None:
            db.close()

    # -- the spool, seen from outside --------------------------------------------------------
    def pending(self) -> int:
        """How many events wait in the spool (for this database or another)."""
        return self.spool.pending()

    def nothing_spooled(self) -> bool:
        """No spool file at all: nothing waits, nothing cut off by a crash to set aside."""
        return not self.spool.path.exists()

    def keep(self, events: Iterable[Event]) -> list[DeliveryOutcome]:
        """Spool events without trying the database (at exit, when time has run out):
        ``spooled``, or ``unsaved`` if the spool cannot be written (said once in the log).
        Does not wait for another thread delivering through this object."""
        return [self._spool(event)[0] for event in events]

    # -- delivery -----------------------------------------------------------------------
    def submit(self, event: Event) -> tuple[DeliveryOutcome, Applied | None]:
        """Record one event, or spool it. Never raises for a database problem."""
        _, outcome, applied = self.submit_many([event]).outcomes[0]
        return outcome, applied

    def submit_many(self, events: Iterable[Event], batch_size: int = 200) -> BatchResult:
        """Record events in order, in transactions of up to ``batch_size`` events."""
        with self._turn:
            return self._submit_many(list(events), batch_size)

    def _submit_many(self, events: list[Event], batch_size: int) -> BatchResult:
        result = BatchResult()
        pending = list(events)
        if not pending:
            return result
        blocked = False  # older events for this database wait: new ones queue behind
        if self.spool.pending():
            blocked = True
            if not self.database_down:
                try:
                    replayed = self.replay()
                    blocked = replayed.remaining > replayed.elsewhere
                except SpoolWriteError as exc:  # applied events stay in it: skipped later
                    log.warning("%s", exc)
        if self.database_down or blocked:
            # keep order: while older events wait, new ones queue behind them
            for event in pending:
                result.outcomes.append((event, *self._spool(event)))
            return result
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            try:
                outcomes = self._apply_batch_retrying(batch)
                self._mark_up()
                result.outcomes.extend(outcomes)
                _log_new_runs(outcomes)
            except (DatabaseUnavailable, SchemaNotInitialized) as exc:
                self._mark_down(exc)
                for event in pending[start:]:
                    result.outcomes.append((event, *self._spool(event)))
                break
        return result

    def _apply_batch_retrying(
        self, batch: list[Event], attempts: int = 3
    ) -> list[tuple[Event, DeliveryOutcome, Applied | None]]:
        """A deadlock with another watcher rolls the whole batch back: run it again."""
        for attempt in range(attempts):
            try:
                return self._apply_batch(batch)
            except psycopg.Error as exc:
                if not _write_conflict(exc):
                    raise
                if attempt == attempts - 1:
                    raise DatabaseUnavailable(f"conflicting writers: {exc}") from None
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def _apply_batch(
        self, batch: list[Event]
    ) -> list[tuple[Event, DeliveryOutcome, Applied | None]]:
        """One transaction for the batch; if any event fails, the batch is rolled back
        and done again with a savepoint per event, so only the bad event is rejected."""
        db = self._database()
        try:
            with db.transaction() as conn:
                fast = apply_events(conn, batch, runs={})
            return [
                (event, applied.outcome, applied)
                for event, applied in zip(batch, fast, strict=True)
            ]
        except Exception as exc:
            _raise_if_transient(exc)  # else: find the culprit below
        outcomes: list[tuple[Event, DeliveryOutcome, Applied | None]] = []
        with db.transaction() as conn:
            for event in batch:
                try:
                    with translate_errors(conn):
                        applied = apply_event(conn, event)  # a savepoint each
                except Exception as exc:
                    _raise_if_transient(exc)
                    self._reject(event, exc)
                    outcomes.append((event, "rejected", None))
                    continue
                outcomes.append((event, applied.outcome, applied))
        return outcomes

    def _spool(self, event: Event) -> tuple[DeliveryOutcome, None]:
        try:
            self.spool.append(spooled_line(event, self.target))
        except OSError as exc:  # a full or read-only disk: say so once, the caller retries
            reason = f"{exc.strerror or exc}"
            if self._spool_error != reason:
                log.error(
                    "cannot write the spool (%s) while the database is unavailable: "
                    "events are kept in memory or found again on disk when it is back",
                    reason,
                )
            self._spool_error = reason
            return "unsaved", None
        if self._spool_error is not None:
            log.warning("the spool can be written again")
            self._spool_error = None
        return "spooled", None

    @property
    def spool_failing(self) -> bool:
        """True while the spool cannot be written (a full disk)."""
        return self._spool_error is not None

    def _reject(self, event: Event, exc: Exception) -> None:
        what, reason = _refusal(event, exc)
        try:
            kept = self.spool.reject(event_to_json(event), reason, identity=_identity(event))
            log.error("refused %s: %s (%skept in %s)", what, reason,
                      "" if kept else "already ", self.spool.rejected_path)  # fmt: skip
        except OSError as write_error:
            log.error("refused %s: %s", what, reason)
            log.error("could not keep the refused event in %s: %s", self.spool.rejected_path,
                      write_error.strerror or write_error)  # fmt: skip

    def known_files(self, host: str, folders: list[str]) -> KnownFiles | None:
        """What the database already holds under these folders (None if unreachable)."""
        return self._read(lambda conn: known_files(conn, host, folders))

    @property
    def rejected_path(self) -> Path:
        """Where events the database refuses are kept (the spool's rejected.jsonl)."""
        return self.spool.rejected_path

    def recorded_files(self, host: str, paths: list[str]) -> dict[str, dict[str, Any]]:
        """`apply.recorded_files` in one statement (empty if the database is unreachable)."""

        def ask(conn: Connection) -> dict[str, dict[str, Any]]:
            with translate_errors(conn):
                return recorded_files(conn, host, paths)

        return self.on_connection(ask) or {}

    def linked_images(self, paths: list[Path]) -> set[Path]:
        """The test images already linked and not written since (none if unreachable)."""
        if not paths:
            return set()
        from ..images.linking import untouched_since_linked

        return self._read(lambda conn: untouched_since_linked(conn, paths)) or set()

    def on_connection(self, work: Callable[[Connection], T]) -> T | None:
        """``work`` on this delivery's connection, between its writes (None when the
        database is down or cannot be reached: nothing is spooled for it). ``work`` runs
        its own transaction."""
        if self.database_down:
            return None
        with self._turn:
            try:
                return work(self._database().connect())
            except (DatabaseUnavailable, SchemaNotInitialized) as exc:
                self._mark_down(exc)
                return None

    def _read(self, work: Callable[[Connection], T]) -> T | None:
        """``work`` in a transaction of its own on this delivery's connection (None when
        the database is down or cannot be reached)."""

        def in_transaction(conn: Connection) -> T:
            with translate_errors(conn), conn.transaction():
                return work(conn)

        return self.on_connection(in_transaction)

    def replay(self, *, wait: bool = False) -> ReplayResult:
        """Apply spooled events in order; stops (keeping the rest) if the database fails.
        Cheap when nothing is spooled: a watcher calls it every few seconds."""
        if self.nothing_spooled():
            return ReplayResult()
        with self._turn:
            return self._replay(wait)

    def _replay(self, wait: bool) -> ReplayResult:

        def apply(line: str) -> None:
            spooled_for = _spooled_for(line)
            if spooled_for is not None and spooled_for != self.target.spool_tag:
                raise ForAnotherDatabase(spooled_for)
            try:
                event = event_from_json(line)
            except ValueError as exc:  # (pydantic's ValidationError is one)
                reason = f"unreadable event ({_reason(exc)})"
                log.error("refused a spooled event: %s (kept in %s)", reason, self.rejected_path)
                raise Unappliable(reason) from None
            try:
                with self._database().transaction() as conn:
                    applied = apply_event(conn, event)
                _log_new_runs([(event, applied.outcome, applied)])
            except SchemaNotInitialized as exc:
                raise DatabaseUnavailable(str(exc)) from None
            except Exception as exc:
                if isinstance(exc, psycopg.Error) and _write_conflict(exc):
                    # another writer: this event stays first in line, replayed next time
                    raise DatabaseUnavailable(f"conflicting writers: {_reason(exc)}") from None
                _raise_if_transient(exc)
                what, reason = _refusal(event, exc)
                log.error("refused %s: %s (kept in %s)", what, reason, self.rejected_path)
                raise Unappliable(reason) from None

        try:
            result = self.spool.replay(apply, wait=wait)
        except DatabaseUnavailable as exc:  # pragma: no cover - replay catches it itself
            self._mark_down(exc)
            return ReplayResult(remaining=self.spool.pending())
        if result.remaining > result.elsewhere:  # what waits for this database: it is down
            self._mark_down(DatabaseUnavailable(result.stopped_by or "replay stopped"))
        elif result.applied:
            self._mark_up()
            log.info("replayed %d spooled events", result.applied)
        return result


# SQLSTATE classes that say "not now" rather than "never": connection (08), out of disk or
# memory (53), cancelled or shutting down (57), I/O (58). A deadlock or serialization
# failure (40) is retried at once instead: see _write_conflict.
TRANSIENT_CLASSES = ("08", "53", "57", "58")


def _raise_if_transient(exc: Exception) -> None:
    """Re-raise what a later attempt may get through; return for a refusal of this event."""
    if isinstance(exc, (DatabaseUnavailable, SchemaNotInitialized)):
        raise exc
    if isinstance(exc, psycopg.Error) and _write_conflict(exc):
        raise exc  # the batch is retried
    if not isinstance(exc, psycopg.Error):
        return
    if exc.sqlstate is None:  # no answer from the server: the connection, or a client check
        if isinstance(exc, (psycopg.InterfaceError, psycopg.OperationalError)):
            raise DatabaseUnavailable(f"database connection lost: {_reason(exc)}") from None
    elif exc.sqlstate[:2] in TRANSIENT_CLASSES:
        raise DatabaseUnavailable(f"database error: {_reason(exc)}") from None


def _write_conflict(exc: psycopg.Error) -> bool:
    """A deadlock or serialization failure (SQLSTATE class 40): the transaction was rolled
    back whole and may simply run again. (psycopg's DeadlockDetected is no subclass of
    TransactionRollback: the SQLSTATE says it.)"""
    return (exc.sqlstate or "").startswith("40")


def _reason(exc: Exception) -> str:
    """One line for rejected.jsonl and the log."""
    pydantic = sys.modules.get("pydantic")  # (loaded wherever it raised: not imported here)
    if pydantic is not None and isinstance(exc, pydantic.ValidationError):
        parts = [
            ": ".join(p for p in (".".join(str(x) for x in e["loc"]), e["msg"]) if p)
            for e in exc.errors()[:3]
        ]
        return "; ".join(parts)
    if isinstance(exc, LoraTrackerError):
        return str(exc)
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _refusal(event: Event, exc: Exception) -> tuple[str, str]:
    """What the database refused (the file, else the event) and why, in one line each."""
    what = getattr(event, "path", None) or f"{event.kind} event {event.event_id}"
    return what, _reason(exc) + _which_numbers(event, exc)


INTEGER_RANGE = range(-(2**31), 2**31)  # PostgreSQL's integer (epochs and steps)


def _which_numbers(event: Event, exc: Exception) -> str:
    """`` (step 3000000000 is beyond ...)``: what the server's "integer out of range" was
    about, when the event's epoch or step is the number (its message names no column)."""
    if "out of range" not in str(exc):
        return ""
    numbers = [
        f"{name} {value}"
        for name in ("epoch", "step")
        if isinstance(value := getattr(event, name, None), int) and value not in INTEGER_RANGE
    ]
    if not numbers:
        return ""
    verb = "is" if len(numbers) == 1 else "are"
    return f" ({' and '.join(numbers)} {verb} beyond the database's integer)"


def _log_new_runs(outcomes: list[tuple[Event, DeliveryOutcome, Applied | None]]) -> None:
    """One line per run created, once its transaction is committed."""
    for _, _, applied in outcomes:
        if applied is not None and applied.new_run:
            log.info("new run %s", applied.run_name)


def spooled_line(event: Event, target: Target) -> str:
    """An event's spool line, naming the database it is for (``spooled_for``, which the
    event model ignores), so a replay into another database leaves it waiting."""
    document = event_to_json(event)
    return '{"spooled_for": ' + json.dumps(target.spool_tag) + ", " + document[1:]


def _identity(event: Event) -> str:
    """What ``event`` says, whenever and however often it was observed (its id and time
    left out): the same refused file met again is kept in rejected.jsonl once."""
    said = event_to_dict(event, exclude={"event_id", "observed_at"})
    return hashlib.sha256(json.dumps(said, sort_keys=True).encode()).hexdigest()


def _spooled_for(line: str) -> str | None:
    try:
        found = json.loads(line).get("spooled_for")
    except (ValueError, AttributeError):
        return None  # unreadable: the replay says why
    return found if isinstance(found, str) else None
