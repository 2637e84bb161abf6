"""The durable local spool: events that could not reach the database wait here.

One JSON object per line in ``<data folder>/spool/events.jsonl``, appended and fsync'd
before the caller moves on, under an inter-process file lock (a watcher, a training hook
and the CLI may share it). Replay applies lines in order and rewrites the file with what is
left (write, fsync, atomic rename). An event applied just before a crash is replayed again
and skipped by the database (its id is in ``applied_events``), so each lands exactly once.
Lines that can never be applied (unreadable, or refused by the schema) are moved to
``rejected.jsonl`` with the reason: nothing is thrown away.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DatabaseUnavailable, LoraTrackerError

if TYPE_CHECKING:
    from filelock import FileLock

log = logging.getLogger(__name__)

LOCK_TIMEOUT_S = 30.0
# rejected.jsonl is read to keep a refusal once only up to this size (refusals are rare:
# a file this large is not the usual case, and is appended to without reading it)
MAX_REJECTED_SCAN_BYTES = 16 * 1024 * 1024


class SpoolWriteError(LoraTrackerError):
    """The spool file could not be written (a full or read-only disk)."""


class ForAnotherDatabase(LoraTrackerError):
    """An event spooled for another database than the one replaying: it stays."""


class Unappliable(LoraTrackerError):
    """An event the database will never accept; it goes to rejected.jsonl."""


@dataclass
class ReplayResult:
    applied: int = 0
    rejected: int = 0
    remaining: int = 0
    stopped_by: str | None = None  # why replay stopped early (the database's error)
    elsewhere: int = 0  # events kept for another database (counted in remaining)


class Spool:
    """Append-only event file with exactly-once replay."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "events.jsonl"
        self.rejected_path = folder / "rejected.jsonl"
        self._file_lock: FileLock | None = None
        self._making_lock = threading.Lock()

    @property
    def _lock(self) -> FileLock:
        """The spool's inter-process lock, made when first needed: a process that finds
        the spool empty never imports filelock."""
        if self._file_lock is None:
            with self._making_lock:
                if self._file_lock is None:
                    from filelock import FileLock

                    self._file_lock = FileLock(
                        str(self.folder / "spool.lock"), timeout=LOCK_TIMEOUT_S
                    )
        return self._file_lock

    def _ensure_folder(self) -> None:
        if not self.folder.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            _fsync_dir(self.folder.parent)

    def append(self, line: str) -> None:
        """Add one event (a JSON document on one line), durably, before returning."""
        if "\n" in line:
            raise ValueError("a spooled event must be one line")
        self._ensure_folder()
        with self._lock:
            self._append_locked(self.path, line)

    @staticmethod
    def _append_locked(path: Path, line: str) -> None:
        """Append one line, durably. A line cut off by an earlier crash or full disk is
        closed first, so this one is never glued onto it; if this write fails (ENOSPC), the
        file is cut back to where it was, leaving no fragment behind."""
        new = not path.exists()
        data = (line + "\n").encode("utf-8")
        with open(path, "ab") as handle:
            start = handle.seek(0, os.SEEK_END)
            if start and _last_byte(path, start) != b"\n":
                data = b"\n" + data
            try:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError:
                with contextlib.suppress(OSError):
                    handle.truncate(start)
                    os.fsync(handle.fileno())
                raise
        if new:
            _fsync_dir(path.parent)

    def pending(self) -> int:
        """How many events wait (a line cut off by a crash is not one: replay sets it aside)."""
        return _count_lines(self.path)

    def reject(self, line: str, reason: str, *, identity: str | None = None) -> bool:
        """Set an event aside in rejected.jsonl, with the reason, durably. ``identity``:
        what the event says, whenever it was observed (the same file seen again); an event
        refused for the same reason as one kept already is not kept twice (a folder
        backfilled again meets its refused file again). False when it was kept already."""
        self._ensure_folder()
        with self._lock:
            if identity is not None and self._kept_already(identity, reason):
                return False
            self._reject_locked(line, reason, identity)
            return True

    def _kept_already(self, identity: str, reason: str) -> bool:
        try:
            if self.rejected_path.stat().st_size > MAX_REJECTED_SCAN_BYTES:
                return False  # (a file that large is not read for this)
            text = self.rejected_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        for line in text.splitlines():
            if identity not in line:  # (read as JSON only when it may be the one)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("identity") == identity and record.get("reason") == reason:
                return True
        return False

    def rejected(self) -> int:
        """How many events were set aside as never appliable."""
        return _count_lines(self.rejected_path)

    def replay(self, apply: Callable[[str], object], *, wait: bool = True) -> ReplayResult:
        """Apply waiting events in order until the database fails; keep the rest.

        ``apply`` raises DatabaseUnavailable to stop (the event stays), Unappliable to
        reject the event. With ``wait=False`` returns at once if another process replays.
        """
        result = ReplayResult()
        if not self.path.exists():
            return result
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=LOCK_TIMEOUT_S if wait else 0)
        except Timeout:
            result.remaining = self.pending()
            return result
        try:
            lines, torn = self._read_lines()
            done = 0
            kept: list[str] = []  # events for another database, in order
            try:
                for line in lines:
                    try:
                        apply(line)
                        result.applied += 1
                    except Unappliable as exc:
                        self._reject_locked(line, str(exc))
                        result.rejected += 1
                    except ForAnotherDatabase:
                        kept.append(line)
                        result.elsewhere += 1
                    done += 1
            except DatabaseUnavailable as exc:
                log.debug("replay stopped, %d events still wait: %s", len(lines) - done, exc)
                result.stopped_by = str(exc)
            finally:
                if done > len(kept) or torn:  # a torn line, once set aside, is gone
                    self._rewrite_or_explain(kept + lines[done:], done - len(kept))
            result.remaining = len(kept) + len(lines) - done
            return result
        finally:
            self._lock.release()

    def _read_lines(self) -> tuple[list[str], bool]:
        """The complete lines, and whether a cut-off last line was set aside."""
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            raw = handle.read()
        lines = raw.split("\n")
        torn = bool(lines and lines[-1] and not raw.endswith("\n"))
        if torn:
            # a write cut short by a crash: never acknowledged as spooled, but keep it
            log.warning("spool ends with a partial line; it goes to %s", self.rejected_path)
            self._reject_locked(lines.pop(), "partial line (interrupted write)")
        return [line for line in lines if line.strip()], torn

    def _reject_locked(self, line: str, reason: str, identity: str | None = None) -> None:
        record: dict[str, str] = {
            "rejected_at": datetime.now(timezone.utc).isoformat(), "reason": reason, "event": line
        }  # fmt: skip
        if identity is not None:
            record["identity"] = identity
        self._append_locked(self.rejected_path, json.dumps(record))

    def _rewrite_or_explain(self, remaining: list[str], applied: int) -> None:
        try:
            self._rewrite(remaining)
        except OSError as exc:
            self.path.with_suffix(".jsonl.tmp").unlink(missing_ok=True)
            raise SpoolWriteError(
                f"cannot rewrite the spool {self.path} ({exc.strerror or exc}); nothing is "
                f"lost: the {applied} events just applied stay in it and are skipped when "
                "replayed again"
            ) from None

    def _rewrite(self, remaining: list[str]) -> None:
        if not remaining:
            self.path.unlink(missing_ok=True)
            _fsync_dir(self.folder)
            return
        temporary = self.path.with_suffix(".jsonl.tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in remaining))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        _fsync_dir(self.folder)


def _count_lines(path: Path) -> int:
    """Complete, non-blank lines (a cut-off last line is not counted)."""
    try:
        with open(path, "rb") as handle:
            return sum(1 for line in handle if line.endswith(b"\n") and line.strip())
    except FileNotFoundError:
        return 0


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(size - 1)
        return handle.read(1)


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def spool_for(home: Path) -> Spool:
    """The spool of a data folder."""
    return Spool(home / "spool")
