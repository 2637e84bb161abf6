"""The watch daemon: backfill what is on disk, then record each new checkpoint as soon as it
is complete.

watchdog reports file events; each interesting path is (re)checked by one worker thread a
moment later. A safetensors file is complete when its size reaches what its header
promises (kohya writes in place, no rename), a .ckpt/.pt file when its size has held still
for ``settle_s``. Nothing here can stop the daemon: a bad file is logged and skipped, a
database outage sends events to the spool, an unexpected error is logged and the loop goes
on.
"""

from __future__ import annotations

import functools
import heapq
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .apply import Applied
from .delivery import DeliveryOutcome, Event, EventDelivery
from .events import (
    CheckpointObserved,
    CheckpointRemoved,
    SamplesObserved,
    observe_checkpoint,
    observe_sample,
    steady_folders,
    this_host,
)
from .files import (
    ADAPTER_FILES,
    classify_checkpoint,
    classify_sample,
    in_skipped_folder,
    in_state_folder,
    is_candidate,
    is_temporary,
    output_dir_of,
    skipped_folder_name,
)
from .safetensors_header import CorruptCheckpoint, IncompleteCheckpoint

if TYPE_CHECKING:
    from .image_watch import ImageFolders

log = logging.getLogger(__name__)

Status = Literal[
    "recorded", "incomplete", "settling", "suspect", "corrupt", "stuck", "failed", "unsaved"
]

# Opening and reading a file are events too on Linux (inotify): the watcher's own reads
# must not schedule new checks of the file it just read.
IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})

MAX_BACKOFF_S = 300.0  # a check that keeps failing is retried at most this often
GUARDED_NEW_RUNS = 5  # a backfill checks the first few settings of the runs it records anew
LISTED_FILES = 5  # a backfill logs a run's recorded files one by one up to this many
MAX_SPANS = 4  # a run's epochs said as spans (1-40, 42-49) up to this many, else a range
# files a backfill writes in one transaction: one batch is fewer round trips (each costs
# 10-40 ms to a hosted database) than writing chunks while reading the next, which was
# measured slower even locally (the two threads share the interpreter lock)
BACKFILL_BATCH = 1000
UNREADABLE_CHECK_S = 10.0  # how often folders skipped for their permissions are tried again
REPLAY_EVERY_S = 5.0  # how often the spool and unsaved events are offered to the database
FOLDER_MARK = "\x00folder:"  # a queued folder rescan (no path holds a NUL)

# Folder events that may bring files no file event announced: a folder moved in, or one
# whose permissions now let it be read.
FOLDER_EVENTS = frozenset({"created", "moved", "attrib"})


@dataclass
class FileState:
    identity: tuple[int, int]  # size, mtime_ns
    status: Status
    since: float = field(default_factory=time.monotonic)
    failures: int = 0  # checks in a row that raised (for back-off)


@dataclass
class BackfillStats:
    checkpoints: int = 0
    recorded: int = 0
    unchanged: int = 0
    spooled: int = 0
    skipped: int = 0
    removed: int = 0
    rejected: int = 0
    unsaved: int = 0
    deleted: int = 0  # files of runs deleted with `cleanup`, left out
    samples_linked: int = 0  # sample images added to their epochs now (not known before)
    images: int = 0  # test images under --images folders
    images_linked: int = 0  # linked now or before
    images_unmatched: int = 0
    images_skipped: int = 0


def _samples_linked(
    outcomes: list[tuple[Event, DeliveryOutcome, Applied | None]], known: Any
) -> int:
    """How many sample images the recorded events added to their epochs (the backfill's
    count): those of checkpoint and sample events, less the ones recorded before."""
    recorded = [event for event, outcome, _ in outcomes if outcome == "recorded"]
    paths = _carried_samples(recorded)
    for event in recorded:
        if isinstance(event, SamplesObserved):
            paths.update(event.paths)
    return len(paths - (known.samples if known is not None else set()))


def _carried_samples(events: list[Event]) -> set[str]:
    """The sample images the checkpoint events among ``events`` bring along (each event of
    a run brings all the run's: a run's next event is looked at only if it differs)."""
    paths: set[str] = set()
    last: dict[tuple[str, str], dict[int, list[str]]] = {}
    for event in events:
        if not isinstance(event, CheckpointObserved):
            continue
        run = (event.output_dir, event.output_name)
        if last.get(run) != event.samples_by_epoch:
            last[run] = event.samples_by_epoch
            paths.update(path for found in event.samples_by_epoch.values() for path in found)
    return paths


def scan(
    folders: list[Path], unreadable: Callable[[OSError], None] | None = None
) -> Iterator[Path]:
    """Checkpoint and sample files under ``folders``, skipping state and hidden folders.
    A folder that cannot be read is left out (and handed to ``unreadable``)."""

    def say(error: OSError) -> None:
        log.warning("cannot read %s: %s", error.filename, error.strerror or error)

    for folder in folders:
        for root, dirs, files in os.walk(folder, onerror=unreadable or say):
            dirs[:] = sorted(d for d in dirs if not skipped_folder_name(d))
            base = Path(root)
            for filename in sorted(files):
                path = base / filename
                if is_candidate(path):
                    yield path


class Watcher:
    """Watches folders and hands what it finds to an EventDelivery (which its creator closes)."""

    def __init__(
        self,
        folders: list[Path],
        delivery: EventDelivery,
        *,
        run_name: str | None = None,
        config_path: Path | None = None,
        run_key: str | None = None,
        prompts_path: Path | None = None,
        poll: bool = False,
        settle_s: float = 1.0,
        retry_s: float = 0.2,
        stuck_after_s: float = 10.0,
        replay_every_s: float = REPLAY_EVERY_S,
        on_delivered: Callable[[Event, DeliveryOutcome, Applied | None], None] | None = None,
        image_folders: list[Path] | None = None,
    ) -> None:
        self.folders = [folder.absolute() for folder in folders]
        # rendered test images (watch --images): capture/image_watch.py, imported only then
        self.images: ImageFolders | None = None
        if image_folders:
            from .image_watch import ImageFolders

            self.images = ImageFolders(self, image_folders)
        self.delivery = delivery
        self.run_name = run_name
        self.config_path = config_path
        self.run_key = run_key
        self.prompts_path = prompts_path  # kohya's --sample_prompts file of these runs
        self.poll = poll
        self.settle_s = settle_s
        self.retry_s = retry_s
        self.stuck_after_s = stuck_after_s
        self.replay_every_s = replay_every_s
        self.on_delivered = on_delivered or _log_delivery
        self.host = this_host()
        self._state: dict[str, FileState] = {}
        self._queue: list[tuple[float, str]] = []  # heap of (due, path)
        self._due: dict[str, float] = {}
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._observer: Any = None
        self._thread: threading.Thread | None = None
        self._last_replay = 0.0
        self._backfilled = threading.Event()
        self.backfill_stats: BackfillStats | None = None
        self._unsaved: list[Event] = []  # neither recorded nor spooled yet, in order
        self._unreadable: set[str] = set()  # folders skipped for their permissions
        self._last_unreadable_check = 0.0
        self._last_retry = 0.0
        self._errors = _Throttle()
        self._final = False  # this backfill is all there is (watch --once)

    # -- backfill ----------------------------------------------------------------------
    def backfill(
        self, progress: Callable[[int, int], None] | None = None, *, final: bool = False
    ) -> BackfillStats:
        """Record what is already on disk (and what vanished while nobody watched): every
        file read, then delivered in transactions of up to `BACKFILL_BATCH` files.
        ``final``: nothing looks again afterwards (`watch --once`): a file still being
        written is said to be left out, not to be recorded later."""
        self._final = final
        stats = BackfillStats()
        if not self.delivery.nothing_spooled():  # what waits goes first, and then counts
            self.delivery.replay()  # as known (not recorded twice)
        # what the database knows is asked (connecting first, perhaps) while the folders
        # are listed: the two overlap
        with ThreadPoolExecutor(1, thread_name_prefix="lora-tracker-known") as pool:
            asking = pool.submit(
                self.delivery.known_files, self.host, [str(f) for f in self.folders]
            )
            found = list(scan(self.folders, self._unreadable_folder))
            checkpoints = [p for p in found if classify_checkpoint(p) is not None]
            seen: dict[str, os.stat_result | None] = {}  # each file's stat, taken once
            checkpoints.sort(key=lambda path: _mtime_order(path, seen))
            known = asking.result()
        stats.checkpoints = len(checkpoints)
        events: list[Event] = []
        with steady_folders(seen):
            self._observe_all(checkpoints, seen, known, stats, events, progress)
        if known is not None:
            self._vanished_and_samples(found, checkpoints, known, stats, events)
        outcomes = self.delivery.submit_many(events, BACKFILL_BATCH).outcomes
        new_runs = self._count_outcomes(outcomes, stats)
        stats.samples_linked = _samples_linked(outcomes, known)
        self._guard_new_runs(new_runs)  # trainings found for the first time
        if self.images is not None:
            self.images.backfill(stats)
        return stats

    def _count_outcomes(
        self, outcomes: list[tuple[Event, DeliveryOutcome, Applied | None]], stats: BackfillStats
    ) -> list[str]:
        """Count and log a backfill's outcomes (a run's recorded or spooled files, when more
        than `LISTED_FILES`, and a deleted run's files in one line per run); returns the runs
        recorded for the first time."""
        new_runs: list[str] = []
        left_out: dict[tuple[str, str], int] = {}
        by_run: dict[str, list[tuple[CheckpointObserved, Applied]]] = {}
        spooled: dict[tuple[str, str], list[CheckpointObserved]] = {}
        for event, outcome, applied in outcomes:
            if outcome == "deleted" and isinstance(event, CheckpointObserved):
                stats.deleted += 1  # (only a checkpoint of a deleted run is left out)
                where = (event.output_dir, event.output_name)
                left_out[where] = left_out.get(where, 0) + 1
                continue
            if outcome == "spooled":
                stats.spooled += 1
            elif outcome == "unsaved":
                stats.unsaved += 1
            elif outcome == "rejected":
                stats.rejected += 1
            elif outcome in ("recorded", "duplicate") and event.kind == "checkpoint":
                stats.recorded += 1
            self._after_delivery(event, outcome)
            # (the default log: a backfill's lines by run; another on_delivered: each)
            said = (
                event
                if isinstance(event, CheckpointObserved) and self.on_delivered is _log_delivery
                else None
            )
            if said and outcome in ("recorded", "duplicate") and applied and applied.run_name:
                by_run.setdefault(applied.run_name, []).append((said, applied))
            elif said and outcome == "spooled":
                spooled.setdefault((said.output_dir, said.output_name), []).append(said)
            elif event.kind == "checkpoint":
                self.on_delivered(event, outcome, applied)
            if outcome == "recorded" and applied and applied.new_run and applied.run_name:
                new_runs.append(applied.run_name)
        _log_recorded(by_run)
        _log_spooled(spooled)
        for (folder, name), count in left_out.items():
            log.info(
                "left out %s of %s in %s: deleted with their run "
                "(`lora-tracker record --force FILE` records one again)",
                _files(count), name, folder,
            )  # fmt: skip
        return new_runs

    def _vanished_and_samples(
        self,
        found: list[Path],
        checkpoints: list[Path],
        known: Any,
        stats: BackfillStats,
        events: list[Event],
    ) -> None:
        """Add removals of known checkpoints gone from disk, and sample images not known
        yet (nor carried by a checkpoint event), to ``events``."""
        later: list[Event] = []
        on_disk = {str(p) for p in checkpoints}
        for known_path, (_, _, present) in known.checkpoints.items():
            if present and known_path not in on_disk and not os.path.exists(known_path):
                later.append(CheckpointRemoved(path=known_path))
                stats.removed += 1
        carried = _carried_samples(events)  # what the checkpoint events bring along already
        for path in found:
            absolute = str(path.absolute())
            if absolute in carried or not classify_sample(path):
                continue
            if absolute not in known.samples:
                sample = self._observe_sample(path)
                if sample is not None:
                    later.append(sample)
            elif absolute not in known.linked_samples:
                # recorded, not in the prompt grid: linked now if a prompts file is known
                # (one written since, or a PNG that was still being written)
                sample = self._observe_sample(path)
                if sample is not None and sample.sample_prompts is not None:
                    later.append(sample)
        events.extend(later)

    def _observe_all(
        self,
        checkpoints: list[Path],
        seen: dict[str, os.stat_result | None],
        known: Any,
        stats: BackfillStats,
        events: list[Event],
        progress: Callable[[int, int], None] | None,
    ) -> None:
        for index, path in enumerate(checkpoints, 1):
            try:
                event = self._backfill_one(path, seen.get(str(path)), known, stats)
            except Exception as exc:  # one bad file never costs the others
                log.warning("skipped %s: %s", path, _describe(exc))
                self._state.pop(str(path.absolute()), None)
                stats.skipped += 1
                continue
            if event is not None:
                events.append(event)
            if progress and (index % 100 == 0 or index == len(checkpoints)):
                progress(index, len(checkpoints))

    def _after_delivery(self, event: Event, outcome: DeliveryOutcome) -> None:
        """An event neither recorded nor spooled (a full disk while the database is down)
        is kept here and offered again until it goes through."""
        if outcome == "unsaved":
            self._unsaved.append(event)

    def _backfill_one(
        self, path: Path, st: os.stat_result | None, known: Any, stats: BackfillStats
    ) -> Event | None:
        """``st``: the file's stat as the listing was sorted (None: it was gone then)."""
        key = str(path.absolute())
        if st is None:
            return None
        identity = (st.st_size, st.st_mtime_ns)
        if known is not None and key in known.checkpoints:
            size, mtime, present = known.checkpoints[key]
            if present and size == st.st_size and _same_time(mtime, st.st_mtime):
                self._state[key] = FileState(identity, "recorded")
                stats.unchanged += 1
                return None
        try:
            event = self._observe(path, st)
        except IncompleteCheckpoint as exc:
            if self._final:
                log.info("left out, not complete yet: %s", exc)  # (nothing looks again)
            else:
                log.info("not complete yet, %s (recorded once it is)", exc)
            self._state[key] = FileState(identity, "incomplete")
            self.schedule(key, self.retry_s)  # perhaps still being written
            stats.skipped += 1
            return None
        except (CorruptCheckpoint, ValueError, OSError) as exc:
            log.warning("skipped %s: %s", path, exc)
            self._state[key] = FileState(identity, "corrupt")
            stats.skipped += 1
            return None
        self._state[key] = FileState(identity, "recorded")
        return event

    def _observe(self, path: Path, stat: os.stat_result | None = None) -> CheckpointObserved:
        return observe_checkpoint(
            path, run_name=self.run_name, config_path=self.config_path, run_key=self.run_key,
            prompts_path=self.prompts_path, stat=stat,
        )  # fmt: skip

    def _observe_sample(self, path: Path) -> SamplesObserved | None:
        return observe_sample(path, prompts_path=self.prompts_path, config_path=self.config_path)

    # -- live watching -----------------------------------------------------------------
    def start(self, *, backfill: bool = True) -> None:
        """Start watching; returns at once.

        File events are collected from this moment; the worker thread first backfills
        (when asked) and then handles them, so nothing saved meanwhile is missed and one
        thread alone talks to the database.
        """
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        observer = PollingObserver(timeout=0.5) if self.poll else Observer()
        handler = _handler(self)
        for folder in self.folders:
            observer.schedule(handler, str(folder), recursive=True)
        if self.images is not None:
            self.images.watch_with(observer)
        observer.daemon = True
        observer.start()
        self._observer = observer
        self._thread = threading.Thread(
            target=self._work, args=(backfill,), name="lora-tracker-watch", daemon=True
        )
        self._thread.start()

    def wait_backfilled(self, timeout: float | None = None) -> BackfillStats | None:
        """The worker's backfill statistics, once it has finished (None on timeout)."""
        self._backfilled.wait(timeout)
        return self.backfill_stats if self._backfilled.is_set() else None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching and wait for the worker (pending checks are dropped). The
        delivery stays open: whoever created it closes it."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def schedule(self, path: str, delay: float = 0.05) -> None:
        """Check ``path`` after ``delay`` seconds (earlier requests win)."""
        due = time.monotonic() + delay
        with self._cond:
            if path in self._due and self._due[path] <= due:
                return
            self._due[path] = due
            heapq.heappush(self._queue, (due, path))
            self._cond.notify()

    def idle(self) -> bool:
        """True when no check is waiting (for tests and --once)."""
        with self._cond:
            return not self._due

    def _next_due(self) -> str | None:
        with self._cond:
            while not self._stopping.is_set():
                while self._queue and self._due.get(self._queue[0][1]) != self._queue[0][0]:
                    heapq.heappop(self._queue)  # superseded entry
                timeout = 1.0
                if self._queue:
                    due, path = self._queue[0]
                    timeout = due - time.monotonic()
                    if timeout <= 0:
                        heapq.heappop(self._queue)
                        del self._due[path]
                        return path
                self._cond.wait(min(timeout, 1.0))
                if not self._queue:
                    return None  # woke up idle: let the worker do housekeeping
            return None

    def _work(self, backfill: bool) -> None:
        stats = BackfillStats()
        if backfill:
            try:
                stats = self.backfill()
            except Exception as exc:  # pragma: no cover - backfill guards each file itself
                log.error("backfill stopped early, watching new files only: %s", _describe(exc))
        self.backfill_stats = stats
        self._backfilled.set()
        while not self._stopping.is_set():
            path = self._next_due()
            if path is not None and path.startswith(FOLDER_MARK):
                try:
                    self._rescan(path[len(FOLDER_MARK) :])
                except Exception as exc:
                    self._errors.log(logging.WARNING, path, "cannot look into %s: %s",
                                     path[len(FOLDER_MARK) :], _describe(exc))  # fmt: skip
            elif path is not None:
                try:
                    self._check(path)
                except Exception as exc:  # the daemon outlives any single bad file or bug
                    self._check_failed(path, exc)
            try:
                self._check_unreadable()
                self._maybe_replay()
            except Exception as exc:
                self._errors.log(logging.WARNING, "replay", "spool replay failed: %s",
                                 _describe(exc))  # fmt: skip

    def _unreadable_folder(self, error: OSError) -> None:
        folder = str(error.filename)
        if folder not in self._unreadable:  # one line per folder
            log.warning(
                "cannot read %s (%s): its files are recorded once it can be read",
                folder, error.strerror or error,
            )  # fmt: skip
            self._unreadable.add(folder)

    def skipped_folder(self, folder: Path) -> bool:
        """A hidden or trainer-state folder inside a watched one (as the scan skips)."""
        return all(in_skipped_folder(folder, root) for root in self.folders)

    def folder_changed(self, folder: str) -> None:
        """A folder appeared, moved in, or had its permissions changed: look inside."""
        self.schedule(FOLDER_MARK + folder, 0.2)

    def _rescan(self, folder: str) -> None:
        """Check every file of a folder that can be read now (watching it live too)."""
        if not os.access(folder, os.R_OK | os.X_OK):
            return
        if folder in self._unreadable:
            self._unreadable.discard(folder)
            log.info("%s can be read now", folder)
            if self._observer is not None:
                self._observer.schedule(_handler(self), folder, recursive=True)
        for path in scan([Path(folder)], self._unreadable_folder):
            self.schedule(str(path.absolute()))

    def _check_unreadable(self) -> None:
        """Now and then, whether a skipped folder became readable (its permission change
        may have been made higher up, where no event says so)."""
        now = time.monotonic()
        if self._unreadable and now - self._last_unreadable_check >= UNREADABLE_CHECK_S:
            self._last_unreadable_check = now
            for folder in list(self._unreadable):
                if os.access(folder, os.R_OK | os.X_OK):
                    self._rescan(folder)

    def _check_failed(self, path: str, exc: Exception) -> None:
        """Try again later, waiting longer each time; say so in one line now and then."""
        state = self._state.get(path)
        failures = (state.failures if state is not None else 0) + 1
        delay = min(MAX_BACKOFF_S, self.retry_s * 2**failures)
        try:
            st = os.stat(path)
            identity = (st.st_size, st.st_mtime_ns)
        except OSError:
            identity = (-1, -1)
        self._state[path] = FileState(identity, "failed", failures=failures)
        self._errors.log(logging.WARNING, path, "cannot check %s (retrying in %.0f s): %s",
                         Path(path).name, delay, _describe(exc))  # fmt: skip
        self.schedule(path, delay)

    def _maybe_replay(self) -> None:
        now = time.monotonic()
        if now - self._last_replay < self.replay_every_s or self.delivery.database_down:
            return
        self._last_replay = now
        if self._unsaved:
            self._offer_unsaved()
        self.delivery.replay()  # the spool is the delivery's: it knows whether anything waits

    def _offer_unsaved(self) -> None:
        events, self._unsaved = self._unsaved, []
        result = self.delivery.submit_many(events)
        for event, outcome, applied in result.outcomes:
            self._after_delivery(event, outcome)
            if event.kind == "checkpoint" and outcome != "unsaved":
                self.on_delivered(event, outcome, applied)

    def _check(self, path: str) -> None:
        if self.images is not None and self.images.covers(Path(path)):
            self.images.check(path)
        else:
            self._check_file(path)

    def _check_file(self, path: str) -> None:
        p = Path(path)
        name = classify_checkpoint(p)
        if name is None:
            self._check_sample(p)
            return
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._check_removed(path)
            return
        identity = (st.st_size, st.st_mtime_ns)
        state = self._state.get(path)
        now = time.monotonic()
        unchanged = state is not None and state.identity == identity
        if unchanged and state is not None and self._settled(state, now):
            return
        if name.file_format != "safetensors" and self._settling(path, identity, state, now):
            return  # no header to tell: complete once the size holds still
        try:
            event = self._observe(p)
        except IncompleteCheckpoint as exc:
            if unchanged and state is not None and now - state.since > self.stuck_after_s:
                log.warning(
                    "%s: incomplete and not growing, skipped until it changes (%s)", p.name, exc
                )
                self._state[path] = FileState(identity, "stuck")
                return
            if not unchanged:
                self._state[path] = FileState(identity, "incomplete")
            self.schedule(path, self.retry_s)
            return
        except CorruptCheckpoint as exc:
            # a header that fails validation twice on an unchanged file is corrupt
            if unchanged and state is not None and state.status == "suspect":
                log.warning("skipped %s: %s", p.name, exc)
                self._state[path] = FileState(identity, "corrupt")
            else:
                self._state[path] = FileState(identity, "suspect")
                self.schedule(path, 0.5)
            return
        except (ValueError, OSError) as exc:
            log.warning("skipped %s: %s", p.name, exc)
            self._state[path] = FileState(identity, "corrupt")
            return
        outcome, applied = self.delivery.submit(event)
        self._state[path] = FileState(identity, "recorded")
        self._after_delivery(event, outcome)
        self.on_delivered(event, outcome, applied)
        if outcome == "recorded" and applied is not None and applied.new_run:
            self._guard_new_run(applied.run_name)

    def _settled(self, state: FileState, now: float) -> bool:
        """For a file unchanged since its last check: nothing to do now (recorded, judged
        corrupt or stuck, or its back-off check is scheduled)."""
        if state.status in ("recorded", "corrupt", "stuck"):
            return True
        if state.status == "failed":
            backoff = min(MAX_BACKOFF_S, self.retry_s * 2.0**state.failures)
            return now - state.since < backoff * 0.9
        return False

    def _check_sample(self, p: Path) -> None:
        if os.path.exists(p):
            sample = self._observe_sample(p)
            if sample is not None:
                outcome, _ = self.delivery.submit(sample)
                self._after_delivery(sample, outcome)

    def _check_removed(self, path: str) -> None:
        state = self._state.pop(path, None)
        if state is not None and state.status == "recorded":
            removal = CheckpointRemoved(path=path)
            outcome, applied = self.delivery.submit(removal)
            self._after_delivery(removal, outcome)
            log.info("removed %s%s", _shown(path), _removal_said(outcome, applied))

    def _settling(
        self, path: str, identity: tuple[int, int], state: FileState | None, now: float
    ) -> bool:
        """Whether a file without a header is still to hold its size for ``settle_s``
        (then its next check is scheduled)."""
        if state is None or state.identity != identity:
            self._state[path] = FileState(identity, "settling")
            self.schedule(path, self.settle_s)
            return True
        if now - state.since < self.settle_s:
            self.schedule(path, self.settle_s - (now - state.since))
            return True
        return False

    def _guard_new_run(self, run_name: str | None) -> None:
        """The first checkpoint of a new run: the launch guard's banner when its settings
        already failed (a watcher cannot stop the training; LORA_TRACKER_GUARD=off: no check)."""
        from ..guard import check_recorded_run, mode_or_default, report

        mode = mode_or_default()
        if run_name is None or mode == "off":
            return
        report(check_recorded_run(self.delivery.target, run_name), mode, stops=False)

    def _guard_new_runs(self, run_names: list[str]) -> None:
        """``_guard_new_run`` for the new runs of a backfill, asked on the delivery's
        connection once they are committed (a thread and connection each, for the first
        few, if it has gone meanwhile): the first `GUARDED_NEW_RUNS` settings among them,
        each answer said once, naming its runs."""
        from ..guard import (
            check_recorded_runs,
            mode_or_default,
            report,
            same_answers,
            start_recorded_check,
        )  # fmt: skip

        mode = mode_or_default()
        if mode == "off" or not run_names:
            return
        url = self.delivery.target.url
        results = self.delivery.on_connection(
            lambda conn: check_recorded_runs(conn, run_names, url, questions=GUARDED_NEW_RUNS)
        )
        if results is None:
            checks = [
                start_recorded_check(self.delivery.target, name)
                for name in run_names[:GUARDED_NEW_RUNS]
            ]
            results = [check.result() for check in checks]
        for result in same_answers(results):
            report(result, mode, stops=False)


def _handler(watcher: Watcher) -> Any:
    """The watchdog event handler of ``watcher``: every event on a candidate path schedules
    a check (watchdog is imported once watching starts: `watch --once` never needs it)."""
    return _handler_class()(watcher)


@functools.cache
def _handler_class() -> type:
    from watchdog.events import FileSystemEventHandler

    class _Handler(FileSystemEventHandler):
        """watchdog event handler: every event on a candidate path schedules a check."""

        def __init__(self, watcher: Watcher) -> None:
            super().__init__()
            self.watcher = watcher

        def dispatch(self, event: Any) -> None:
            if event.event_type in IGNORED_EVENTS:
                return
            if event.is_directory:
                if event.event_type in FOLDER_EVENTS:
                    raw = getattr(event, "dest_path", None) or event.src_path
                    folder = os.fsdecode(raw)
                    if not self.watcher.skipped_folder(Path(folder)):
                        self.watcher.folder_changed(folder)
                return
            for attribute in ("src_path", "dest_path"):
                raw = getattr(event, attribute, None)
                if not raw:
                    continue
                path = os.fsdecode(raw)
                pure = Path(path)
                if is_temporary(pure) or in_state_folder(pure):
                    continue
                if is_candidate(pure) and not self.watcher.skipped_folder(pure.parent):
                    self.watcher.schedule(path)

    return _Handler


def _mtime_order(path: Path, seen: dict[str, os.stat_result | None]) -> tuple[str, float, str]:
    try:
        st: os.stat_result | None = path.stat()
    except OSError:
        st = None
    seen[str(path)] = st  # (kept for the backfill)
    mtime = st.st_mtime if st is not None else 0.0
    # by trainer output folder (diffusers' checkpoint-N/ are one folder's files), then
    # in the order they were written: a second training into the folder comes second
    return (str(output_dir_of(path)), mtime, path.name)


def _same_time(recorded: datetime | None, st_mtime: float) -> bool:
    if recorded is None:
        return False
    on_disk = datetime.fromtimestamp(st_mtime, tz=timezone.utc)
    return abs((recorded - on_disk).total_seconds()) < 0.001


def _log_delivery(event: Event, outcome: DeliveryOutcome, applied: Applied | None) -> None:
    if event.kind != "checkpoint":
        return
    name = _shown(event.path)
    if outcome in ("recorded", "duplicate") and applied is not None:
        log.info("%s", file_line(event, applied))
    elif outcome == "spooled":
        log.info("%s", spooled_file_line(event))
    elif outcome == "unsaved":
        log.info("not recorded yet %s (database unavailable, spool not writable)", name)
    elif outcome == "deleted":
        log.info(
            "left out %s: its run was deleted (`lora-tracker record --force` records it again)",
            name,
        )
    elif outcome == "rejected":
        pass  # the delivery said why, in one line
    else:
        log.warning("%s: %s", name, outcome)


def file_line(event: CheckpointObserved, applied: Applied, said: str = "recorded") -> str:
    """``recorded NAME -> run RUN epoch N (0.4 MB)``: a recorded file, as capture says it."""
    where = f"run {applied.run_name}"
    if applied.epoch is not None and event.checkpoint_kind != "step":
        where += f" epoch {applied.epoch}"
    elif event.step is not None:
        where += f" step {event.step}"
    return f"{said} {_shown(event.path)} -> {where} ({event.size_bytes / (1024 * 1024):.1f} MB)"


def recorded_lines(
    by_run: dict[str, list[tuple[CheckpointObserved, Applied]]], said: str = "recorded"
) -> list[str]:
    """Recorded files by run: a line each, or one line for a run of more than
    `LISTED_FILES` (an old folder of 50 epochs is 50 lines otherwise)."""
    lines: list[str] = []
    for run_name, files in by_run.items():
        if len(files) <= LISTED_FILES:
            lines.extend(file_line(event, applied, said) for event, applied in files)
            continue
        size_mb = sum(event.size_bytes for event, _ in files) / (1024 * 1024)
        lines.append(
            f"{said} {len(files)} files -> run {run_name} {_saves(files)} ({size_mb:.1f} MB)"
        )
    return lines


def _log_recorded(by_run: dict[str, list[tuple[CheckpointObserved, Applied]]]) -> None:
    """A backfill's recorded files (`recorded_lines`)."""
    for line in recorded_lines(by_run):
        log.info("%s", line)


def spooled_file_line(event: CheckpointObserved) -> str:
    """``spooled NAME (database unavailable; 0.4 MB)``: a spooled file, as capture says it."""
    return (
        f"spooled {_shown(event.path)} (database unavailable; "
        f"{event.size_bytes / (1024 * 1024):.1f} MB)"
    )


def spooled_lines(by_training: dict[tuple[str, str], list[CheckpointObserved]]) -> list[str]:
    """Spooled files (the database away), by training (folder, output name): as
    `recorded_lines`."""
    lines: list[str] = []
    for (folder, name), files in by_training.items():
        if len(files) <= LISTED_FILES:
            lines.extend(spooled_file_line(event) for event in files)
            continue
        size_mb = sum(event.size_bytes for event in files) / (1024 * 1024)
        lines.append(
            f"spooled {len(files)} files of {name} in {folder} "
            f"(database unavailable; {size_mb:.1f} MB)"
        )
    return lines


def _log_spooled(by_training: dict[tuple[str, str], list[CheckpointObserved]]) -> None:
    """A backfill's spooled files (`spooled_lines`)."""
    for line in spooled_lines(by_training):
        log.info("%s", line)


def _saves(files: list[tuple[CheckpointObserved, Applied]]) -> str:
    """``epochs 1-48, 50 and 3 step files``: what a run's recorded files hold."""
    of_epochs = [a.epoch for e, a in files if a.epoch is not None and e.checkpoint_kind != "step"]
    epochs = sorted(set(of_epochs))
    steps = len(files) - len(of_epochs)
    spans: list[list[int]] = []  # runs of consecutive epochs
    for epoch in epochs:
        if spans and epoch == spans[-1][-1] + 1:
            spans[-1].append(epoch)
        else:
            spans.append([epoch])
    text = ", ".join(f"{s[0]}-{s[-1]}" if len(s) > 1 else f"{s[0]}" for s in spans)
    if len(spans) > MAX_SPANS:  # (every other epoch saved: 50 numbers)
        text = f"{epochs[0]} to {epochs[-1]} ({len(epochs)} of them)"
    parts = [f"epoch{'s' if len(epochs) > 1 else ''} {text}"] if epochs else []
    if steps:
        parts.append(f"{steps} step file{'' if steps == 1 else 's'}")
    return " and ".join(parts)


def _files(count: int) -> str:
    return f"{count} checkpoint file{'' if count == 1 else 's'}"


def _shown(path: str) -> str:
    """A checkpoint as a log line names it: with its folder when the file name alone says
    nothing (``checkpoint-16/pytorch_lora_weights.safetensors``)."""
    folder, name = os.path.split(path)
    parent = os.path.basename(folder)
    if os.path.splitext(name)[0] in ADAPTER_FILES and parent:
        return f"{parent}/{name}"
    return name


def _removal_said(outcome: DeliveryOutcome, applied: Applied | None) -> str:
    if outcome in ("recorded", "duplicate") and applied is not None:
        where = f"run {applied.run_name}"
        if applied.epoch is not None:
            where += f" epoch {applied.epoch}"
        return f": marked no longer on disk in {where}"
    if outcome == "unmatched":
        return ": it was not recorded"
    return f" ({outcome})"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


class _Throttle:
    """Logs a repeating failure once, then at most once a minute per key, with a count."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._last: dict[str, tuple[float, int]] = {}

    def log(self, level: int, key: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (-self.every_s, 0))
        if now - last < self.every_s:
            self._last[key] = (last, suppressed + 1)
            return
        if suppressed:
            message += f" ({suppressed} more like this)"
        if len(self._last) > 10_000:
            self._last.clear()
        self._last[key] = (now, 0)
        log.log(level, message, *args)
