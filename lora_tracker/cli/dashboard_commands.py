"""`dashboard` and `report`: looking at the record as charts."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
from click.core import ParameterSource

from ..vocab import MODEL_TYPES
from . import app_context


def register(cli: click.Group) -> None:
    cli.add_command(dashboard)
    cli.add_command(report)


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. Any other than this machine's (127.0.0.1, ::1, localhost) "
    "makes the whole database readable from the network and needs --read-only or --token.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="0 picks a free port.",
)
@click.option(
    "--read-only",
    is_flag=True,
    help="Serve the page without any way to change the record (no scoring in the page).",
)
@click.option(
    "--token",
    metavar="VALUE",
    envvar="LORA_TRACKER_DASHBOARD_TOKEN",
    help="Writes (scoring in the page) need this token, entered once in the page. Default: "
    "a random token the page carries (this machine only). Env: LORA_TRACKER_DASHBOARD_TOKEN.",
)
@click.pass_context
def dashboard(ctx: click.Context, host: str, port: int, read_only: bool, token: str | None) -> None:
    """Serve the dashboard page: it refreshes as runs record new epochs, and judging in the
    page writes through the same rules as the CLI (unless --read-only)."""
    from ..dashboard.gate import is_loopback
    from ..dashboard.server import make_server

    if read_only and token is not None:
        raise click.UsageError("--read-only and --token exclude each other")
    if token is not None and len(token.strip()) < MIN_TOKEN_CHARS:
        raise click.BadParameter(f"use at least {MIN_TOKEN_CHARS} characters", param_hint="--token")
    if token is not None and not re.fullmatch(r"[!-~]+", token.strip()):
        # it travels in an HTTP header, which a browser only sends in plain ASCII
        raise click.BadParameter(
            "use letters, digits and punctuation only (no spaces or accents)",
            param_hint="--token",
        )
    if not is_loopback(host) and not read_only and token is None:
        raise click.UsageError(
            f"--host {host} makes the whole database readable from the network: add "
            "--read-only, or --token VALUE to allow writes with that token"
        )
    target = app_context(ctx).db.target
    app_context(ctx).db.connect()  # fail now, in one line, if the database is unreachable
    try:
        server = make_server(target, host, port, read_only=read_only,
                             token=token.strip() if token is not None else None)  # fmt: skip
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    if not is_loopback(host):
        click.echo(
            f"Warning: listening on {host}: anyone who can reach this machine can read the "
            "whole database" + ("." if read_only else "; writes need the token."),
            err=True,
        )
    mode = "read-only" if read_only else "writes need the token" if token else "writable"
    url = server.url
    if host in ("0.0.0.0", "::"):  # every address: name one a browser can open
        import socket

        url = f"http://{socket.gethostname()}:{server.server_address[1]}/"
    click.echo(f"Dashboard on {url} ({mode}; Ctrl-C to stop)", err=True)
    server.warm_recent()  # the newest runs' thumbnails, made in the background
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        click.echo("Stopped.", err=True)
    finally:
        server.server_close()


MIN_TOKEN_CHARS = 12

MD_ONLY = ("model_type", "caption_version", "since", "timeline_only", "analysis_only")


AGE = re.compile(r"^\s*(\d+)\s*(d|w|mo|y)\s*$")
AGE_DAYS = {"d": 1, "w": 7, "mo": 30, "y": 365}


def parse_since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """A date (2025-11-01, UTC), a moment (2025-11-01T12:00+02:00) or an age (30d, 2w, 6mo,
    1y), counted from the start of that UTC day so the report stays the same all day."""
    if value is None:
        return None
    age = AGE.match(value)
    if age:
        start = datetime.now(timezone.utc) - timedelta(
            days=int(age.group(1)) * AGE_DAYS[age.group(2)]
        )
        return start.replace(hour=0, minute=0, second=0, microsecond=0)
    text = value.strip()
    try:  # Python 3.10's fromisoformat does not read a trailing Z
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a date like 2025-11-01 or an age like 30d, 2w, 6mo"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "md"]),
    default="html",
    show_default=True,
    help="html: the dashboard page; md: the timeline and comparison analysis in Markdown.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write. Default: lora-tracker-report.html for html, standard output for md.",
)
@click.option(
    "--epochs-for",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="html: include the epochs of the newest N runs.",
)
@click.option("--model-type", type=click.Choice(MODEL_TYPES), help="md: only runs of this type.")
@click.option("--caption-version", metavar="NAME", help="md: only runs on these captions.")
@click.option(
    "--since",
    metavar="DATE|AGE",
    callback=parse_since,
    help="md: only runs started on or after DATE, or in the last AGE (30d, 2w, 6mo).",
)
@click.option("--timeline-only", is_flag=True, help="md: only the timeline table.")
@click.option("--analysis-only", is_flag=True, help="md: only the comparison analysis.")
@click.pass_context
def report(
    ctx: click.Context,
    fmt: str,
    output: Path | None,
    epochs_for: int,
    model_type: str | None,
    caption_version: str | None,
    since: datetime | None,
    timeline_only: bool,
    analysis_only: bool,
) -> None:
    """Write the record to share: the dashboard as one self-contained HTML file (charts, data
    and images inlined), or with --format md the reference document's two Markdown files,
    TRAINING_TIMELINE_TABLE.md (--timeline-only) and TRAINING_COMPARISON_ANALYSIS.md
    (--analysis-only)."""
    if fmt == "html":
        given = [name for name in MD_ONLY
                 if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT]  # fmt: skip
        if given:
            option = "--" + given[0].replace("_", "-")
            raise click.UsageError(f"{option} applies to --format md")
        _write_html(ctx, output or Path("lora-tracker-report.html"), epochs_for)
        return
    if ctx.get_parameter_source("epochs_for") is not ParameterSource.DEFAULT:
        raise click.UsageError("--epochs-for applies to --format html")
    if timeline_only and analysis_only:
        raise click.UsageError("--timeline-only and --analysis-only exclude each other")
    from ..markdown_report import ReportScope, render

    scope = ReportScope(model_type=model_type, caption_version=caption_version, since=since)
    with app_context(ctx).db.transaction() as conn:
        text = render(conn, scope, timeline=not analysis_only, analysis=not timeline_only)
    if output is None:
        click.echo(text, nl=False)
        return
    _write(output, text)
    click.echo(f"Wrote {output}", err=True)


def _write_html(ctx: click.Context, output: Path, epochs_for: int) -> None:
    from ..dashboard.server import write_report

    page = write_report(app_context(ctx).db.target, epochs_for=epochs_for)
    _write(output, page)
    click.echo(f"Wrote {output} ({len(page) / 1024 / 1024:.1f} MB)", err=True)


def _write(output: Path, text: str) -> None:
    try:
        # newline="": the same bytes on every platform (a file kept in git)
        with output.open("w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
