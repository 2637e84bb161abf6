"""Thumbnails made ahead of need, one at a time in one background thread.

When a run is looked at in the dashboard, the thumbnails its judging view's grid asks for
are made before that view is opened: the first look at a new run's 1024 px test images
then costs no Pillow work in the page's own requests. Best effort: an image that cannot be
made into a thumbnail is left to the request that asks for it (which says why).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

GRID_SIZES = (128, 256)  # what the judging view's grid asks for, by cell size
MAX_IMAGES = 5000  # per server: a bound on what one server remembers having queued


class ThumbnailWarmer:
    """Makes the grid thumbnails of the images given to :meth:`warm`, each image once per
    server, in a daemon thread started on first use; :meth:`close` stops it."""

    def __init__(self, home: Path, sizes: tuple[int, ...] = GRID_SIZES) -> None:
        self.home = home
        self.sizes = sizes
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def warm(self, paths: Iterable[str | None]) -> int:
        """Queue the images not queued before; how many were."""
        with self._lock:
            if self._closed:
                return 0
            room = MAX_IMAGES - len(self._seen)
            new = [p for p in dict.fromkeys(paths) if p and p not in self._seen][: max(0, room)]
            self._seen.update(new)
            if new and self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="lora-tracker-thumbnails", daemon=True
                )
                self._thread.start()
        for path in new:
            self._queue.put(path)
        return len(new)

    def _run(self) -> None:
        from ..thumbnails import ThumbnailError, thumbnail_path

        while (path := self._queue.get()) is not None:
            for size in self.sizes:
                try:
                    thumbnail_path(path, None, size, home=self.home)
                except (ThumbnailError, OSError, ValueError) as exc:
                    log.debug("no thumbnail made ahead for %s: %s", path, exc)
                    break

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the image in hand (the rest of the queue is dropped)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        while True:  # drop what is still queued, so the stop comes next
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        thread.join(timeout)
