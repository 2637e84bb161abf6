"""`new`, `score` and `verdict`: what only a person can record."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import NotFound
from ..vocab import EPOCH_VERDICTS, MODEL_TYPES, OVERALL_VERDICTS, RUN_STATUSES
from . import app_context

SCORE = click.IntRange(0, 10)
FLAGS = {
    "wrong-backgrounds": "has_wrong_backgrounds",
    "random-pixels": "has_random_pixels",
    "photorealistic": "is_photorealistic",
}


def register(cli: click.Group) -> None:
    cli.add_command(new_run)
    cli.add_command(score)
    cli.add_command(verdict)


@click.command(name="new")
@click.argument("name")
@click.option("--model-type", type=click.Choice(MODEL_TYPES))
@click.option("--base-model", metavar="MODEL")
@click.option("--network-dim", type=click.IntRange(min=1))
@click.option("--network-alpha", type=click.FloatRange(min=0))
@click.option("--resolution", metavar="WxH", help="e.g. 512x512")
@click.option("--num-images", type=click.IntRange(min=0))
@click.option("--caption-version", metavar="NAME")
@click.option("--learning-rate", type=click.FloatRange(min=0))
@click.option("--optimizer")
@click.option("--status", type=click.Choice(RUN_STATUSES), default="in_progress",
              show_default=True)  # fmt: skip
@click.option("--notes")
@click.pass_context
def new_run(ctx: click.Context, /, name: str, **options: object) -> None:
    """Record a run by hand (before or while training, without a watcher or hook)."""
    from .. import runs
    from ..models import RunCreate

    values = {k: v for k, v in options.items() if v is not None}
    with app_context(ctx).db.transaction() as conn:
        run = runs.create_run(conn, RunCreate(run_name=name, **values))
    click.echo(f"Created run {run.run_name} (id {run.id})")


@click.command()
@click.argument("run")
@click.argument("epoch", type=click.IntRange(min=0))
@click.option("--visual", type=SCORE, help="Visual quality, 0-10.")
@click.option("--style", type=SCORE, help="Style match, 0-10.")
@click.option("--adherence", type=SCORE, help="Prompt adherence, 0-10.")
@click.option("--verdict", type=click.Choice(EPOCH_VERDICTS))
@click.option("--flag", "flags", multiple=True, type=click.Choice(sorted(FLAGS)),
              help="Set a problem flag (repeatable).")  # fmt: skip
@click.option("--clear-flag", "clear_flags", multiple=True, type=click.Choice(sorted(FLAGS)),
              help="Clear a problem flag (repeatable).")  # fmt: skip
@click.option("--production-ready/--not-production-ready", default=None)
@click.option("--note", help="Observations (replaces the previous text).")
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Checkpoint file path.")
@click.option("--test-output-dir", type=click.Path(path_type=Path),
              help="Folder of this epoch's test images.")  # fmt: skip
@click.pass_context
def score(
    ctx: click.Context,
    run: str,
    epoch: int,
    visual: int | None,
    style: int | None,
    adherence: int | None,
    verdict: str | None,
    flags: tuple[str, ...],
    clear_flags: tuple[str, ...],
    production_ready: bool | None,
    note: str | None,
    checkpoint: Path | None,
    test_output_dir: Path | None,
) -> None:
    """Score an epoch of RUN: sets only what is given (creating the epoch row if needed)."""
    from .. import epochs, runs
    from ..models import EpochFields

    both = sorted(set(flags) & set(clear_flags))
    if both:
        raise click.UsageError(f"--flag and --clear-flag both name {', '.join(both)}")
    values: dict[str, object] = {
        "visual_quality_score": visual, "style_match_score": style,
        "prompt_adherence_score": adherence, "verdict": verdict,
        "production_ready": production_ready, "observations": note,
    }  # fmt: skip
    values.update({FLAGS[f]: True for f in flags})
    values.update({FLAGS[f]: False for f in clear_flags})
    if checkpoint is not None:
        values["checkpoint_path"] = str(checkpoint.absolute())
        if checkpoint.is_file():
            size = checkpoint.stat().st_size
            values["checkpoint_size_bytes"] = size
            values["checkpoint_file_size_mb"] = round(size / 1024 / 1024, 2)
    if test_output_dir is not None:
        values["test_output_dir"] = str(test_output_dir.absolute())
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        raise click.UsageError("nothing to set: give a score, --verdict, --flag, --note, ...")
    with app_context(ctx).db.transaction() as conn:
        found = runs.get_run(conn, run)
        row = epochs.upsert_epoch(conn, found.id, epoch, EpochFields(**given))
    parts = [f"visual {row.visual_quality_score}" if row.visual_quality_score is not None else "",
             f"style {row.style_match_score}" if row.style_match_score is not None else "",
             f"adherence {row.prompt_adherence_score}"
             if row.prompt_adherence_score is not None else "",
             row.verdict or ""]  # fmt: skip
    summary = ", ".join(p for p in parts if p) or "no scores yet"
    click.echo(f"{found.run_name} epoch {epoch}: {summary}")


@click.command()
@click.argument("run")
@click.option("--overall", type=click.Choice(OVERALL_VERDICTS), help="The run's verdict.")
@click.option("--quality", type=SCORE, help="Overall quality, 0-10.")
@click.option("--production-ready/--not-production-ready", default=None)
@click.option("--best-epoch", type=click.IntRange(min=0), help="An epoch already recorded.")
@click.option("--findings", help="Key findings (replaces the previous text).")
@click.option("--issue", "issues", multiple=True, help="Add an issue (repeatable).")
@click.option("--strength", "strengths", multiple=True, help="Add a strength (repeatable).")
@click.option("--clear-issues", is_flag=True, help="Empty the issue list first.")
@click.option("--clear-strengths", is_flag=True, help="Empty the strength list first.")
@click.option("--recommend", help="Recommended use, e.g. production, research, discard.")
@click.option("--status", type=click.Choice(RUN_STATUSES))
@click.option("--notes")
@click.pass_context
def verdict(
    ctx: click.Context,
    run: str,
    overall: str | None,
    quality: int | None,
    production_ready: bool | None,
    best_epoch: int | None,
    findings: str | None,
    issues: tuple[str, ...],
    strengths: tuple[str, ...],
    clear_issues: bool,
    clear_strengths: bool,
    recommend: str | None,
    status: str | None,
    notes: str | None,
) -> None:
    """Record the verdict on RUN: sets only what is given."""
    from .. import epochs, runs
    from ..models import RunFields

    values: dict[str, object] = {
        "overall_verdict": overall, "quality_score": quality,
        "production_ready": production_ready, "best_epoch": best_epoch,
        "key_findings": findings, "recommended_for": recommend, "status": status,
        "notes": notes,
    }  # fmt: skip
    given = {k: v for k, v in values.items() if v is not None}
    if clear_issues:
        given["issues_found"] = []
    if clear_strengths:
        given["strengths"] = []
    if not given and not issues and not strengths:
        raise click.UsageError("nothing to set: give --overall, --quality, --issue, ...")
    with app_context(ctx).db.transaction() as conn:
        found = runs.get_run(conn, run)
        if best_epoch is not None:
            try:
                epochs.get_epoch(conn, found.id, best_epoch)
            except NotFound:
                raise NotFound(f"{found.run_name} has no epoch {best_epoch} recorded") from None
        updated = runs.update_run(conn, found.id, RunFields(**given))
        if issues or strengths:
            runs.add_to_lists(conn, updated.id, list(issues), list(strengths))
        updated = runs.get_run(conn, updated.id)
    quality_text = f" {updated.quality_score}/10" if updated.quality_score is not None else ""
    ready = ", production ready" if updated.production_ready else ""
    click.echo(f"{updated.run_name}: {updated.overall_verdict}{quality_text}{ready}")
