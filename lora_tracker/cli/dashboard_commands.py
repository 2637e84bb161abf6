"""`dashboard` and `report`: looking at the record as charts."""

from __future__ import annotations

from pathlib import Path

import click

from . import app_context


def register(cli: click.Group) -> None:
    cli.add_command(dashboard)
    cli.add_command(report)


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (the default is this machine only).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="0 picks a free port.",
)
@click.pass_context
def dashboard(ctx: click.Context, host: str, port: int) -> None:
    """Serve a read-only dashboard page that refreshes as runs record new epochs."""
    from ..dashboard.server import make_server

    target = app_context(ctx).db.target
    app_context(ctx).db.connect()  # fail now, in one line, if the database is unreachable
    try:
        server = make_server(target, host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    click.echo(f"Dashboard on {server.url} (Ctrl-C to stop)", err=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        click.echo("Stopped.", err=True)
    finally:
        server.server_close()


@click.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("lora-tracker-report.html"),
    show_default=True,
)
@click.option(
    "--epochs-for",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Include the epochs of the newest N runs.",
)
@click.pass_context
def report(ctx: click.Context, output: Path, epochs_for: int) -> None:
    """Write the dashboard as one self-contained HTML file (charts, data and images inlined)."""
    from ..dashboard.server import write_report

    page = write_report(app_context(ctx).db.target, epochs_for=epochs_for)
    try:
        output.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"Wrote {output} ({len(page) / 1024 / 1024:.1f} MB)", err=True)
