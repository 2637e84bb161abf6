"""Test images seen by the watcher (`lora-tracker watch --images DIR`): a file becomes an
``ImageObserved`` event (its SHA-256 and generation metadata, read with
``lora_tracker.images``), which goes through the recorder like a checkpoint's (applied
exactly once, spooled while the database is away) and becomes ``prompt_test_results`` rows
here, as `lora-tracker images` makes them.

On the watcher's path a checkpoint without A1111's hash is hashed only when it is named
like the image's LoRA (one file): the full search of this host's checkpoints is left to
`lora-tracker images`, so a large folder of unhashed checkpoints never holds up capture.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..image_results import copy_of, link_image_once, linked_paths
from ..images.linking import test_image
from ..images.matching import CheckpointIndex, Match
from ..images.model import ImageMetadata, LoraRef
from ..images.reader import read_image
from ..pg import Connection
from .events import ImageObserved


@dataclass
class ImageLinked:
    """What applying an image event did: the epochs it was linked to, or why none."""

    matches: list[Match] = field(default_factory=list)
    detail: str = ""


def observe_image(path: Path) -> ImageObserved:
    """Read an image file into an event. Raises ``images.model.NotUsable`` (grid, no
    metadata, unreadable, not an image)."""
    read = read_image(path.absolute())
    return ImageObserved(
        path=str(read.path), sha256=read.sha256, size_bytes=read.size_bytes,
        metadata=dataclasses.asdict(read.metadata),
    )  # fmt: skip


def metadata_of(event: ImageObserved) -> ImageMetadata:
    """The ImageMetadata an event carries."""
    data: dict[str, Any] = dict(event.metadata)
    loras = [LoraRef(**ref) for ref in data.pop("loras", [])]
    return ImageMetadata(**data, loras=loras)


def record_image(conn: Connection, event: ImageObserved) -> ImageLinked:
    """Link the image to the epoch of each tracked LoRA it was made with (in the caller's
    transaction). An image whose LoRAs are not tracked links nowhere (``detail`` says why)."""
    meta = metadata_of(event)
    if not meta.loras:
        return ImageLinked(detail="made with no LoRA")
    original = copy_of(event.path, linked_paths(conn, [event.sha256]).get(event.sha256))
    if original is not None:
        return ImageLinked(detail=f"the same image as {original}, linked already")
    index = CheckpointIndex(conn, host=event.host, hash_missing="named")
    resolution = index.resolve(meta.loras)
    if not resolution.matches:
        return ImageLinked(detail="; ".join(resolution.misses))
    for match in resolution.matches:
        link_image_once(
            conn, match.epoch_result_id, test_image(meta, match.lora.weight),
            image_path=event.path, image_sha256=event.sha256,
            source=f"{meta.generator} image {event.path}", source_run_id=match.training_run_id,
        )  # fmt: skip
    return ImageLinked(resolution.matches)
