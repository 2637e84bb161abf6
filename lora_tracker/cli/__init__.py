"""The `lora-tracker` command: a thin layer over the library.

Commands parse options, call the library, and format results. Errors are turned into
one-line messages here, at one boundary: domain errors exit 1, usage errors (and the
library's InvalidRequest: a request that contradicts itself) exit 2.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

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


@click.group(cls=TrackerGroup, context_settings=CONTEXT_SETTINGS)
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


from . import browse_commands as browse_commands  # noqa: E402  (each registers on `cli`)
from . import capture_commands as capture_commands  # noqa: E402
from . import catalog_commands as catalog_commands  # noqa: E402
from . import dashboard_commands as dashboard_commands  # noqa: E402
from . import db_commands as db_commands  # noqa: E402
from . import decide_commands as decide_commands  # noqa: E402
from . import image_commands as image_commands  # noqa: E402
from . import judge_commands as judge_commands  # noqa: E402

for _module in (
    db_commands,
    capture_commands,
    browse_commands,
    judge_commands,
    catalog_commands,
    decide_commands,
    dashboard_commands,
    image_commands,
):
    _module.register(cli)


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="lora-tracker", standalone_mode=True))
