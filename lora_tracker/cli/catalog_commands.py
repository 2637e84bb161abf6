"""`caption ...` and `prompt ...`: caption versions, test prompts and per-prompt results."""

from __future__ import annotations

from pathlib import Path

import click

from ..vocab import DETAIL_LEVELS, PROMPT_VERDICTS
from . import app_context
from .options import EPOCH, choice
from .output import echo, echo_records, echo_rows, format_options, plural

SCORE = click.IntRange(0, 10)


def register(cli: click.Group) -> None:
    cli.add_command(caption)
    cli.add_command(prompt)


@click.group()
def caption() -> None:
    """Caption versions: which captions a run was trained on."""


@caption.command(name="add")
@click.argument("name")
@click.option(
    "--from-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A dataset folder of .txt captions: counted, hashed, detail level guessed.",
)
@click.option("--description")
@click.option("--detail-level", type=choice(DETAIL_LEVELS))
@click.option("--hex-codes/--no-hex-codes", default=None, help="Captions include #RRGGBB.")
@click.option("--accessories/--no-accessories", default=None)
@click.option("--jewelry/--no-jewelry", default=None)
@click.option("--sample", "sample_caption", help="An example caption.")
@click.option(
    "--run",
    "runs_given",
    multiple=True,
    metavar="RUN",
    help="A run trained on these captions (repeatable).",
)
@click.option("--notes")
@click.pass_context
def caption_add(
    ctx: click.Context,
    name: str,
    from_dir: Path | None,
    description: str | None,
    detail_level: str | None,
    hex_codes: bool | None,
    accessories: bool | None,
    jewelry: bool | None,
    sample_caption: str | None,
    runs_given: tuple[str, ...],
    notes: str | None,
) -> None:
    """Add caption version NAME (optionally measured from a folder of captions)."""
    from .. import captions, runs
    from ..models import CaptionVersionCreate

    values: dict[str, object] = {"version_name": name, "description": description, "notes": notes}
    if from_dir is not None:
        found = captions.analyze_caption_dir(from_dir)
        values.update(source_dir=found.source_dir, num_captions=found.num_captions,
                      caption_set_hash=found.caption_set_hash,
                      detail_level=found.detail_level, sample_caption=found.sample_caption,
                      includes_hex_codes=found.includes_hex_codes,
                      includes_accessories=found.includes_accessories,
                      includes_jewelry=found.includes_jewelry)  # fmt: skip
    explicit = {"detail_level": detail_level, "includes_hex_codes": hex_codes,
                "includes_accessories": accessories, "includes_jewelry": jewelry,
                "sample_caption": sample_caption}  # fmt: skip
    values.update({k: v for k, v in explicit.items() if v is not None})
    with app_context(ctx).db.transaction() as conn:
        version = captions.create_caption_version(
            conn, CaptionVersionCreate(**{k: v for k, v in values.items() if v is not None})
        )
        linked = captions.link_runs(conn, name, [runs.get_run(conn, r).id for r in runs_given])
    detail = f", {version.num_captions} captions" if version.num_captions else ""
    level = f", {version.detail_level}" if version.detail_level else ""
    echo(f"Added caption version {version.version_name}{detail}{level}")
    if linked:
        echo(f"Linked runs: {', '.join(linked)}")


@caption.command(name="list")
@format_options
@click.pass_context
def caption_list(ctx: click.Context, fmt: str | None) -> None:
    """Caption versions with the runs that used them and how those went."""
    from .. import captions

    with app_context(ctx).db.transaction() as conn:
        found = captions.list_with_runs(conn)
    echo_records(found, fmt, empty="No caption versions yet (lora-tracker caption add).")


@caption.command(name="show")
@click.argument("name")
@click.pass_context
def caption_show(ctx: click.Context, name: str) -> None:
    """One caption version and the runs trained on it."""
    from .. import captions, runs

    with app_context(ctx).db.transaction() as conn:
        version = captions.get_caption_version(conn, name)
        used = runs.list_summaries(conn, {"caption_version": name}, limit=None)
    for field, value in version.model_dump().items():
        if value not in (None, [], "") and field not in ("id",):
            echo(f"{field:<22} {value}")
    echo(f"\nRuns trained on {name} ({len(used)})")
    if used:
        echo_rows(["run_name", "model_type", "network_dim", "overall_verdict", "quality_score"],
                  [[r["run_name"], r["model_type"], r["network_dim"], r["overall_verdict"],
                    r["quality_score"]] for r in used])  # fmt: skip


@caption.command(name="link")
@click.argument("name")
@click.argument("runs_given", metavar="RUN...", nargs=-1, required=True)
@click.pass_context
def caption_link(ctx: click.Context, name: str, runs_given: tuple[str, ...]) -> None:
    """Record that RUNs were trained on caption version NAME."""
    from .. import captions, runs

    with app_context(ctx).db.transaction() as conn:
        ids = [runs.get_run(conn, r).id for r in runs_given]
        linked = captions.link_runs(conn, name, ids)
    echo(f"Linked to {name}: {', '.join(linked)}")


@click.group()
def prompt() -> None:
    """Test prompts, and each epoch's result on them."""


@prompt.command(name="add")
@click.argument("name")
@click.option("--text", "prompt_text", required=True, help="The prompt.")
@click.option("--negative", "negative_prompt", help="The negative prompt.")
@click.option("--seed", type=int)
@click.option("--sampler")
@click.option("--steps", type=click.IntRange(min=1))
@click.option("--cfg", "cfg_scale", type=click.FloatRange(0, 100))
@click.option("--width", type=click.IntRange(min=1))
@click.option("--height", type=click.IntRange(min=1))
@click.option("--category", help="e.g. pose, background, style, accessory")
@click.option("--notes")
@click.pass_context
def prompt_add(ctx: click.Context, /, name: str, **options: object) -> None:
    """Add test prompt NAME."""
    from .. import prompts
    from ..models import TestPromptCreate

    values = {k: v for k, v in options.items() if v is not None}
    with app_context(ctx).db.transaction() as conn:
        row = prompts.add_prompt(conn, TestPromptCreate(prompt_name=name, **values))
    echo(f"Added test prompt {row['prompt_name']} (id {row['id']})")


@prompt.command(name="list")
@click.option("--all", "include_inactive", is_flag=True, help="Include retired prompts.")
@format_options
@click.pass_context
def prompt_list(ctx: click.Context, include_inactive: bool, fmt: str | None) -> None:
    """Test prompts, with how many results each has."""
    from .. import prompts

    with app_context(ctx).db.transaction() as conn:
        found = prompts.list_prompts(conn, include_inactive=include_inactive)
    echo_records(found, fmt, ("id", "prompt_name", "category", "prompt_text", "seed", "steps",
                              "cfg_scale", "active", "results"),
                 empty="No test prompts yet (lora-tracker prompt add).")  # fmt: skip


@prompt.command(name="export")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE (its name's ending, .txt/.toml/.json, sets the format) instead of"
    " printing.",
)  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(["kohya", "toml", "json"]),
    help="kohya: one line per prompt with --n --w --h --d --l --s --ss (default);"
    " toml / json: kohya's other prompt file formats.",
)  # fmt: skip
@click.pass_context
def prompt_export(ctx: click.Context, output: Path | None, fmt: str | None) -> None:
    """The active test prompts as a kohya --sample_prompts file, in a stable order (train
    with `--sample_prompts FILE` and each epoch's samples land in the prompt grid)."""
    from .. import kohya_prompts, prompts

    chosen = kohya_prompts.export_format_for(output, fmt)
    with app_context(ctx).db.transaction() as conn:
        rows = prompts.active_prompts(conn)
    if not rows:
        raise click.ClickException("no active test prompts to export (lora-tracker prompt add)")
    exported = kohya_prompts.export_prompts(rows, chosen)
    for note in exported.notes:
        echo(f"note: {note}", err=True)
    if output is None:
        click.echo(exported.text, nl=False)
        return
    kohya_prompts.write_prompts_file(output, exported.text)
    echo(f"Wrote {plural(exported.count, 'test prompt')} to {output} "
         f"(kohya: --sample_prompts {output})", err=True)  # fmt: skip


@prompt.command(name="retire")
@click.argument("name")
@click.pass_context
def prompt_retire(ctx: click.Context, name: str) -> None:
    """Stop listing a prompt (its results are kept)."""
    from .. import prompts

    with app_context(ctx).db.transaction() as conn:
        row = prompts.set_active(conn, name, False)
    echo(f"Retired test prompt {row['prompt_name']}")


@prompt.command(name="score")
@click.argument("run")
@click.argument("epoch", type=EPOCH)
@click.argument("prompt_ref", metavar="PROMPT")
@click.option("--score", type=SCORE, help="Overall score for this prompt, 0-10.")
@click.option("--style", type=SCORE, help="Style match, 0-10.")
@click.option("--adherence", type=SCORE, help="Prompt adherence, 0-10.")
@click.option("--image", type=click.Path(path_type=Path), help="The generated image.")
@click.option("--verdict", type=choice(PROMPT_VERDICTS))
@click.option("--note")
@click.option(
    "--add", is_flag=True,
    help="Record EPOCH by hand when it is not recorded yet (otherwise refused).",
)  # fmt: skip
@click.pass_context
def prompt_score(
    ctx: click.Context,
    run: str,
    epoch: int,
    prompt_ref: str,
    score: int | None,
    style: int | None,
    adherence: int | None,
    image: Path | None,
    verdict: str | None,
    note: str | None,
    add: bool,
) -> None:
    """Record how recorded epoch EPOCH of RUN did on test prompt PROMPT (only what is
    given); --add records an epoch that is not recorded yet."""
    from .. import judging
    from .judge_commands import describe_changes

    values = {"score": score, "style_match_score": style, "prompt_adherence_score": adherence,
              "image_path": str(image.absolute()) if image else None, "verdict": verdict,
              "notes": note}  # fmt: skip
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        raise click.UsageError("nothing to set: give --score, --verdict, --image or --note")
    with app_context(ctx).db.transaction() as conn:
        done = judging.score_prompt(conn, run, epoch, prompt_ref, given, add=add)
    added = " (epoch added)" if done.added_epoch else ""
    which = " (its linked image)" if done.linked_image else ""
    echo(f"{done.run.run_name} epoch {epoch}{added} / {done.prompt_name}{which}: "
         f"{describe_changes(done.changes)}")  # fmt: skip
    if done.linked_images and not done.linked_image:
        echo(f"note: this is the epoch's own result on the prompt; "
             f"{plural(done.linked_images, 'image')} linked to it are results of their own "
             f"(--image PATH scores one)", err=True)  # fmt: skip
    if image is not None and not image.is_file():
        echo(f"warning: {image} does not exist (yet): the dashboard will show no image",
             err=True)  # fmt: skip


@prompt.command(name="show")
@click.argument("run")
@format_options
@click.pass_context
def prompt_show(ctx: click.Context, run: str, fmt: str | None) -> None:
    """The epoch x prompt grid of RUN (score and verdict per cell)."""
    from .. import prompts, runs

    with app_context(ctx).db.transaction() as conn:
        found = runs.get_run(conn, run)
        results = prompts.results_of_runs(conn, [found.id])[found.id]
    if fmt is not None:
        echo_records(results, fmt)
        return
    if not results:
        echo(f"No prompt results for {found.run_name} (lora-tracker prompt score).")
        return
    columns, grid = prompts.grid(results)
    echo_rows(columns, grid)
