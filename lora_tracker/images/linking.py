"""Linking rendered test images to the epoch checkpoints they were made with: read each
image's metadata, find its LoRAs among the tracked checkpoints, and record one
``prompt_test_results`` row per (epoch, image) through ``image_results.link_image_once``.

Bad images never stop a batch: an unreadable, damaged, metadata-less or grid image is
skipped with its reason, an image whose LoRAs are not tracked is counted as unmatched.
Re-running over the same images writes nothing (the rows are keyed by the image's
SHA-256, and an unchanged row is left alone), and reads only what is new: a linked image
whose file was not written since it was linked (mtime before ``captured_at``) is not read
again.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from ..image_results import TestImage, copy_of, link_image_once, linked_paths
from ..pg import Connection
from .matching import CheckpointIndex, Match
from .model import ImageMetadata, NotUsable
from .reader import ReadImage, is_image_file, read_image

log = logging.getLogger(__name__)

BATCH = 200  # images per transaction
READERS = 2  # threads reading images (this machine has 2 cores)

_MAX_BIGINT = 2**63 - 1
_MAX_INT = 2**31 - 1


@dataclass
class ImageOutcome:
    """What became of one image."""

    path: Path
    status: str  # linked, unchanged, unmatched, skipped
    reason: str = ""  # for skipped: grid, no metadata, unreadable, not an image
    detail: str = ""
    matches: list[Match] = field(default_factory=list)


@dataclass
class LinkReport:
    """The images of one `lora-tracker images` call, counted."""

    linked: int = 0  # images with a new or changed result
    unchanged: int = 0  # images already linked, as they are
    epochs: set[int] = field(default_factory=set)
    runs: set[int] = field(default_factory=set)
    unmatched: list[ImageOutcome] = field(default_factory=list)
    skipped: list[ImageOutcome] = field(default_factory=list)
    hashed_checkpoints: int = 0

    @property
    def skipped_by_reason(self) -> Counter[str]:
        return Counter(o.reason for o in self.skipped)

    def summary(self) -> str:
        """One line: ``Linked 812 images to 40 epochs of 4 runs; 3 unmatched, ...``."""
        head = f"Linked {_n(self.linked, 'image')}"
        if self.linked:
            head += f" to {_n(len(self.epochs), 'epoch')} of {_n(len(self.runs), 'run')}"
        if self.unchanged:
            head += f" ({self.unchanged} already linked)"
        tail = []
        if self.unmatched:
            tail.append(f"{len(self.unmatched)} unmatched")
        for reason, count in sorted(self.skipped_by_reason.items()):
            tail.append(f"{count} {reason}" if reason == "unreadable" else
                        f"{count} skipped ({reason})")  # fmt: skip
        if not (self.linked or self.unchanged or tail):
            return head + ": no PNG, JPEG or WebP file found"
        line = head + ("; " + ", ".join(tail) if tail else "")
        if self.hashed_checkpoints:
            line += f"; hashed {_n(self.hashed_checkpoints, 'checkpoint')} once, for matching"
        return line


def find_images(paths: Iterable[Path], *, recursive: bool = True) -> Iterator[Path]:
    """The image files named or found in ``paths`` (folders walked in name order)."""
    for path in paths:
        if path.is_dir():
            if recursive:
                for root, dirs, files in os.walk(path):
                    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                    for name in sorted(files):
                        if is_image_file(Path(name)):
                            yield Path(root) / name
            else:
                yield from (p for p in sorted(path.iterdir()) if p.is_file() and is_image_file(p))
        else:
            yield path


def link_images(
    conn: Connection,
    paths: Iterable[Path],
    *,
    recursive: bool = True,
    lora_dirs: list[Path] | None = None,
    on_outcome: Callable[[ImageOutcome], None] | None = None,
) -> LinkReport:
    """Link every image in ``paths`` (files or folders) to the epochs of its LoRAs."""
    index = CheckpointIndex(conn, lora_dirs=lora_dirs)
    report = LinkReport()
    batch: list[Path] = []
    for path in find_images(paths, recursive=recursive):
        batch.append(path.absolute())
        if len(batch) >= BATCH:
            _link_batch(conn, index, batch, report, on_outcome)
            batch = []
    if batch:
        _link_batch(conn, index, batch, report, on_outcome)
    report.hashed_checkpoints = index.hashed_files
    return report


def _link_batch(
    conn: Connection,
    index: CheckpointIndex,
    paths: list[Path],
    report: LinkReport,
    on_outcome: Callable[[ImageOutcome], None] | None,
) -> None:
    ready: list[tuple[ReadImage, list[Match]]] = []
    outcomes: list[ImageOutcome] = []
    linked_before = untouched_since_linked(conn, paths)
    outcomes.extend(ImageOutcome(p, "unchanged") for p in paths if p in linked_before)
    paths = [p for p in paths if p not in linked_before]
    # files are read (and checkpoints hashed) outside any transaction; two readers, as
    # hashing and Pillow's checks let go of the GIL
    reads = _read_all(paths)
    linked = linked_paths(conn, [r.sha256 for r in reads if not isinstance(r, NotUsable)])
    for path, read in zip(paths, reads, strict=True):
        if isinstance(read, NotUsable):
            outcomes.append(ImageOutcome(path, "skipped", read.reason, read.detail))
            continue
        original = copy_of(str(path), linked.setdefault(read.sha256, str(path)))
        if original is not None:  # (the first of several copies in this pass is linked)
            outcomes.append(ImageOutcome(path, "unchanged", detail=f"a copy of {original}"))
            continue
        if not read.metadata.loras:
            outcomes.append(ImageOutcome(path, "unmatched", detail="made with no LoRA"))
            continue
        resolution = index.resolve(read.metadata.loras)
        if not resolution.matches:
            outcomes.append(ImageOutcome(path, "unmatched", detail="; ".join(resolution.misses)))
            continue
        ready.append((read, resolution.matches))
    outcomes.extend(_link_ready(conn, ready))
    for outcome in outcomes:
        if outcome.status == "skipped":
            report.skipped.append(outcome)
        elif outcome.status == "unmatched":
            report.unmatched.append(outcome)
        else:
            if outcome.status == "linked":
                report.linked += 1
                report.epochs.update(m.epoch_result_id for m in outcome.matches)
                report.runs.update(m.training_run_id for m in outcome.matches)
            else:
                report.unchanged += 1
        if on_outcome is not None:
            on_outcome(outcome)


def untouched_since_linked(conn: Connection, paths: list[Path]) -> set[Path]:
    """The images already linked whose file has not been written since: a second run
    skips them without reading them (a file rewritten since is read again)."""
    rows = conn.execute(
        "SELECT image_path, min(captured_at) AS linked_at FROM prompt_test_results"
        " WHERE image_path = ANY(%s) AND result_key LIKE 'image:%%'"
        " AND captured_at IS NOT NULL GROUP BY image_path",
        ([str(p) for p in paths],),
    ).fetchall()
    linked = {row["image_path"]: row["linked_at"].timestamp() for row in rows}
    untouched = set()
    for path in paths:
        linked_at = linked.get(str(path))
        if linked_at is None:
            continue
        try:
            if path.stat().st_mtime < linked_at:
                untouched.add(path)
        except OSError:
            continue
    return untouched


def _read_all(paths: list[Path]) -> list[ReadImage | NotUsable]:
    def read(path: Path) -> ReadImage | NotUsable:
        try:
            return read_image(path)
        except NotUsable as exc:
            return exc

    if len(paths) < 4:
        return [read(p) for p in paths]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="lora-tracker-image") as pool:
        return list(pool.map(read, paths))


def _link_ready(conn: Connection, ready: list[tuple[ReadImage, list[Match]]]) -> list[ImageOutcome]:
    """One transaction for the batch; should the database refuse one image's values, the
    batch is done again with a savepoint per image, so only that one is skipped."""
    try:
        with conn.transaction():
            prompts: dict[str, dict[str, Any]] = {}
            return [_link_one(conn, image, matches, prompts) for image, matches in ready]
    except (psycopg.DataError, psycopg.IntegrityError):
        log.info("an image's values were refused; linking this batch one image at a time")
    outcomes = []
    with conn.transaction():
        for image, matches in ready:
            prompts = {}
            try:
                with conn.transaction():
                    outcomes.append(_link_one(conn, image, matches, prompts))
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                detail = f"the database refused its metadata ({str(exc).splitlines()[0]})"
                outcomes.append(ImageOutcome(image.path, "skipped", "unreadable", detail))
    return outcomes


def _link_one(
    conn: Connection,
    image: ReadImage,
    matches: list[Match],
    prompts: dict[str, dict[str, Any]],
) -> ImageOutcome:
    changes = set()
    for match in matches:
        _row, change = link_image_once(
            conn, match.epoch_result_id, test_image(image.metadata, match.lora.weight),
            image_path=str(image.path), image_sha256=image.sha256,
            source=f"{image.metadata.generator} image {image.path}",
            source_run_id=match.training_run_id, prompts=prompts,
        )  # fmt: skip
        changes.add(change)
    status = "unchanged" if changes == {"unchanged"} else "linked"
    return ImageOutcome(image.path, status, matches=matches)


def test_image(meta: ImageMetadata, lora_weight: float | None) -> TestImage:
    """The TestImage of one image for one of its LoRAs, with values the schema cannot hold
    (a 64-bit ComfyUI seed, a 1000 CFG scale) left to the raw metadata."""
    return TestImage(
        prompt=_text(meta.prompt) or "",
        negative_prompt=_text(meta.negative_prompt),
        seed=_bounded(meta.seed, 0, _MAX_BIGINT),
        steps=_bounded(meta.steps, 1, _MAX_INT),
        cfg_scale=_decimal(meta.cfg_scale, 999.99, 2, minimum=0.0),
        sampler=_text(meta.sampler),
        scheduler=_text(meta.scheduler),
        width=_bounded(meta.width, 1, _MAX_INT),
        height=_bounded(meta.height, 1, _MAX_INT),
        lora_weight=_decimal(lora_weight, 999.999, 3),
        generator=meta.generator,
        metadata=meta.raw,
    )


test_image.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def _text(value: str | None) -> str | None:
    return value.replace("\x00", "") if value is not None else None


def _bounded(value: int | None, low: int, high: int) -> int | None:
    return value if value is not None and low <= value <= high else None


def _decimal(
    value: float | None, limit: float, places: int, minimum: float | None = None
) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    value = round(value, places)
    low = -limit if minimum is None else minimum
    return value if low <= value <= limit else None


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
