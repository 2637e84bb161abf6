"""The `lora-tracker` command: a thin layer over the library.

Commands parse options, call the library, and format results. Errors are turned into
one-line messages here, at one boundary: domain errors exit 1, usage errors (and the
library's InvalidRequest: a request that contradicts itself) exit 2.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .. import __version__
from ..errors import InvalidRequest, InvalidValue, LoraTrackerError

if TYPE_CHECKING:
    from ..db import Database

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class AppContext:
    """What every command gets: the database target, opened on first use."""

    def __init__(self, database_url: str | None) -> None:
        self.database_url = database_url
        self._db: Database | None = None

    def open_db(self, *, auto_migrate: bool = True) -> Database:
        """The database for this invocation (connected lazily, closed at exit)."""
        if self._db is None:
            from ..db import Database

            self._db = Database(self.database_url, auto_migrate=auto_migrate)
            imports_done()  # a command opens its database once it has what it needs
        return self._db

    @property
    def db(self) -> Database:
        return self.open_db()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """Around a library call inside a command: the library's InvalidRequest (the request
    contradicts itself) becomes a click usage error raised in the command, so the message
    points at the command's --help; InvalidValue names the option of its field."""
    try:
        yield
    except InvalidValue as exc:
        option = "--" + exc.field.replace("_", "-")
        raise click.BadParameter(str(exc), param_hint=option) from None
    except InvalidRequest as exc:
        raise click.UsageError(str(exc)) from None


def app_context(ctx: click.Context) -> AppContext:
    """The AppContext of the root command."""
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext)
    return obj


class OneLineUsageError(click.UsageError):
    """A usage error shown as one line (exit 2), pointing at --help."""

    def show(self, file: Any = None) -> None:
        hint = ""
        if self.ctx is not None:
            hint = f" (see: {self.ctx.command_path} --help)"
        click.echo(f"Error: {self.format_message()}{hint}", err=True, file=file)


class TrackerGroup(click.Group):
    """A click group that renders lora-tracker errors as one line, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OneLineUsageError:
            raise
        except click.UsageError as exc:
            raise OneLineUsageError(_one_line(exc.format_message()), exc.ctx) from None
        except InvalidValue as exc:
            option = "--" + exc.field.replace("_", "-")
            message = click.BadParameter(str(exc), param_hint=option).format_message()
            raise OneLineUsageError(_one_line(message), None) from None
        except LoraTrackerError as exc:
            if exc.exit_code == 2:  # the request itself is wrong: a usage error
                raise OneLineUsageError(_one_line(str(exc)), None) from None
            raise click.ClickException(_one_line(str(exc))) from None
        except click.ClickException as exc:
            if exc.exit_code != 1:
                raise
            raise click.ClickException(_one_line(exc.message)) from None
        except Exception as exc:
            from pydantic import ValidationError

            if isinstance(exc, ValidationError):
                from ..models import render_validation_error

                raise click.ClickException(_one_line(render_validation_error(exc))) from None
            if _is_write_conflict(exc):
                raise click.ClickException(
                    "another writer was changing the same rows at the same moment (a "
                    "deadlock): nothing was changed; run the command again"
                ) from None
            raise


def _is_write_conflict(exc: Exception) -> bool:
    """A deadlock or serialization failure: the transaction was rolled back whole."""
    import psycopg

    # class 40: serialization failure, deadlock (psycopg's DeadlockDetected is no
    # TransactionRollback subclass, so the SQLSTATE says it)
    return isinstance(exc, psycopg.Error) and (exc.sqlstate or "").startswith("40")


def _one_line(message: str) -> str:
    """An error message on one line, with the control characters of recorded text (run
    names, paths, metadata) escaped."""
    from .output import escape_control

    lines = [line.strip() for line in message.split("\n")]
    return escape_control(" ".join(line for line in lines if line), keep_newlines=False)


# Every command, by name: where it lives ("module:attribute" under lora_tracker.cli) and
# the first paragraph of its help. `lora-tracker --help` lists them from here, and a
# command's module is imported only when that command runs (or its own --help is asked
# for): a command's start-up does not pay for the others' imports. Each module's
# ``register`` names the commands it defines; tests/test_cli_lazy.py checks this table
# against them and against each command's own help, so the two cannot drift apart.
COMMANDS: dict[str, tuple[str, str]] = {
    "caption": ("catalog_commands:caption",
                "Caption versions: which captions a run was trained on."),
    "cleanup": ("decide_commands:cleanup",
                "Delete old runs (with their epochs and prompt results), after showing them."),
    "compare": ("browse_commands:compare",
                "Runs side by side: configuration (differences marked *), verdicts, scores "
                "per epoch."),
    "dashboard": ("dashboard_commands:dashboard",
                  "Serve the dashboard page: it refreshes as runs record new epochs, and "
                  "judging in the page writes through the same rules as the CLI (unless "
                  "--read-only)."),
    "db": ("db_commands:db_group",
           "The database target: status, connection URL, embedded server control."),
    "delete": ("decide_commands:delete",
               "Delete one run from the record: its epochs, prompt results and test image "
               "links go with it (shown first; asks unless --yes). Files on disk stay."),
    "epoch": ("judge_commands:epoch_group", "Epochs recorded by mistake."),
    "export": ("decide_commands:export", "Export a table or view as CSV or JSON."),
    "images": ("image_commands:images",
               "Link test images (A1111, Forge, SD.Next, ComfyUI) to the epochs that made them."),
    "init": ("db_commands:init",
             "Create or upgrade the schema (safe to run again), optionally with example "
             "data."),
    "new": ("judge_commands:new_run",
            "Record a run by hand (before or while training, without a watcher or hook)."),
    "prompt": ("catalog_commands:prompt", "Test prompts, and each epoch's result on them."),
    "record": ("capture_commands:record",
               "Record checkpoint files (or every checkpoint in a folder) once, now."),
    "report": ("dashboard_commands:report",
               "Write the record to share: the dashboard as one self-contained HTML file "
               "(charts, data and images inlined), or with --format md the reference "
               "document's two Markdown files, TRAINING_TIMELINE_TABLE.md (--timeline-only) "
               "and TRAINING_COMPARISON_ANALYSIS.md (--analysis-only)."),
    "runs": ("browse_commands:runs_command",
             "List runs, newest first, with their epoch statistics (the training_comparison "
             "view)."),
    "score": ("judge_commands:score",
              "Score a recorded epoch of RUN: sets only what is given, and says what changed."),
    "show": ("browse_commands:show",
             "One run: its configuration, judgement, epochs (scores, flags, loss, samples) "
             "and the epoch x prompt grid."),
    "sql": ("db_commands:sql_command", "Run SQL on the current database and print the result."),
    "stats": ("decide_commands:stats",
              "Success rate per model type, best parameters, issue frequency, failure "
              "patterns."),
    "sync": ("capture_commands:sync",
             "Replay events waiting in the local spool (the watcher also does this by "
             "itself)."),
    "tried": ("decide_commands:tried",
              "Before you train: has this configuration been tried, and how did it go?"),
    "verdict": ("judge_commands:verdict",
                "Record the verdict on RUN: sets only what is given, and says what changed."),
    "watch": ("capture_commands:watch",
              "Record every checkpoint in FOLDERS (recursively), then each new one as it is "
              "saved."),
}  # fmt: skip


class LazyTrackerGroup(TrackerGroup):
    """The root group: knows its commands by name (``COMMANDS``) and imports a command's
    module only when that command is looked up to run; its --help lists them from the
    table (the same one-line help click would cut from each command's docstring)."""

    def __init__(
        self, *args: Any, lazy_commands: Mapping[str, tuple[str, str]], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands)
        self._listing_only = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in self.lazy_commands:
            return self.commands.get(cmd_name)
        where, help_text = self.lazy_commands[cmd_name]
        if self._listing_only:  # --help of the root: the name and its help are enough
            return click.Command(cmd_name, help=help_text)
        return self._load(cmd_name, where)

    def _load(self, cmd_name: str, where: str) -> click.Command:
        module_name, attribute = where.split(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        command = getattr(module, attribute)
        if not isinstance(command, click.Command) or command.name != cmd_name:
            raise RuntimeError(
                f"lora_tracker.cli.COMMANDS: {where} is not the {cmd_name!r} command"
            )
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing_only = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            self._listing_only = False

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and self.get_command(ctx, args[0]) is None:
            # unknown: click's error suggests close names from the commands it holds
            for name in self.lazy_commands:
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


@click.group(cls=LazyTrackerGroup, lazy_commands=COMMANDS, context_settings=CONTEXT_SETTINGS)
@click.option(
    "--database-url",
    metavar="URL",
    help="PostgreSQL URL. Default: $LORA_TRACKER_DATABASE_URL, else the embedded server "
    "in $LORA_TRACKER_HOME.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what the library does to stderr.")
@click.version_option(__version__, "--version", prog_name="lora-tracker")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, verbose: bool) -> None:
    """Keep a complete, queryable record of every LoRA training experiment."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    app = AppContext(database_url)
    ctx.obj = app
    ctx.call_on_close(app.close)


_GC_PAUSED = False


def imports_done() -> None:
    """The command has imported what it needs: what exists now lives as long as the process
    (frozen out of the collector's full passes) and collecting resumes. `main` pauses the
    collector while a command imports its modules: their objects are all long-lived, and
    the passes they set off cost a command about 15 ms. A command that never gets here
    is a short one (help, a usage error): the process ends soon."""
    global _GC_PAUSED
    if _GC_PAUSED:  # only in the `lora-tracker` process, not when `cli` runs in tests
        _GC_PAUSED = False
        gc.freeze()
        gc.enable()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """While a backfill runs in this process (`watch`): it makes objects by the thousand
    that all live until they are delivered, and the cyclic collector's passes over them
    free nothing (reference counting frees what it always does) and cost about 15 ms for
    500 files. The collector resumes after, unless it was off already. (Only here, in the
    command's process: never in a training process that a hook's watcher runs in.)"""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def main() -> None:
    """Console-script entry point."""
    global _GC_PAUSED
    if gc.isenabled():
        gc.disable()
        _GC_PAUSED = True  # until imports_done()
    try:
        cli.main(prog_name="lora-tracker", standalone_mode=True)
    except SystemExit as exc:
        _exit(exc.code)
    except OSError as exc:  # output that cannot be written (a full disk): one line
        click.echo(f"Error: {exc}", err=True)
        _exit(1)
    _exit(0)


def _exit(code: str | int | None) -> NoReturn:
    """End the process with ``code`` once the command is done, without the interpreter's
    teardown: freeing every module and object one by one costs a short command a large
    part of its time (about 0.1 s after `watch --once` of 500 files). Exit handlers run
    and output is flushed as at any exit; with another thread still running, the
    ordinary exit (which waits for it) is taken, as it is under a profiler or a coverage
    tracer (they write their results at teardown)."""
    import atexit
    import threading

    if threading.active_count() > 1 or sys.getprofile() or sys.gettrace():
        sys.exit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # as sys.exit does with a message
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): what was read is read
            status = status or 1
    os._exit(status)
