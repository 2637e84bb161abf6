"""The guard at launch: a training that repeats a failed configuration says so before its
first step.

The kohya launcher, the Python API (``start_run``) and the transformers callback hand the
settings they are about to record to :func:`start_check`; ``lora-tracker watch`` calls
:func:`check_recorded_run` for the first checkpoint of a new run. Both ask exactly what
``lora-tracker tried`` asks (:func:`lora_tracker.decisions.tried`: the same settings, numbers
equal within 1e-9 relative), on a thread of their own, and give the caller at most
:data:`TIME_LIMIT_S`: a database that is down, slow or hanging costs the training under a
second and one log line, never a traceback (``LORA_TRACKER_GUARD_TIMEOUT`` sets another
limit, in seconds, for a database far away).

Modes (``LORA_TRACKER_GUARD``, or ``--guard`` / ``guard=`` where a front end takes it):
``warn`` (default) logs a banner and training goes on; ``strict`` also stops the training
before its first step (exit status 3, as ``tried``), the run recorded as cancelled with the
reason; ``off`` checks nothing.

Only the standard library is imported at module level, and only what starting a check
needs: psycopg, the SQL and the banner's text tools come in on the check's own thread, so a
training thread never pays for them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ._background import after_caller
from .settings import Target, redact

log = logging.getLogger(__name__)

GUARD_ENV = "LORA_TRACKER_GUARD"
MODES = ("strict", "warn", "off")
DEFAULT_MODE = "warn"
EXIT_REPEATS_FAILURE = 3  # the same status as `lora-tracker tried`
TIME_LIMIT_S = 0.8  # the most a check may hold up its caller (thread start included)
TIME_LIMIT_ENV = "LORA_TRACKER_GUARD_TIMEOUT"
CONNECT_TIMEOUT_S = 2  # libpq's least; the caller has stopped waiting long before
STATEMENT_TIMEOUT_MS = 700
BANNER_WIDTH = 98  # fits a terminal of 100 columns
MAX_FAILED_SHOWN = 5

# the settings `tried` compares, in the order a person reads them
COMPARED = ("model_type", "base_model", "network_dim", "network_alpha", "resolution",
            "caption_version", "learning_rate", "optimizer")  # fmt: skip


def time_limit() -> float:
    """The most a check may hold up its caller, in seconds: ``LORA_TRACKER_GUARD_TIMEOUT``
    when it is a positive number, else :data:`TIME_LIMIT_S` (a bad value is not worth
    stopping a training for)."""
    text = os.environ.get(TIME_LIMIT_ENV, "").strip()
    try:
        value = float(text) if text else TIME_LIMIT_S
    except ValueError:
        value = TIME_LIMIT_S
    return value if 0 < value < float("inf") else TIME_LIMIT_S


class RepeatsFailedRun(SystemExit):
    """Strict mode stopped a training (Python API, transformers callback) before its first
    step: exit status 3 when not caught, as ``lora-tracker tried``."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_REPEATS_FAILURE)
        self.message = message

    def __str__(self) -> str:
        return self.message


def resolve_mode(given: str | None = None, *, source: str = GUARD_ENV) -> str:
    """``strict``, ``warn`` or ``off``: ``given``, else ``$LORA_TRACKER_GUARD``, else warn.

    ValueError (a one-line message naming where the value came from) for anything else.
    """
    if given is None:
        given, source = os.environ.get(GUARD_ENV) or None, GUARD_ENV
    if given is None:
        return DEFAULT_MODE
    mode = given.strip().lower()
    if mode not in MODES:
        raise ValueError(f"{source} must be strict, warn or off, not {given!r}")
    return mode


def mode_or_default(given: str | None = None) -> str:
    """:func:`resolve_mode` for front ends that never raise (the Python API): a bad value
    is logged and ``warn`` used."""
    try:
        return resolve_mode(given, source="guard")
    except ValueError as exc:
        log.warning("lora-tracker: %s; using warn", exc)
        return DEFAULT_MODE


def compared_settings(fields: dict[str, Any]) -> dict[str, Any]:
    """Of a run's fields, the settings `tried` compares, as the record stores them."""
    from .capture.checkpoint_metadata import _decimal, _int, _number, _resolution_text

    convert: dict[str, Callable[[Any], Any]] = {
        "network_dim": _int, "network_alpha": _decimal, "learning_rate": _number,
        "resolution": _resolution_text,
    }  # fmt: skip
    found: dict[str, Any] = {}
    for name in COMPARED:
        value = fields.get(name)
        if value is None or value == "":
            continue
        value = convert[name](value) if name in convert else str(value).strip()
        if value is not None and value != "":
            found[name] = value
    if found.get("network_dim") is not None and found["network_dim"] <= 0:
        del found["network_dim"]
    return found


@dataclass
class GuardResult:
    """What the record says about a configuration about to be trained."""

    settings: dict[str, Any] = field(default_factory=dict)
    failed: list[dict[str, Any]] = field(default_factory=list)  # equivalent runs that failed
    succeeded: list[dict[str, Any]] = field(default_factory=list)  # ... that succeeded
    skipped: str | None = None  # why nothing could be said
    elapsed_s: float = 0.0
    run_name: str | None = None  # the recorded run checked (the watcher's new run)
    more_runs: list[str] = field(default_factory=list)  # others with the same answer

    @property
    def repeats_failure(self) -> bool:
        return bool(self.failed)


class PendingCheck:
    """A check running on its own (daemon) thread. ``on_answer``, when given, is called on
    that thread with the result once the check ends (warn mode: nobody waits for it)."""

    def __init__(
        self,
        work: Callable[[], GuardResult],
        on_answer: Callable[[GuardResult], None] | None = None,
    ) -> None:
        self._started = time.monotonic()
        self._result: GuardResult | None = None
        self._done = threading.Event()

        def run() -> None:
            after_caller()  # the caller goes on before this thread's imports (_background)
            try:
                self._result = work()
            except Exception as exc:  # reported as a skip: never raised into training
                self._result = GuardResult(skipped=_reason(exc))
            finally:
                self._result = self._result or GuardResult(skipped="the check ended early")
                self._result.elapsed_s = time.monotonic() - self._started
                self._done.set()
            if on_answer is not None:
                try:
                    on_answer(self._result)
                except Exception:  # never a traceback in a training's console
                    log.debug("lora-tracker: reporting the launch check failed", exc_info=True)

        self._thread = threading.Thread(target=run, name="lora-tracker-guard", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the check (and its ``on_answer``) to end; False if it is still going."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self, limit: float | None = None) -> GuardResult:
        """The answer, waiting at most what is left of ``limit`` (default :func:`time_limit`)
        since the start; a check still running then is abandoned (its thread ends by its own
        time-outs)."""
        seconds = limit if limit is not None else time_limit()
        left = seconds - (time.monotonic() - self._started)
        finished = self._done.wait(max(left, 0.0))
        elapsed = time.monotonic() - self._started
        if not finished or self._result is None:
            return GuardResult(
                skipped=f"the database did not answer within {seconds:g} s", elapsed_s=elapsed
            )
        self._result.elapsed_s = elapsed
        return self._result


def start_check(
    target: Target,
    settings: Callable[[], dict[str, Any]],
    on_answer: Callable[[GuardResult], None] | None = None,
    *,
    leave_out: str | None = None,
) -> PendingCheck:
    """Start asking whether the configuration ``settings()`` returns (the run's fields,
    worked out on the check's thread) was tried before; ``on_answer`` as PendingCheck's.
    ``leave_out``: the name of the run being started, which `start_run` starts again when
    it exists: it is not another run with these settings (its record is never the reason
    to stop it, nor changed by a stop)."""

    def work() -> GuardResult:
        wanted = compared_settings(settings())
        if not wanted:
            return GuardResult()
        result = _ask(target, lambda conn: _equivalent(conn, wanted))
        if leave_out is not None:
            result.failed = [r for r in result.failed if r["run_name"] != leave_out]
            result.succeeded = [r for r in result.succeeded if r["run_name"] != leave_out]
        return result

    return PendingCheck(work, on_answer)


def check_recorded_run(target: Target, run_name: str, *, limit: float | None = None) -> GuardResult:
    """The same question for a run already recorded (the watcher's new run), by name."""
    return start_recorded_check(target, run_name).result(limit)


def start_recorded_check(target: Target, run_name: str) -> PendingCheck:
    """``check_recorded_run`` started on its own thread."""
    return PendingCheck(lambda: _ask(target, lambda conn: _recorded_answers(conn, [run_name])[0]))


def check_recorded_runs(
    conn: Any, run_names: list[str], url: str | None, *, questions: int | None = None
) -> list[GuardResult]:
    """``check_recorded_run`` for each of ``run_names`` on an open connection (a backfill's
    new runs, asked on its own connection once they are committed: no thread or connection
    each), in one read-only transaction with the same time-outs; runs with the same
    settings (a folder's trainings often share them) are asked about once, and at most
    ``questions`` settings are asked about (the runs of others get an empty answer).
    ``url`` is masked out of a reason given for skipping."""
    answers = _answer(conn, lambda conn: _recorded_answers(conn, run_names, questions), url)
    if isinstance(answers, GuardResult):  # skipped: the same reason for each
        return [GuardResult(skipped=answers.skipped, run_name=name) for name in run_names]
    return answers


def same_answers(results: list[GuardResult]) -> list[GuardResult]:
    """Results that say the same (the same failed and succeeded runs, or the same reason
    to skip) as one, naming its runs (`more_runs`); in the order of their first run."""
    merged: dict[tuple[Any, ...], GuardResult] = {}
    for result in results:
        key = (result.skipped, tuple(r["id"] for r in result.failed),
               tuple(r["id"] for r in result.succeeded))  # fmt: skip
        first = merged.get(key)
        if first is None:
            merged[key] = result
        elif result.run_name:
            first.more_runs.append(result.run_name)
    return list(merged.values())


def _recorded_answers(
    conn: Any, run_names: list[str], questions: int | None = None
) -> list[GuardResult]:
    from psycopg import sql

    columns = sql.SQL(", ").join(map(sql.Identifier, COMPARED))
    query = sql.SQL("SELECT id, run_name, {} FROM training_runs WHERE run_name = ANY(%s)")
    rows = {row["run_name"]: row for row in conn.execute(query.format(columns), (run_names,))}
    asked: dict[tuple[tuple[str, Any], ...], GuardResult] = {}
    results: list[GuardResult] = []
    for name in run_names:
        row = rows.get(name)
        if row is None:
            results.append(GuardResult())
            continue
        wanted = compared_settings(row)
        if not wanted:
            results.append(GuardResult(run_name=name))
            continue
        key = tuple(sorted(wanted.items()))
        if key not in asked and questions is not None and len(asked) >= questions:
            results.append(GuardResult())
            continue
        if key not in asked:
            asked[key] = _equivalent(conn, wanted)
        found = asked[key]
        results.append(GuardResult(
            settings=found.settings, run_name=name,
            failed=[r for r in found.failed if r["id"] != row["id"]],
            succeeded=[r for r in found.succeeded if r["id"] != row["id"]],
        ))  # fmt: skip
    return results


# a configuration is told apart by its training settings: with none of these known (only
# the model type, base model, resolution), "the same settings" would be most runs of that
# model, and the check says nothing rather than a banner about unrelated runs
TRAINING_SETTINGS = frozenset({"network_dim", "network_alpha", "learning_rate", "optimizer"})


def _equivalent(conn: Any, settings: dict[str, Any]) -> GuardResult:
    from .decisions import tried

    if TRAINING_SETTINGS.isdisjoint(settings):
        return GuardResult(settings=settings)
    found = tried(conn, settings)
    return GuardResult(
        settings=found.settings,
        failed=found.failed_before,
        succeeded=[r for r in found.equivalent if r["overall_verdict"] == "success"],
    )


def _statement_timeout_ms() -> int:
    """Long enough for the question within the caller's time limit, never shorter than
    :data:`STATEMENT_TIMEOUT_MS`."""
    return max(STATEMENT_TIMEOUT_MS, int(time_limit() * 1000) - 100)


def _ask(target: Target, question: Callable[[Any], GuardResult]) -> GuardResult:
    """Run ``question`` in one read-only transaction with short time-outs; an unreachable
    or schema-less database is a skip with its reason (password masked)."""
    import psycopg
    from psycopg.rows import dict_row

    from . import embedded

    conninfo = target.url
    if conninfo is None:
        conninfo = embedded.running_conninfo(target.home)
        if conninfo is None and not (embedded.pgdata_path(target.home) / "PG_VERSION").exists():
            return GuardResult()  # a new data folder: nothing recorded, nothing to say
        if conninfo is None:  # starting it takes seconds: the delivery thread does that
            return GuardResult(skipped="the embedded database is not running yet")
    try:
        with psycopg.connect(
            conninfo, autocommit=True, row_factory=dict_row, connect_timeout=CONNECT_TIMEOUT_S,
            application_name="lora-tracker guard", prepare_threshold=None,
        ) as conn:  # fmt: skip
            return _answer(conn, question, target.url)
    except psycopg.Error as exc:
        return _skipped(exc, target.url)


_Answer = TypeVar("_Answer")


def _answer(
    conn: Any, question: Callable[[Any], _Answer], url: str | None
) -> _Answer | GuardResult:
    """``question`` in one read-only transaction with a short statement time-out; a
    schema-less, slow or failing database is a skip with its reason (``url``'s password
    masked)."""
    import psycopg

    try:
        with conn.transaction():
            # read only, with a time-out, in one round trip; local to the transaction, not a
            # startup option: a transaction-mode pooler (PgBouncer) refuses unknown startup
            # options and keeps this
            conn.execute(
                "SELECT set_config('transaction_read_only', 'on', true), "
                "set_config('statement_timeout', %s, true)",
                (str(_statement_timeout_ms()),),
            )
            return question(conn)
    except psycopg.errors.UndefinedTable:
        return GuardResult(skipped="the database has no lora-tracker schema yet")
    except psycopg.errors.QueryCanceled:
        return GuardResult(skipped="the database was too slow to answer")
    except psycopg.Error as exc:
        return _skipped(exc, url)


def _skipped(exc: BaseException, url: str | None) -> GuardResult:
    """A skip for ``exc``, ``url``'s password masked out of its reason."""
    reason = _reason(exc)
    return GuardResult(skipped=redact(reason, url) if url else reason)


def _reason(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# -- what the trainer's console shows ---------------------------------------------------------


def report(
    result: GuardResult,
    mode: str,
    *,
    stops: bool,
    emit: Callable[[str], None] | None = None,
) -> None:
    """Say what the check found: the banner for a repeated failure, one line for a repeated
    success, one line when the check was skipped. ``stops``: this front end stops here in
    strict mode (the watcher cannot). ``emit`` takes each text (default: logged as a
    warning; the kohya launcher writes to its console, where kohya's rich log handler
    would re-wrap a block)."""

    def say(text: str) -> None:
        if emit is None:
            log.warning("%s", text)
        else:
            emit(text)

    if result.skipped:
        say(f"lora-tracker: launch check skipped: {escape_control(result.skipped)}")
        return
    if result.failed:
        say(banner(result, mode, stops=stops))
    if result.succeeded:
        say(success_line(result))


def banner(result: GuardResult, mode: str, *, stops: bool = True) -> str:
    """The failed runs with the same settings, as a block at most 100 columns wide
    (recorded text escaped). Starts with a newline so a log prefix stays out of it."""
    rule = "=" * BANNER_WIDTH
    count = len(result.failed)
    lines = [
        "", rule,
        f" !!! lora-tracker: THIS CONFIGURATION ALREADY FAILED "
        f"({count} earlier run{'s' if count != 1 else ''})",
    ]  # fmt: skip
    lines += wrapped("Settings: " + planned_text(result.settings), " ", "           ")
    for run in result.failed[:MAX_FAILED_SHOWN]:
        lines.append("")
        lines += wrapped(_run_heading(run), "  - ", "    ")
        findings = run.get("key_findings")
        if findings:
            lines += wrapped("findings: " + " ".join(str(findings).split()), "      ", " " * 16)
        issues = run.get("issues_found") or []
        if issues:
            lines += wrapped("issues: " + ", ".join(map(str, issues)), "      ", " " * 14)
        if not findings and not issues:
            lines.append("      (no findings or issues noted)")
    if count > MAX_FAILED_SHOWN:
        lines.append(f"  ... and {count - MAX_FAILED_SHOWN} more (`lora-tracker tried` lists them)")
    lines.append("")
    if mode == "strict" and stops:
        lines.append(f" Stopping before the first step ({GUARD_ENV}=strict).")
    elif not stops:
        seen = _seen_in([result.run_name, *result.more_runs] if result.run_name else [])
        lines += wrapped(
            f"Seen by lora-tracker watch{seen}, which cannot stop a training (the launcher's "
            f"--guard strict or {GUARD_ENV}=strict stops one before it starts).", " ", " ",
        )  # fmt: skip
    else:
        lines.append(f" Training goes on. {GUARD_ENV}=strict stops here; =off skips this check.")
    lines.append(rule)
    return escape_control("\n".join(lines))


def _seen_in(runs: list[str]) -> str:
    """`` in run A`` / `` in runs A, B and C`` / `` in runs A, B, ... and 7 more``."""
    if not runs:
        return ""
    if len(runs) == 1:
        return f" in run {runs[0]}"
    shown = runs[:MAX_FAILED_SHOWN]
    rest = len(runs) - len(shown)
    if rest:
        return f" in runs {', '.join(shown)} and {rest} more"
    return f" in runs {', '.join(shown[:-1])} and {shown[-1]}"


def success_line(result: GuardResult) -> str:
    """One line naming the best earlier success with the same settings."""
    best = result.succeeded[0]
    more = len(result.succeeded) - 1
    text = (
        f"lora-tracker: these settings already succeeded: run {best['run_name']} "
        f"(quality {_quality(best)}, {_best_epoch(best)})"
        + (f" and {more} more" if more > 0 else "")
    )
    return escape_control(" ".join(text.split()), keep_newlines=False)


def cancel_reason(result: GuardResult) -> str:
    """The failure_reason of a run strict mode stopped."""
    names = ", ".join(str(r["run_name"]) for r in result.failed[:MAX_FAILED_SHOWN])
    more = len(result.failed) - MAX_FAILED_SHOWN
    if more > 0:
        names += f" and {more} more"
    return (
        f"stopped by lora-tracker's guard ({GUARD_ENV}=strict) before the first step: "
        f"the same configuration already failed in {names}"
    )


def planned_text(settings: dict[str, Any]) -> str:
    """``network_dim=16 learning_rate=0.0001 ...`` as `tried` prints the planned settings."""
    return " ".join(f"{k}={_plain(v)}" for k, v in settings.items())


def _run_heading(run: dict[str, Any]) -> str:
    date: Any = run.get("run_date")
    when = date.strftime("%Y-%m-%d %H:%M") if hasattr(date, "strftime") else _or_unknown(date)
    return f"{run['run_name']}  {when}  verdict {run['overall_verdict']}, quality {_quality(run)}"


def _quality(run: dict[str, Any]) -> str:
    score = run.get("quality_score")
    return f"{score}/10" if score is not None else "not scored"


def _best_epoch(run: dict[str, Any]) -> str:
    epoch = run.get("best_epoch")
    return "best epoch not set" if epoch is None else f"best epoch {epoch}"


def _or_unknown(value: Any) -> str:
    return "?" if value is None else str(value)


def _plain(value: Any) -> str:
    from decimal import Decimal

    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def wrapped(text: str, first: str, rest: str, width: int = BANNER_WIDTH) -> list[str]:
    """``text`` escaped and wrapped to ``width`` as the banner's lines (``first`` and
    ``rest``: the indents of its first and later lines)."""
    import textwrap

    return textwrap.wrap(
        escape_control(text, keep_newlines=False), width=width,
        initial_indent=first, subsequent_indent=rest, break_on_hyphens=False,
    ) or [first.rstrip()]  # fmt: skip


def escape_control(text: str, *, keep_newlines: bool = True) -> str:
    """``control_chars.escape_control``, imported when a banner is made (on the check's
    thread), not when a training starts a check."""
    from .control_chars import escape_control as escape

    return escape(text, keep_newlines=keep_newlines)
