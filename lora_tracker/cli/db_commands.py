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
        load_examples(conn)
        click.echo("Example data loaded: 3 training runs, 13 epoch results, 2 caption versions")


# ignore_unknown_options: a statement may start with an SQL comment, "-- ...".
@click.command(name="sql", context_settings={"ignore_unknown_options": True})
@click.argument("statement", required=False)
@click.option("--json", "fmt", flag_value="json", help="Print a JSON array of row objects.")
@click.option("--csv", "fmt", flag_value="csv", help="Print CSV with a header row.")
@click.pass_context
def sql_command(ctx: click.Context, statement: str | None, fmt: str | None) -> None:
    """Run SQL on the current database and print the result.

    STATEMENT is run in one transaction; '-' reads it from standard input. With no
    STATEMENT, opens an interactive psql on the database.

    \b
      lora-tracker sql "SELECT * FROM training_comparison ORDER BY run_date DESC"
      lora-tracker sql --json "SELECT * FROM production_ready_epochs"
    """
    from ..rawsql import run_sql
    from .output import echo_rows

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
    for result in results:
        if result.has_rows:
            echo_rows(result.columns, result.rows)
            noun = "row" if len(result.rows) == 1 else "rows"
            click.echo(f"({len(result.rows)} {noun})")
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
    completed = subprocess.run([psql, conninfo], check=False, env=os.environ.copy())
    if completed.returncode != 0:
        raise click.exceptions.Exit(completed.returncode)


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
    spool_line = f"{waiting} events waiting" if waiting else "empty"
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
    click.echo(f"migrations:  applied {', '.join(applied) or 'none'}")
    if pending and status.get("migrations_automatic"):
        # the embedded database is migrated by whatever uses it first (watch, log, runs...)
        click.echo(
            f"             pending {', '.join(pending)}: applied on first use "
            "(or now: `lora-tracker init`)"
        )
    elif pending:
        click.echo(f"             pending {', '.join(pending)}: run `lora-tracker init`")
    for table, count in status["row_counts"].items():
        click.echo(f"  {table:<22} {count} rows")


@db_group.command(name="url")
@click.pass_context
def db_url(ctx: click.Context) -> None:
    """Print the connection string of the target (passwords masked), for psql and others."""
    app = app_context(ctx)
    db = app.db
    if db.target.embedded:
        click.echo(db.conninfo())
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
