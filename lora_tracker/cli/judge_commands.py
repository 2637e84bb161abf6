"""`new`, `score`, `epoch remove` and `verdict`: what only a person can record."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..vocab import EPOCH_FLAGS, EPOCH_VERDICTS, MODEL_TYPES, OVERALL_VERDICTS, RUN_STATUSES
from . import app_context
from .options import EPOCH, FINITE_RATE, FINITE_ZERO_OR_MORE, choice, resolution
from .output import confirm_or_stop, echo, escape_control, human_number

if TYPE_CHECKING:
    from ..judging import Change

SCORE = click.IntRange(0, 10)


def register(cli: click.Group) -> None:
    cli.add_command(new_run)
    cli.add_command(score)
    cli.add_command(verdict)
    cli.add_command(epoch_group)


@click.command(name="new")
@click.argument("name")
@click.option("--model-type", type=choice(MODEL_TYPES))
@click.option("--base-model", metavar="MODEL")
@click.option("--network-dim", type=click.IntRange(min=1))
@click.option("--network-alpha", type=FINITE_ZERO_OR_MORE)
@click.option("--resolution", metavar="WxH", callback=resolution,
              help="e.g. 512x512 (512 alone means 512x512)")  # fmt: skip
@click.option("--num-images", type=click.IntRange(min=0))
@click.option("--caption-version", metavar="NAME")
@click.option("--learning-rate", type=FINITE_RATE)
@click.option("--optimizer")
@click.option("--status", type=choice(RUN_STATUSES), default="in_progress",
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
    echo(f"Created run {run.run_name} (id {run.id})")


ADD_OPTION = click.option(
    "--add", is_flag=True,
    help="Record EPOCH by hand when it is not recorded yet (otherwise refused, so a typo "
    "cannot create an epoch).",
)  # fmt: skip
LABELS = {
    "visual_quality_score": "visual", "style_match_score": "style",
    "prompt_adherence_score": "adherence", "verdict": "verdict",
    "has_wrong_backgrounds": "wrong backgrounds", "has_random_pixels": "random pixels",
    "is_photorealistic": "photorealistic", "production_ready": "production ready",
    "observations": "note", "checkpoint_path": "checkpoint",
    "checkpoint_size_bytes": "", "checkpoint_file_size_mb": "", "test_output_dir": "test images",
    "score": "score", "image_path": "image", "notes": "note",
    "overall_verdict": "verdict", "quality_score": "quality", "best_epoch": "best epoch",
    "key_findings": "findings", "issues_found": "issues", "strengths": "strengths",
    "recommended_for": "recommended for", "status": "status",
}  # fmt: skip


FREE_TEXT = ("observations", "notes", "key_findings", "recommended_for", "image_path",
             "checkpoint_path", "test_output_dir")  # fmt: skip


def _value_text(value: object, field: str = "") -> str:
    if value is None or value == [] or value == "":
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) or type(value).__name__ == "Decimal":
        return human_number(value)  # type: ignore[arg-type]
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    text = " ".join(str(value).split())
    text = text if len(text) <= 60 else text[:59] + "…"
    return repr(text) if field in FREE_TEXT else text


def describe_changes(changes: list[Change]) -> str:
    """'visual 5 -> 7, random pixels yes, note unchanged': every field set, before -> after."""
    parts = []
    for change in changes:
        label = LABELS.get(change.field, change.field.replace("_", " "))
        if not label:
            continue
        after = _value_text(change.after, change.field)
        if isinstance(change.before, list) and isinstance(change.after, list):
            if change.changed:
                parts.append(f"{label} {_list_change(change.before, change.after)}")
            else:
                parts.append(f"{label} unchanged")
            continue
        if not change.changed:
            parts.append(f"{label} {after} (unchanged)")
        elif change.before is None or change.before in ("", []):
            parts.append(f"{label} {after}")
        else:
            parts.append(f"{label} {_value_text(change.before, change.field)} -> {after}")
    return ", ".join(parts)


def _list_change(before: list[object], after: list[object]) -> str:
    added = [str(v) for v in after if v not in before]
    removed = [str(v) for v in before if v not in after]
    parts = ([f"+{v!r}" for v in added]) + ([f"-{v!r}" for v in removed])
    return " ".join(parts)


@click.command()
@click.argument("run")
@click.argument("epoch", type=EPOCH)
@click.option("--visual", type=SCORE, help="Visual quality, 0-10.")
@click.option("--style", type=SCORE, help="Style match, 0-10.")
@click.option("--adherence", type=SCORE, help="Prompt adherence, 0-10.")
@click.option("--verdict", type=choice(EPOCH_VERDICTS))
@click.option("--flag", "flags", multiple=True, type=choice(sorted(EPOCH_FLAGS)),
              help="Set a problem flag (repeatable).")  # fmt: skip
@click.option("--clear-flag", "clear_flags", multiple=True, type=choice(sorted(EPOCH_FLAGS)),
              help="Clear a problem flag (repeatable).")  # fmt: skip
@click.option("--production-ready/--not-production-ready", default=None)
@click.option("--note", help="Observations (replaces the previous text).")
@click.option("--checkpoint", type=click.Path(path_type=Path), help="Checkpoint file path.")
@click.option("--test-output-dir", type=click.Path(path_type=Path),
              help="Folder of this epoch's test images.")  # fmt: skip
@ADD_OPTION
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
    add: bool,
) -> None:
    """Score a recorded epoch of RUN: sets only what is given, and says what changed.

    An epoch that is not recorded is refused (a typo must not create epoch 99); --add
    records it by hand, e.g. for a run made with `lora-tracker new`.
    """
    from .. import judging
    from ..errors import FlagConflict

    values: dict[str, object] = {
        "visual_quality_score": visual, "style_match_score": style,
        "prompt_adherence_score": adherence, "verdict": verdict,
        "production_ready": production_ready, "observations": note,
        "test_output_dir": str(test_output_dir.absolute()) if test_output_dir else None,
    }  # fmt: skip
    given = {k: v for k, v in values.items() if v is not None}
    if not given and not flags and not clear_flags and checkpoint is None:
        raise click.UsageError("nothing to set: give a score, --verdict, --flag, --note, ...")
    try:
        with app_context(ctx).db.transaction() as conn:
            done = judging.score_epoch(
                conn, run, epoch, given, flags=flags, clear_flags=clear_flags,
                checkpoint=checkpoint, add=add,
            )  # fmt: skip
    except FlagConflict as exc:
        names = ", ".join(exc.flags)
        raise click.UsageError(f"--flag and --clear-flag both name {names}") from None
    added = " (added)" if done.added else ""
    echo(f"{done.run.run_name} epoch {epoch}{added}: {describe_changes(done.changes)}")


@click.group(name="epoch")
def epoch_group() -> None:
    """Epochs recorded by mistake."""


@epoch_group.command(name="remove")
@click.argument("run")
@click.argument("epoch", type=EPOCH)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def epoch_remove(ctx: click.Context, run: str, epoch: int, yes: bool) -> None:
    """Remove epoch EPOCH of RUN, with its prompt results (asks first; --yes skips)."""
    from .. import judging
    from .output import plural

    db = app_context(ctx).db
    with db.transaction() as conn:
        found, _, results = judging.epoch_removal_preview(conn, run, epoch)
    what = f"epoch {epoch} of {found.run_name}" + (
        f" and its {plural(results, 'prompt result')}" if results else ""
    )
    if not yes:
        confirm_or_stop(f"Remove {escape_control(what)}? (--yes skips this question)")
    with db.transaction() as conn:
        removed = judging.remove_epoch(conn, found.id, epoch)
    echo(f"Removed {what}" + (" (it was the best epoch: best epoch cleared)"
                              if removed.best_epoch_cleared else "") + ".")  # fmt: skip


@click.command()
@click.argument("run")
@click.option("--overall", type=choice(OVERALL_VERDICTS),
              help="The run's verdict (success, failure or partial also marks a run still "
              "in progress completed, unless --status says otherwise).")  # fmt: skip
@click.option("--quality", type=SCORE, help="Overall quality, 0-10.")
@click.option("--production-ready/--not-production-ready", default=None)
@click.option("--best-epoch", type=EPOCH, help="An epoch already recorded.")
@click.option("--findings", help="Key findings (replaces the previous text).")
@click.option("--issue", "issues", multiple=True, help="Add an issue (repeatable).")
@click.option("--strength", "strengths", multiple=True, help="Add a strength (repeatable).")
@click.option("--clear-issues", is_flag=True, help="Empty the issue list first.")
@click.option("--clear-strengths", is_flag=True, help="Empty the strength list first.")
@click.option("--recommend", help="Recommended use, e.g. production, research, discard.")
@click.option("--status", type=choice(RUN_STATUSES))
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
    """Record the verdict on RUN: sets only what is given, and says what changed."""
    from .. import judging

    values: dict[str, object] = {
        "overall_verdict": overall, "quality_score": quality,
        "production_ready": production_ready, "best_epoch": best_epoch,
        "key_findings": findings, "recommended_for": recommend, "status": status,
        "notes": notes,
    }  # fmt: skip
    given = {k: v for k, v in values.items() if v is not None}
    if not given and not issues and not strengths and not clear_issues and not clear_strengths:
        raise click.UsageError("nothing to set: give --overall, --quality, --issue, ...")
    with app_context(ctx).db.transaction() as conn:
        done = judging.record_verdict(
            conn, run, given, add_issues=issues, add_strengths=strengths,
            clear_issues=clear_issues, clear_strengths=clear_strengths,
        )  # fmt: skip
    echo(f"{done.run.run_name}: {describe_changes(done.changes)}")
