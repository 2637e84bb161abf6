"""`tried`, `stats`, `export` and `cleanup`: deciding from the record."""

from __future__ import annotations

import re
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from ..guard import EXIT_REPEATS_FAILURE
from ..vocab import MODEL_TYPES
from . import app_context, usage_errors
from .options import FINITE_RATE, FINITE_ZERO_OR_MORE, choice
from .output import (
    Layout,
    confirm_or_stop,
    echo,
    echo_records,
    echo_wrapped,
    escape_control,
    format_csv,
    format_json,
    json_text,
    layout_options,
    plural,
    terminal_width,
)

EXIT_TRIED_AND_FAILED = EXIT_REPEATS_FAILURE  # the launch guard's strict mode exits the same
# how it went first, then the settings: a narrow terminal leaves out the columns on the right
TRIED_TABLE = ("run_name", "overall_verdict", "quality_score", "network_dim", "network_alpha",
               "resolution", "learning_rate", "model_type", "key_findings", "run_date",
               "caption_version", "best_epoch")  # fmt: skip


def register(cli: click.Group) -> None:
    cli.add_command(tried)
    cli.add_command(stats)
    cli.add_command(export)
    cli.add_command(cleanup)
    cli.add_command(delete)


@click.command()
@click.option("--model-type", type=choice(MODEL_TYPES))
@click.option("--network-dim", type=click.IntRange(min=1))
@click.option("--network-alpha", type=FINITE_ZERO_OR_MORE)
@click.option("--resolution", metavar="WxH")
@click.option("--caption-version", metavar="NAME")
@click.option("--learning-rate", type=FINITE_RATE)
@click.option("--optimizer")
@click.option("--base-model")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A kohya config to read the settings from: sd-scripts' TOML (--config_file), or "
    "the kohya_ss GUI's saved JSON or TOML. Options given as well win.",
)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@layout_options
@click.pass_context
def tried(
    ctx: click.Context,
    /,
    config_path: Path | None,
    limit: int,
    as_json: bool,
    columns: str | None,
    wide: bool,
    **options: Any,
) -> None:
    """Before you train: has this configuration been tried, and how did it go?

    Lists past runs with the same settings, then runs with some of them (numbers within
    a factor of 2). Exits 3, saying so loudly, when the same configuration already failed.
    """
    from ..decisions import planned_settings
    from ..decisions import tried as find_tried

    layout = Layout(columns, wide)
    with usage_errors():
        planned = planned_settings(options, config_path)
    settings = planned.settings
    read_from = ""
    if planned.config is not None:
        config = planned.config
        used = ", ".join(config.used) or "none of its keys"
        unused = config.unused
        not_compared = (", ".join(unused) if len(unused) <= 8
                        else f"{plural(len(unused), 'other key')} (--json lists them)")  # fmt: skip
        read_from = (f"Read {config_path} ({config.kind}): used {used}; "
                     f"not compared: {not_compared or 'nothing else'}")  # fmt: skip
    if not settings:
        raise click.UsageError("give the planned settings (--network-dim, ...) or --config")
    with app_context(ctx).db.transaction() as conn:
        result = find_tried(conn, settings, limit=limit)
    failed = result.failed_before
    if as_json:
        click.echo(json_text({
            "settings": settings, "equivalent": result.equivalent, "nearby": result.nearby,
            "failed_before": bool(failed), "config": planned.config_report(),
        }))  # fmt: skip
    else:
        if read_from:
            echo(read_from, err=True)
        planned_text = " ".join(f"{k}={_plain(v)}" for k, v in settings.items())
        echo(f"Planned: {planned_text}\n")
        if result.equivalent:
            click.echo(f"Tried before with the same settings ({len(result.equivalent)}):")
            echo_records(result.equivalent, None, TRIED_TABLE, layout=layout)
        else:
            click.echo("Never tried with exactly these settings.")
        if result.nearby:
            click.echo(f"\nNearby runs ({len(result.nearby)}), most alike first:")
            echo_records(result.nearby, None, ("matching", *TRIED_TABLE), layout=layout)
    if failed:
        import shutil

        from ..guard import wrapped

        width = min(shutil.get_terminal_size((100, 24)).columns, 100)
        lines = ["", "!!! THIS CONFIGURATION ALREADY FAILED:"]
        for r in failed:  # a run a line, wrapped to the terminal (a line was 160 wide)
            said = (
                f"{r['run_name']} ({r['quality_score'] if r['quality_score'] is not None else '?'}"
                f"/10: {shorten(r['key_findings'] or '; '.join(r['issues_found']) or 'no notes')})"
            )
            lines += wrapped(said, "    - ", "      ", width)
        click.secho("\n".join(lines), fg="red", bold=True, err=True)
        ctx.exit(EXIT_TRIED_AND_FAILED)


def _plain(value: Any) -> str:
    from .output import human_number

    return human_number(value) if isinstance(value, (int, float, Decimal)) else str(value)


def shorten(text: str, width: int = 90) -> str:
    """One line of at most ``width`` characters, cut at a word."""
    import textwrap

    return textwrap.shorten(" ".join(text.split()), width=width, placeholder=" ...")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print every table as JSON.")
@click.option("--wide", is_flag=True, help="Show every column, however wide the table gets.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool, wide: bool) -> None:
    """Success rate per model type, best parameters, issue frequency, failure patterns."""
    from ..decisions import STATS_TITLES
    from ..decisions import stats as compute

    with app_context(ctx).db.transaction() as conn:
        found = compute(conn)
    if as_json:
        click.echo(json_text(found))
        return
    for index, (name, rows) in enumerate(found.items()):
        if index:
            click.echo()
        click.echo(STATS_TITLES[name])
        echo_records(rows, None, empty="  (no data yet)", layout=Layout(None, wide))


@click.command()
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
              show_default=True)  # fmt: skip
@click.option("--what", default="runs", show_default=True,
              type=click.Choice(["runs", "epochs", "training_comparison", "best_training_runs",
                                 "production_ready_epochs", "captions", "prompts",
                                 "prompt-results", "checkpoints"]),
              help="A table or view.")  # fmt: skip
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of standard output.",
)
@click.pass_context
def export(ctx: click.Context, fmt: str, what: str, output: Path | None) -> None:
    """Export a table or view as CSV or JSON."""
    from ..export import export_rows

    with app_context(ctx).db.transaction() as conn:
        columns, rows = export_rows(conn, what)
    text = format_csv(columns, rows) if fmt == "csv" else format_json(columns, rows) + "\n"
    if output is None:
        from .output import stdout_is_terminal

        # CSV is data, kept as is in a file or pipe; on a terminal its controls are escaped
        sys.stdout.write(escape_control(text) if stdout_is_terminal() else text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    echo(f"Wrote {plural(len(rows), what + ' row')} to {output}", err=True)


DURATION = re.compile(r"^\s*(\d+)\s*(h|d|w|mo|y)\s*$")
HOURS = {"h": 1, "d": 24, "w": 24 * 7, "mo": 24 * 30, "y": 24 * 365}
MAX_AGE_YEARS = 1000


def parse_duration(text: str) -> timedelta:
    """'6mo', '30d', '2w', '1y', '12h' as a timedelta (a month is 30 days), at most
    1000 years (older than any run, and within what PostgreSQL dates can hold)."""
    match = DURATION.match(text)
    if not match:
        raise click.BadParameter(f"{text!r} is not like 6mo, 30d, 2w, 1y or 12h",
                                 param_hint="--older-than")  # fmt: skip
    hours = int(match.group(1)) * HOURS[match.group(2)]
    if hours > MAX_AGE_YEARS * HOURS["y"]:
        raise click.BadParameter(f"{text.strip()} is more than {MAX_AGE_YEARS} years",
                                 param_hint="--older-than")  # fmt: skip
    return timedelta(hours=hours)


@click.command()
@click.option("--older-than", required=True, metavar="AGE", help="e.g. 6mo, 30d, 2w, 1y.")
@click.option(
    "--recommended-for",
    metavar="VALUE",
    help="Only runs marked so, e.g. discard (see `verdict --recommend`).",
)
@click.option(
    "--include-failures",
    is_flag=True,
    help="Delete runs judged a failure too. Without it they are kept: `tried` and the launch "
    "guard warn before a training repeats a failed configuration only while its run is "
    "recorded.",
)
@click.option("--dry-run", is_flag=True, help="Only show what would be deleted.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def cleanup(
    ctx: click.Context,
    older_than: str,
    recommended_for: str | None,
    include_failures: bool,
    dry_run: bool,
    yes: bool,
) -> None:
    """Delete old runs (with their epochs and prompt results), after showing them.

    Runs judged a failure are kept (and counted) unless --include-failures: the launch
    guard and `tried` remember a failed configuration through its run. Files on disk are
    never deleted.
    """
    from .. import runs

    age = parse_duration(older_than)
    db = app_context(ctx).db
    with db.transaction() as conn:
        plan = runs.cleanup_candidates(conn, age, recommended_for,
                                       include_failures=include_failures)  # fmt: skip
    found = plan.delete
    if not found:
        click.echo("Nothing to delete.")
        _say_kept_failures(plan.kept_failures)
        return
    echo_records(found, None, ("id", "run_name", "run_date", "overall_verdict",
                               "recommended_for", "epochs", "prompt_results"))  # fmt: skip
    _say_kept_failures(plan.kept_failures)
    failures = [r["run_name"] for r in found if r["overall_verdict"] == runs.FAILURE_VERDICT]
    if failures:
        it, its = ("it is", "its") if len(failures) == 1 else ("they are", "their")
        echo_wrapped(f"{plural(len(failures), 'failed run')} among them ({_names(failures)}): "
                     f"once {it} deleted, `tried` and the launch guard no longer warn when a "
                     f"training repeats {its} settings.", terminal_width())  # fmt: skip
    epochs = sum(r["epochs"] for r in found)
    results = sum(r["prompt_results"] for r in found)
    parts = [plural(epochs, "epoch result"), plural(results, "prompt result")]
    links = sum(int(r["sample_images"]) for r in found)
    files = sum(int(r["checkpoint_files"]) for r in found)
    if links or files:  # as `delete` says them
        parts += [plural(links, "sample image link"), plural(files, "checkpoint file record")]
    summary = ", ".join([plural(len(found), "run"), *parts])
    click.echo("Files on disk stay: checkpoints, samples and test images are not touched.")
    if dry_run:
        click.echo(f"Would delete {summary} (dry run: nothing deleted).")
        return
    if not yes:
        confirm_or_stop(f"Delete {summary}? (--yes skips this question)")
    with db.transaction() as conn:
        deleted = runs.delete_runs(conn, [r["id"] for r in found])
    click.echo(f"Deleted {plural(deleted, 'run')} with {', '.join(parts[:-1])} and {parts[-1]}.")


def _names(names: list[str], shown: int = 3) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _say_kept_failures(kept: list[dict[str, Any]]) -> None:
    if kept:
        names = [r["run_name"] for r in kept]
        echo_wrapped(f"Kept {plural(len(kept), 'failed run')} ({_names(names)}): `tried` and "
                     "the launch guard warn before a training repeats a failed configuration "
                     "only while its run is recorded; --include-failures deletes failed runs "
                     "too.", terminal_width())  # fmt: skip


@click.command()
@click.argument("run")
@click.option("--dry-run", is_flag=True, help="Only show what would be deleted.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def delete(ctx: click.Context, run: str, dry_run: bool, yes: bool) -> None:
    """Delete one run from the record: its epochs, prompt results and test image links go
    with it (shown first; asks unless --yes). Files on disk stay.

    RUN is the run's id or name. The checkpoints, samples and test images on disk are
    never deleted; a watcher that sees them again leaves them out (`lora-tracker record
    --force FILES` records them again). To delete many old runs: `lora-tracker cleanup`.
    """
    from .. import runs

    db = app_context(ctx).db
    with db.transaction() as conn:
        found = runs.run_deletion_preview(conn, run)
    name = found.run["run_name"]
    if yes and run not in (name, str(found.run["id"])):  # no prefix without a question
        raise click.UsageError(
            f"{run!r} is only the start of {name}: with --yes, give the run's full name or id"
        )
    width = terminal_width()
    echo_wrapped(f"Run {name} (id {found.run['id']}, {found.run['run_date']:%Y-%m-%d}, "
                 f"{found.run['status']}, verdict {found.run['overall_verdict']}), with "
                 f"{_deletion_summary(found)}.", width)  # fmt: skip
    echo_wrapped("Files on disk stay: its checkpoints, samples and test images are not "
                 "touched.", width)  # fmt: skip
    if found.failed:
        echo_wrapped("It was judged a failure: once it is deleted, `tried` and the launch "
                     "guard no longer warn when a training repeats its settings.",
                     width)  # fmt: skip
    if dry_run:
        click.echo("Dry run: nothing deleted.")
        return
    if not yes:
        confirm_or_stop(f"Delete {escape_control(name)}? (--yes skips this question)")
    with db.transaction() as conn:
        deleted = runs.delete_run(conn, found.run["id"])
    echo_wrapped(f"Deleted run {deleted.run['run_name']} with {_deletion_summary(deleted)}.",
                 width)  # fmt: skip


def _deletion_summary(found: Any) -> str:
    """What goes with a run, the epochs always, the rest when there is any."""
    parts = [plural(found.epochs, "epoch result")]
    for count, what in ((found.prompt_results, "prompt result"),
                        (found.test_images, "test image link"),
                        (found.sample_images, "sample image link"),
                        (found.checkpoint_files, "checkpoint file record")):  # fmt: skip
        if count:
            parts.append(plural(count, what))
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
