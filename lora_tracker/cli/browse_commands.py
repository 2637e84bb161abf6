"""`runs`, `show` and `compare`: looking at what was recorded."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import click

from ..vocab import MODEL_TYPES, OVERALL_VERDICTS, RUN_STATUSES
from . import app_context, usage_errors
from .options import choice
from .output import (
    Layout,
    echo_records,
    echo_rows,
    echo_wrapped,
    format_options,
    human_number,
    json_text,
    layout_options,
    plural,
    table_fits,
    terminal_width,
)

# most useful first: on a narrow terminal the columns on the right are left out
RUN_TABLE = (
    "id",
    "run_name",
    "run_date",
    "overall_verdict",
    "quality_score",
    "model_type",
    "network_dim",
    "network_alpha",
    "resolution",
    "epochs_recorded",
    "best_epoch",
    "production_ready",
    "avg_visual_quality",
    "caption_version",
)
EPOCH_TABLE = (
    "epoch",
    "visual",
    "style",
    "adherence",
    "verdict",
    "flags",
    "ready",
    "loss",
    "observations",
    "on_disk",
    "MB",
    "samples",
)
CONFIG_FIELDS = (
    "model_type",
    "base_model",
    "network_dim",
    "network_alpha",
    "network_module",
    "resolution",
    "num_images",
    "caption_version",
    "learning_rate",
    "unet_lr",
    "text_encoder_lr",
    "optimizer",
    "lr_scheduler",
    "seed",
    "num_epochs",
    "max_train_steps",
    "total_steps",
    "batch_size",
    "mixed_precision",
    "trainer",
)
COMPARED_EPOCH_COLUMNS = ("epoch_number", "visual_quality_score", "style_match_score",
                          "prompt_adherence_score", "verdict", "loss")  # fmt: skip
VERDICT_FIELDS = ("status", "overall_verdict", "quality_score", "production_ready",
                  "best_epoch", "recommended_for")  # fmt: skip


def register(cli: click.Group) -> None:
    cli.add_command(runs_command)
    cli.add_command(show)
    cli.add_command(compare)


@click.command(name="runs")
@click.option("--model-type", type=choice(MODEL_TYPES))
@click.option("--verdict", type=choice(OVERALL_VERDICTS))
@click.option("--status", type=choice(RUN_STATUSES))
@click.option("--caption-version", metavar="NAME")
@click.option("--network-dim", type=int)
@click.option("--resolution", metavar="WxH")
@click.option("--production-ready", is_flag=True, default=None, help="Only production-ready runs.")
@click.option("--search", metavar="TEXT", help="Run names containing TEXT.")
@click.option("--sort", type=click.Choice(["date", "quality", "name"]), default="date",
              show_default=True)  # fmt: skip
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--all", "show_all", is_flag=True, help="No limit.")
@format_options
@layout_options
@click.pass_context
def runs_command(
    ctx: click.Context,
    model_type: str | None,
    verdict: str | None,
    status: str | None,
    caption_version: str | None,
    network_dim: int | None,
    resolution: str | None,
    production_ready: bool | None,
    search: str | None,
    sort: str,
    limit: int,
    show_all: bool,
    fmt: str | None,
    columns: str | None,
    wide: bool,
) -> None:
    """List runs, newest first, with their epoch statistics (the training_comparison view).

    On a terminal, the columns that fit its width; --columns or --wide for others.
    """
    from .. import runs

    layout = Layout(columns, wide)
    filters = {"model_type": model_type, "overall_verdict": verdict, "status": status,
               "caption_version": caption_version, "network_dim": network_dim,
               "resolution": resolution, "production_ready": production_ready}  # fmt: skip
    with app_context(ctx).db.transaction() as conn:
        found = runs.list_summaries(conn, filters, search=search, sort=sort,
                                    limit=None if show_all else limit)  # fmt: skip
    for row in found:
        row["run_date"] = row["run_date"].date() if fmt is None else row["run_date"]
    echo_records(found, fmt, RUN_TABLE, empty="No runs match.", layout=layout)
    if fmt is None and not show_all and len(found) == limit:
        click.echo(f"(the {plural(limit, 'newest run')} shown: --limit N or --all for more)",
                   err=True)  # fmt: skip


def _flags(epoch: dict[str, Any]) -> str:
    marks = [("BG", "has_wrong_backgrounds"), ("PX", "has_random_pixels"),
             ("PHOTO", "is_photorealistic")]  # fmt: skip
    return " ".join(label for label, column in marks if epoch.get(column))


def _epoch_rows(epochs: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for e in epochs:
        on_disk = {True: "yes", False: "removed", None: ""}[e["checkpoint_on_disk"]]
        rows.append([
            e["epoch_number"], e["visual_quality_score"], e["style_match_score"],
            e["prompt_adherence_score"], e["verdict"], _flags(e), e["production_ready"],
            f"{e['loss']:.4f}" if e["loss"] is not None else "", e["observations"], on_disk,
            e["checkpoint_file_size_mb"], len(e["sample_images"] or []),
        ])  # fmt: skip
    return rows


@click.command()
@click.argument("run")
@click.option("--json", "as_json", is_flag=True, help="Print the run, epochs and results as JSON.")
@layout_options
@click.pass_context
def show(ctx: click.Context, run: str, as_json: bool, columns: str | None, wide: bool) -> None:
    """One run: its configuration, judgement, epochs (scores, flags, loss, samples) and the
    epoch x prompt grid."""
    from .. import epochs as epoch_rows
    from .. import prompts, runs

    layout = Layout(columns, wide)
    with app_context(ctx).db.transaction() as conn:
        row = runs.run_row(conn, run)
        epochs = epoch_rows.epochs_of_runs(conn, [row["id"]])[row["id"]]
        results = prompts.results_of_runs(conn, [row["id"]])[row["id"]]
    if as_json:
        from ..models import TrainingRun

        click.echo(json_text({
            "run": TrainingRun.model_validate(row).model_dump(), "epochs": epochs,
            "prompt_results": results,
        }))  # fmt: skip
        return
    r = SimpleNamespace(**row)
    quality = f" {r.quality_score}/10" if r.quality_score is not None else ""
    ready = " · production ready" if r.production_ready else ""
    best = f" · best epoch {r.best_epoch}" if r.best_epoch is not None else ""
    width = None if layout.wide else terminal_width()
    echo_wrapped(f"{r.run_name} (id {r.id}): {r.overall_verdict}{quality}{ready}{best}", width)
    echo_wrapped(f"  {r.status} · started {r.run_date:%Y-%m-%d %H:%M}"
               + (f" · {r.trainer}" if r.trainer else "")
               + (f" on {r.host}" if r.host else "")
               + (f" · {r.output_dir}" if r.output_dir else ""), width)  # fmt: skip
    if r.failure_reason:
        echo_wrapped(f"  failed: {r.failure_reason}", width, 4)
    click.echo("\nConfiguration")
    for name in CONFIG_FIELDS:
        value = getattr(r, name)
        if value is not None:
            shown = human_number(value) if isinstance(value, (int, float, Decimal)) else value
            echo_wrapped(f"  {name:<18} {shown}", width, 21)
    click.echo("\nJudgement")
    judged = [(label, value) for label, value in (
        ("key findings", r.key_findings),
        ("issues", "; ".join(r.issues_found or [])),
        ("strengths", "; ".join(r.strengths or [])),
        ("recommended for", r.recommended_for),
        ("notes", r.notes),
    ) if value]  # fmt: skip
    for label, value in judged:
        echo_wrapped(f"  {label:<18} {value}", width, 21)
    if not judged:
        echo_wrapped("  none written yet (lora-tracker verdict RUN --findings TEXT --issue TEXT)",
                     width, 4)  # fmt: skip
    click.echo(f"\nEpochs ({len(epochs)})")
    if epochs:
        shown_columns = layout.select(EPOCH_TABLE, EPOCH_TABLE)
        table = _epoch_rows(epochs)
        picked = [[row[EPOCH_TABLE.index(c)] for c in shown_columns] for row in table]
        echo_rows(shown_columns, picked, layout=Layout(None, layout.wide or bool(layout.wanted)))
    if results:
        _echo_prompt_grid(results, layout.wide, width)
        _echo_test_images(results, width)


def _echo_prompt_grid(results: list[dict[str, Any]], wide: bool, width: int | None) -> None:
    """The epoch x prompt grid. When the prompts' names do not fit the terminal, the
    columns are numbered and the names listed below (they often start alike, so cut names
    would all read the same); prompts left out at this width are counted."""
    from .. import prompts

    grid_columns, grid = prompts.grid(results)
    grid_layout = Layout(None, wide)
    names = grid_columns[1:]
    numbered = grid_layout.width is not None and not table_fits(
        grid_columns, grid, grid_layout.width
    )
    if numbered:
        grid_columns = ["epoch", *(f"#{n}" for n in range(1, len(names) + 1))]
    click.echo("\nTest prompts (epoch x prompt: score verdict)")
    # each column is a prompt: said so rather than hiding its results
    echo_rows(grid_columns, grid, layout=grid_layout, say_left_out=lambda left_out: (
        f"({plural(len(left_out), 'more prompt')} left out at this width: --wide shows every "
        "prompt, --json every result)"))  # fmt: skip
    if numbered:
        for n, name in enumerate(names, 1):
            echo_wrapped(f"  #{n:<3} {name}", width, 7)


IMAGE_PATHS_PER_CELL = 4


def _echo_test_images(results: list[dict[str, Any]], width: int | None) -> None:
    """The linked test images of each epoch x prompt: how many, their seeds and weights,
    what made them, and their files."""
    from itertools import groupby

    images = [r for r in results if (r.get("result_key") or "").startswith("image:")]
    if not images:
        return
    click.echo(f"\nTest images ({plural(len(images), 'image')} linked, by epoch and prompt)")
    for (epoch, name), cell in groupby(images, key=lambda r: (r["epoch_number"], r["prompt_name"])):
        found = list(cell)
        seeds = sorted({r["seed"] for r in found if r["seed"] is not None})
        weights = sorted({human_number(r["lora_weight"]) for r in found
                          if r["lora_weight"] is not None})  # fmt: skip
        makers = sorted({r["generator"] for r in found if r["generator"]})
        facts = [plural(len(found), "image") + (f" ({', '.join(makers)})" if makers else "")]
        if seeds:
            facts.append(("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds)))
        if weights:
            facts.append(("weight " if len(weights) == 1 else "weights ") + ", ".join(weights))
        echo_wrapped(f"  epoch {epoch} · {name}: {', '.join(facts)}", width, 4)
        for r in found[:IMAGE_PATHS_PER_CELL]:
            echo_wrapped(f"    {r['image_path']}", width, 6)
        if len(found) > IMAGE_PATHS_PER_CELL:
            click.echo(f"    ... {len(found) - IMAGE_PATHS_PER_CELL} more (--json lists all)")


@click.command()
@click.argument("runs_given", metavar="RUN RUN...", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.option("--wide", is_flag=True,
              help="Each row on one line, however wide (as piped output).")  # fmt: skip
@click.pass_context
def compare(ctx: click.Context, runs_given: tuple[str, ...], as_json: bool, wide: bool) -> None:
    """Runs side by side: configuration (differences marked *), verdicts, scores per epoch.

    On a terminal every run is shown: long values wrap inside their column, and runs that
    do not fit side by side follow in blocks (the settings repeated). --wide, or piped
    output, prints each row on one line.
    """
    from ..decisions import compare_runs

    with usage_errors(), app_context(ctx).db.transaction() as conn:
        found = compare_runs(conn, runs_given, (*CONFIG_FIELDS, *VERDICT_FIELDS),
                             COMPARED_EPOCH_COLUMNS)  # fmt: skip
    names = [r["run_name"] for r in found.runs]
    ids = [r["id"] for r in found.runs]
    settings, by_epoch = found.settings, found.epochs
    if as_json:
        payload = {
            "runs": names,
            "settings": settings,
            "epochs": [{"epoch": n, **{names[i]: by_epoch[n].get(run_id)
                                       for i, run_id in enumerate(ids)}}
                       for n in sorted(by_epoch)],
        }  # fmt: skip
        click.echo(json_text(payload))
        return
    from .side_by_side import format_side_by_side

    width = None if wide else terminal_width()
    click.echo(format_side_by_side(
        ["", "setting"], names,
        [["*" if s["differs"] else "", s["setting"], *s["values"]] for s in settings],
        width=width, block_note=f"* differs among all {len(names)} runs",
    ))  # fmt: skip
    if by_epoch:
        click.echo("\nScores per epoch (visual/style/adherence verdict)")
        rows = []
        for n in sorted(by_epoch):
            cells = []
            for run_id in ids:
                cell = by_epoch[n].get(run_id)
                cells.append(_score_cell(cell) if cell else "")
            rows.append([n, *cells])
        click.echo(format_side_by_side(["epoch"], names, rows, width=width))


def _score_cell(e: dict[str, Any]) -> str:
    scores = [e["visual_quality_score"], e["style_match_score"], e["prompt_adherence_score"]]
    text = "/".join("-" if s is None else str(s) for s in scores)
    if text == "-/-/-":
        text = ""
    return f"{text} {e['verdict'] or ''}".strip()
