"""`lora-tracker watch --images DIR`: the watcher's part for rendered test images.

Every image file saved under an image folder (A1111's outputs, ComfyUI's output) is read
once its size has held still for the watcher's ``settle_s``, into an ``ImageObserved``
event that goes through the same delivery as a checkpoint's (applied exactly once,
spooled while the database is away, replayed later). The backfill reads the images not
linked yet (or written since). A bad, metadata-less or grid image is skipped with one log
line and never stops the watcher.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchdog.events import FileSystemEventHandler

from ..images.linking import find_images
from ..images.model import NotUsable
from ..images.reader import is_image_file
from .image_capture import observe_image

if TYPE_CHECKING:
    from .apply import Applied
    from .delivery import DeliveryOutcome, Event
    from .watcher import BackfillStats, Watcher

log = logging.getLogger(__name__)


class ImageFolders:
    """The image folders of one Watcher, checked on its worker thread."""

    def __init__(self, watcher: Watcher, folders: list[Path]) -> None:
        self.watcher = watcher
        self.folders = [folder.absolute() for folder in folders]

    def covers(self, path: Path) -> bool:
        """An image file under one of the image folders."""
        return is_image_file(path) and any(f in path.parents for f in self.folders)

    def watch_with(self, observer: Any) -> None:
        handler = _ImageHandler(self)
        for folder in self.folders:
            observer.schedule(handler, str(folder), recursive=True)

    def backfill(self, stats: BackfillStats) -> None:
        """The images on disk that are not linked yet (or were written since)."""
        from .watcher import FileState

        paths = list(find_images(self.folders))
        stats.images = len(paths)
        linked = self.watcher.delivery.linked_images(paths)
        events: list[Event] = []
        for path in paths:
            key = str(path)
            try:
                st = path.stat()
            except OSError:
                continue
            identity = (st.st_size, st.st_mtime_ns)
            if path in linked:
                self.watcher._state[key] = FileState(identity, "recorded")
                stats.images_linked += 1
                continue
            try:
                events.append(observe_image(path))
                self.watcher._state[key] = FileState(identity, "recorded")
            except NotUsable as exc:
                log.info("skipped %s: %s", path, exc.detail)
                self.watcher._state[key] = FileState(identity, "corrupt")
                stats.images_skipped += 1
        for event, outcome, applied in self.watcher.delivery.submit_many(events).outcomes:
            self.watcher._after_delivery(event, outcome)
            _log_image(event, outcome, applied)
            if outcome == "recorded":
                stats.images_linked += 1
            elif outcome == "unmatched":
                stats.images_unmatched += 1
            elif outcome == "spooled":
                stats.spooled += 1

    def check(self, path: str) -> None:
        """A new or changed image: read once it holds still, then delivered."""
        from .watcher import FileState

        watcher = self.watcher
        try:
            st = os.stat(path)
        except FileNotFoundError:
            watcher._state.pop(path, None)
            return
        identity = (st.st_size, st.st_mtime_ns)
        state = watcher._state.get(path)
        now = time.monotonic()
        unchanged = state is not None and state.identity == identity
        if unchanged and state is not None and watcher._settled(state, now):
            return
        if watcher._settling(path, identity, state, now):
            return  # still being written, perhaps: read once its size holds still
        try:
            event = observe_image(Path(path))
        except NotUsable as exc:
            log.info("skipped %s: %s", path, exc.detail)
            watcher._state[path] = FileState(identity, "corrupt")
            return
        outcome, applied = watcher.delivery.submit(event)
        watcher._state[path] = FileState(identity, "recorded")
        watcher._after_delivery(event, outcome)
        _log_image(event, outcome, applied)


class _ImageHandler(FileSystemEventHandler):
    """watchdog events under an image folder: each image file written schedules a check;
    a folder moved in schedules its images."""

    def __init__(self, images: ImageFolders) -> None:
        super().__init__()
        self.images = images

    def dispatch(self, event: Any) -> None:
        if event.event_type in ("opened", "closed_no_write", "deleted"):
            return
        raw = getattr(event, "dest_path", None) or event.src_path
        path = Path(os.fsdecode(raw))
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                for image in find_images([path]):
                    self.images.watcher.schedule(str(image), 0.2)
            return
        if self.images.covers(path):
            self.images.watcher.schedule(str(path))


def _log_image(event: Event, outcome: DeliveryOutcome, applied: Applied | None) -> None:
    if event.kind != "image":
        return
    name = event.path  # the whole path, as the skipped lines give it
    if outcome in ("recorded", "duplicate") and applied is not None and applied.links:
        where = ", ".join(f"run {run} epoch {epoch}" for run, epoch in applied.links)
        log.info("linked %s -> %s", name, where)
    elif outcome == "unmatched":
        log.info("unmatched %s: %s", name, applied.detail if applied else "no tracked LoRA")
    elif outcome == "spooled":
        log.info("spooled %s (database unavailable)", name)
    elif outcome == "unsaved":
        log.info("not linked yet %s (database unavailable, spool not writable)", name)
