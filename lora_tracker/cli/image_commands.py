"""`images`: link test images rendered in A1111 / Forge / SD.Next / ComfyUI to the epoch
checkpoints they were made with."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import app_context
from .output import echo

if TYPE_CHECKING:  # Pillow and the image readers load when the command runs, not for --help
    from ..images.linking import ImageOutcome


def register(cli: click.Group) -> None:
    cli.add_command(images)


@click.command()
@click.argument("paths", metavar="DIR...", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))  # fmt: skip
@click.option("--recursive/--no-recursive", default=True, show_default=True,
              help="Read the folders' subfolders too.")  # fmt: skip
@click.option("--lora-dir", "lora_dirs", metavar="DIR", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The generator's LoRA folder (e.g. ComfyUI/models/loras): a LoRA named "
                   "by file (ComfyUI) is matched by its hash there. Repeatable.")  # fmt: skip
@click.option("--verbose", is_flag=True, help="List each unmatched image and why.")
@click.pass_context
def images(
    ctx: click.Context,
    paths: tuple[Path, ...],
    recursive: bool,
    lora_dirs: tuple[Path, ...],
    verbose: bool,
) -> None:
    """Link test images (A1111, Forge, SD.Next, ComfyUI) to the epochs that made them.

    The images in DIR... (PNG, JPEG, WebP) are matched to the epochs of the LoRAs they were
    rendered with, from their generation metadata. Each image becomes a result of its test
    prompt (found by its exact text, created when new) at that epoch, with its seed, steps,
    CFG, sampler, size and LoRA weight. A1111's "Lora hashes" find the exact epoch even for
    a renamed or copied file; ComfyUI's LoRA is found by file name. Running it again changes
    nothing. Exit 1 when a file named here is not a usable image (the others are still
    linked).
    """
    from ..images.linking import link_images

    # a file named on the command line that cannot be used is an error (exit 1, as cp or
    # gzip say of one file among many); one found in a folder is only skipped
    named = {p.resolve() for p in paths if not p.is_dir()}
    refused: list[Path] = []

    def report_line(outcome: ImageOutcome) -> None:
        if outcome.status == "skipped":
            echo(f"skipped {outcome.path}: {outcome.detail}", err=True)
            if outcome.reason != "grid" and Path(outcome.path).resolve() in named:
                refused.append(outcome.path)
        elif outcome.status == "unmatched" and verbose:
            echo(f"unmatched {outcome.path}: {outcome.detail}", err=True)

    from ..capture.nul_safe import make_nul_safe

    conn = app_context(ctx).db.connect()
    make_nul_safe(conn)  # a NUL in an image's prompt: stripped, as in a checkpoint's metadata
    report = link_images(conn, list(paths), recursive=recursive, lora_dirs=list(lora_dirs),
                         on_outcome=report_line)  # fmt: skip
    echo(report.summary())
    if report.unmatched and not verbose:
        click.echo("(--verbose lists the unmatched images and why)", err=True)
    if refused:
        ctx.exit(1)
