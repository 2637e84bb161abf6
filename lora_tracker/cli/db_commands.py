"""`init`, `sql` and `db ...`: setting up the database and talking to it directly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

import click

from ..errors import ConfigurationError, DatabaseUnavailable
from . import app_context
from .output import plural

if TYPE_CHECKING:
    from ..db import Database


def register(cli: click.Group) -> None:
    cli.add_command(init)
    cli.add_command(sql_command)
    cli.add_command(db_group)


@click.command()
@click.option("--examples", is_flag=True, help="Also load the reference document's 3 runs.")
@click.pass_context
def init(ctx: click.Context, examples: bool) -> None:
    """Create or upgrade the schema (safe to run again), optionally with example data."""
    from ..migrations import load_examples, migrate

    db = app_context(ctx).open_db(auto_migrate=False)
    conn = db.connect()
    applied = migrate(conn)
    target = db.target.display()
    if applied:
        click.echo(f"Applied migrations {', '.join(applied)} to {target}")
    else:
        click.echo(f"Schema is up to date on {target}")
    if examples:
        if load_examples(conn):
            click.echo("Example data loaded: 3 training runs, 13 epoch results, "
                       "2 caption versions")  # fmt: skip
        else:
            click.echo("Example data is already loaded: nothing added")


# ignore_unknown_options: a statement may start with an SQL comment, "-- ...".
@click.command(name="sql", context_settings={"ignore_unknown_options": True})
@click.argument("statement", required=False)
@click.option("--json", "fmt", flag_value="json", help="Print a JSON array of row objects.")
@click.option("--csv", "fmt", flag_value="csv", help="Print CSV with a header row.")
@click.option("--expanded/--no-expanded", default=None,
              help="One field per line (like psql's \\x). Default: when a row does not fit "
              "the terminal.")  # fmt: skip
@click.pass_context
def sql_command(
    ctx: click.Context, statement: str | None, fmt: str | None, expanded: bool | None
) -> None:
    """Run SQL on the current database and print the result.

    STATEMENT is run in one transaction; '-' reads it from standard input. With no
    STATEMENT, opens an interactive psql on the database.

    \b
      lora-tracker sql "SELECT * FROM training_comparison ORDER BY run_date DESC"
      lora-tracker sql --json "SELECT * FROM production_ready_epochs"
    """
    from ..rawsql import run_sql
    from .output import echo_rows, format_expanded, table_fits, terminal_width

    app = app_context(ctx)
    if statement is None:
        if fmt:
            raise click.UsageError("--json and --csv need a STATEMENT")
        _interactive_psql(app.db)
        return
    if statement == "-":
        statement = sys.stdin.read()
    results = run_sql(app.db.conn, statement)
    if fmt in ("json", "csv"):
        with_rows = [r for r in results if r.has_rows]
        if not with_rows:
            raise click.UsageError(f"--{fmt} needs a statement that returns rows")
        last = with_rows[-1]
        echo_rows(last.columns, last.rows, fmt)
        return
    width = terminal_width()
    for result in results:
        if result.has_rows:
            one_per_line = expanded
            if one_per_line is None:
                one_per_line = width is not None and not table_fits(
                    result.columns, result.rows, width
                )
            if one_per_line and result.rows:
                click.echo(format_expanded(result.columns, result.rows))
            else:
                echo_rows(result.columns, result.rows)
            click.echo(f"({plural(len(result.rows), 'row')})")
        else:
            click.echo(result.status)


def _interactive_psql(db: Database) -> None:
    from .. import embedded

    # The embedded package's own psql matches its server's version; prefer it there.
    shipped = embedded.psql_binary()
    candidates = (
        [shipped, shutil.which("psql")] if db.target.embedded else [shutil.which("psql"), shipped]
    )
    psql = next((str(c) for c in candidates if c), None)
    if psql is None:
        raise ConfigurationError("no psql found; install the PostgreSQL client or pass a STATEMENT")
    conninfo = db.conninfo()
    if not sys.stdin.isatty():
        raise click.UsageError("interactive psql needs a terminal; pass a STATEMENT or '-'")
    returncode = run_psql(psql, conninfo)
    if returncode != 0:
        raise click.exceptions.Exit(returncode)


def run_psql(psql: str, conninfo: str) -> int:
    """Run psql on ``conninfo`` with the password kept off its command line.

    Any user can read a process's arguments (``ps``); the password goes in a pass file that
    only this user can read, in a private temporary folder removed when psql exits.
    """
    import tempfile

    from psycopg.conninfo import make_conninfo

    from ..db import parse_conninfo

    params = parse_conninfo(conninfo)
    password = params.pop("password", None)
    env = os.environ.copy()
    with tempfile.TemporaryDirectory(prefix="lora-tracker-psql-") as folder:  # mode 0700
        if password is not None:
            passfile = os.path.join(folder, "pgpass")
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(f"*:*:*:*:{_pgpass_field(password)}\n")
            params["passfile"] = passfile
            env.pop("PGPASSWORD", None)  # it would win over the pass file
        return subprocess.run([psql, make_conninfo(**params)], check=False, env=env).returncode


def _pgpass_field(value: str) -> str:
    """A value escaped for a .pgpass line (backslash and colon are special)."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


@click.group(name="db")
def db_group() -> None:
    """The database target: status, connection URL, embedded server control."""


@db_group.command(name="status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def db_status(ctx: click.Context, as_json: bool) -> None:
    """Show the target (password masked), server version and applied migrations."""
    from ..status import database_status

    app = app_context(ctx)
    status = database_status(app.database_url)
    if as_json:
        import json

        from .output import to_jsonable

        click.echo(json.dumps(to_jsonable(status), indent=2))
        if "error" in status:
            raise click.exceptions.Exit(1)
        return
    click.echo(f"target:      {status['target']}  ({status['source']})")
    click.echo(f"data folder: {status['home']}")
    waiting = status["spool_waiting"]
    spool_line = f"{plural(waiting, 'event')} waiting" if waiting else "empty"
    if waiting:
        spool_line += " (`lora-tracker sync` replays them)"
    if status["spool_rejected"]:
        spool_line += f"; {status['spool_rejected']} rejected (spool/rejected.jsonl)"
    click.echo(f"spool:       {spool_line}")
    if "error" in status:
        raise DatabaseUnavailable(status["error"])
    click.echo(f"server:      {status['server_version']}")
    applied = status["applied_migrations"]
    pending = status["pending_migrations"]
    click.echo(f"migrations:  applied {_versions(applied) or 'none'}")
    if pending and status.get("migrations_automatic"):
        # the embedded database is migrated by whatever uses it first (watch, log, runs...)
        click.echo(
            f"             pending {_versions(pending)}: applied on first use "
            "(or now: `lora-tracker init`)"
        )
    elif pending:
        click.echo(f"             pending {_versions(pending)}: run `lora-tracker init`")
    for table, count in status["row_counts"].items():
        click.echo(f"  {table:<22} {plural(count, 'row')}")


def _versions(versions: list[str]) -> str:
    """Consecutive migrations as a range: ``0001-0006, 0008``."""
    parts: list[str] = []
    start = previous = None
    for version in [*versions, None]:
        number = int(version) if version is not None and version.isdigit() else None
        if number is not None and previous is not None and number == int(previous) + 1:
            previous = version
            continue
        if start is not None and previous is not None:
            parts.append(start if start == previous else f"{start}-{previous}")
        start = previous = version
        if version is not None and number is None:
            parts.append(version)
            start = previous = None
    return ", ".join(parts)


@db_group.command(name="url")
@click.option(
    "--show-password",
    is_flag=True,
    help="Print the password too (e.g. for psql in a script).",
)
@click.pass_context
def db_url(ctx: click.Context, show_password: bool) -> None:
    """Print the connection string of the target (password masked unless asked for)."""
    app = app_context(ctx)
    db = app.db
    if db.target.embedded:
        click.echo(db.conninfo())
    elif show_password:
        assert db.target.url is not None
        click.echo(db.target.url)
    else:
        click.echo(db.target.display())


@db_group.command(name="start")
@click.pass_context
def db_start(ctx: click.Context) -> None:
    """Start the embedded server (commands start it on demand; this is for scripts)."""
    from .. import embedded
    from ..settings import resolve_target

    target = resolve_target(app_context(ctx).database_url)
    if not target.embedded:
        raise click.UsageError("the target is not the embedded server")
    embedded.ensure_running(target.home)
    click.echo(f"Embedded PostgreSQL running in {embedded.pgdata_path(target.home)}")


@db_group.command(name="stop")
@click.pass_context
def db_stop(ctx: click.Context) -> None:
    """Stop the embedded server (it starts again on the next command)."""
    from .. import embedded
    from ..settings import resolve_target

    target = resolve_target(app_context(ctx).database_url)
    if not target.embedded:
        raise click.UsageError("the target is not the embedded server; nothing to stop")
    if embedded.stop(target.home):
        click.echo("Embedded PostgreSQL stopped")
    else:
        click.echo("Embedded PostgreSQL was not running")
