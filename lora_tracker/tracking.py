"""The Python API for training scripts: start a run, log epochs, finish.

    import lora_tracker

    run = lora_tracker.start_run("pixel_sd15_dim32", config=args, output_dir="out")
    for epoch in range(1, epochs + 1):
        ...train...
        run.log_epoch(epoch, loss=avg_loss, checkpoint_path=f"out/e{epoch}.safetensors")
    run.finish()                      # or: with lora_tracker.start_run(...) as run: ...

Every call only puts a small job on a queue (a few microseconds on the training thread;
``start_run``'s launch check (``lora_tracker.guard``) runs on a thread of its own and says
what it found when it has the answer, and only in strict mode does ``start_run`` wait for
it, at most 0.8 s); one background thread per process reads files, builds events and
writes them, in order.
Nothing raises into the training loop: failures are logged, and events that cannot reach
the database wait in the spool. At exit, pending events get ``LORA_TRACKER_FLUSH_TIMEOUT``
seconds (default 10) to be written; whatever is left is spooled for the next sync.
"""

from __future__ import annotations

import atexit

# Issue 17: a module that registers a threading at-exit hook cannot be imported once
# interpreter shutdown has begun ("can't register atexit after shutdown"). filelock 4.0.x
# imports concurrent.futures.thread (which registers one) when the spool is first used,
# which for a short script is at exit: both the write and the spool fallback failed. So it
# is imported with this module, on the training thread (not in `start_run`'s call).
import concurrent.futures.thread  # noqa: F401
import contextlib
import dataclasses
import logging
import os
import sys
import threading
import traceback
import uuid
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._background import after_caller, caller_first
from .control_chars import short_repr
from .settings import Target, resolve_target, this_host
from .vocab import END_STATUSES, EndStatus

if TYPE_CHECKING:
    from .capture.delivery import EventDelivery

log = logging.getLogger(__name__)

FLUSH_TIMEOUT_ENV = "LORA_TRACKER_FLUSH_TIMEOUT"
DEFAULT_FLUSH_TIMEOUT_S = 10.0


def flush_timeout() -> float:
    """Seconds pending events get before exit: ``LORA_TRACKER_FLUSH_TIMEOUT``, default 10."""
    return float(os.environ.get(FLUSH_TIMEOUT_ENV, DEFAULT_FLUSH_TIMEOUT_S))


def end_status(error: BaseException | None) -> EndStatus:
    """How a run ends, by what ended it: nothing, or ``SystemExit`` with status 0 (a script's
    ``sys.exit()``), completed; Ctrl-C cancelled; any other exception failed."""
    if error is None or (isinstance(error, SystemExit) and error.code in (None, 0)):
        return "completed"
    if isinstance(error, KeyboardInterrupt):
        return "cancelled"
    return "failed"


MAX_BATCH_EVENTS = 500  # events written in one transaction by the background thread
EXIT_JOB_WAIT_S = 5.0  # at exit, the most to wait for a job the worker is still reading

Job = Callable[[], Iterable[Any]]  # builds events (run on the background thread)


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


class _Once:
    """A job run at most once: the worker and, when time has run out at exit, ``close``
    may both ask for its events; the second gets the same events (the same event ids, so
    replay applies them once), and the job's side effects happen once."""

    def __init__(self, job: Job) -> None:
        self._job = job
        self._lock = threading.Lock()
        self._events: list[Any] | None = None
        self._error: BaseException | None = None

    def __call__(self, wait: float | None = None) -> list[Any]:
        """The job's events (run now, or as the first call ran it). ``wait``: the most to
        wait for another thread running it (TimeoutError after that)."""
        if not self._lock.acquire(timeout=-1 if wait is None else wait):
            raise TimeoutError("an event was still being read")
        try:
            if self._events is None and self._error is None:
                try:
                    self._events = list(self._job())
                except BaseException as exc:
                    self._error = exc
            if self._error is not None:
                raise self._error
            assert self._events is not None
            return self._events
        finally:
            self._lock.release()


_Item = tuple[Target, _Once] | _Flush | None


class Dispatcher:
    """One background thread delivering events of all runs of this process, in order.

    Nothing queued is ever out of sight of ``close``: the worker moves what it takes into
    ``_held`` in the same step (under ``_cond``) and lets go of it only once delivered or
    spooled, so at exit what is still queued, held or in flight goes to the spool."""

    def __init__(self) -> None:
        self._items: deque[_Item] = deque()
        self._held: dict[int, tuple[Target, _Once]] = {}  # taken, not yet delivered
        self._cond = threading.Condition(threading.Lock())
        self._deliveries: dict[tuple[str | None, str], EventDelivery] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._unsaved: dict[tuple[str | None, str], list[Any]] = {}  # by target
        self._targets: dict[tuple[str | None, str], Target] = {}
        self._failures = 0

    def submit(self, target: Target, job: Job) -> None:
        """Queue a job; never blocks, never raises."""
        if self._closed:
            self._run_job_to_spool(target, job)
            return
        if self._thread is None:
            self._start()
        self._put((target, _Once(job)))

    def _put(self, item: _Item) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def _take(self) -> list[_Item]:
        """Everything queued, moved into ``_held`` in the same step (waits for one)."""
        with self._cond:
            while not self._items:
                self._cond.wait()
            items = list(self._items)
            self._items.clear()
            for item in items:
                if isinstance(item, tuple):
                    self._held[id(item)] = item
            return items

    def _let_go(self, items: list[tuple[Target, _Once]]) -> None:
        with self._cond:
            for item in items:
                self._held.pop(id(item), None)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="lora-tracker-api", daemon=True
                )
                self._thread.start()
                atexit.register(self.close)

    def delivery(self, target: Target) -> EventDelivery:
        """This process's one ``EventDelivery`` for ``target``, shared by this thread and
        the kohya hook's fallback watcher; the dispatcher closes it at exit."""
        from .capture.delivery import EventDelivery

        key = (target.url, str(target.home))
        with self._lock:
            if key not in self._deliveries:
                self._deliveries[key] = EventDelivery(target=target)
            return self._deliveries[key]

    def _work(self) -> None:
        after_caller()  # the training thread goes on before this thread's imports
        _import_exit_path()
        self._take_jobs()

    def _take_jobs(self) -> None:
        """Take what is queued and write it, up to MAX_BATCH_EVENTS events of one target in
        one transaction: while a batch is written the queue fills, so under load events go
        in batches and alone they go at once (no waiting for company)."""
        pending: list[Any] = []
        pending_items: list[tuple[Target, _Once]] = []
        pending_target: Target | None = None

        def deliver() -> None:
            nonlocal pending, pending_items, pending_target
            if pending and pending_target is not None:
                try:
                    self._deliver(pending_target, pending)
                except Exception as exc:  # the training process must never feel this
                    self._failed(exc)
            self._let_go(pending_items)
            pending, pending_items, pending_target = [], [], None

        while True:
            for item in self._take():
                if item is None:
                    deliver()
                    return
                if isinstance(item, _Flush):
                    deliver()
                    item.done.set()
                    continue
                target, job = item
                if pending_target is not None and target != pending_target:
                    deliver()
                pending_items.append(item)
                try:
                    pending.extend(job())
                    pending_target = target
                except Exception as exc:
                    self._failed(exc)
                if len(pending) >= MAX_BATCH_EVENTS:
                    deliver()
            deliver()

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        if hasattr(exc, "errors") and isinstance(exc, ValueError):  # a value pydantic refused
            from .run_model import render_validation_error

            log.error("lora-tracker could not record an event: %s", render_validation_error(exc))
        elif self._failures == 1:  # once, with the traceback; then counted
            log.error("lora-tracker could not record an event", exc_info=exc)
        else:
            log.debug("lora-tracker could not record an event: %s", exc)

    def _deliver(self, target: Target, events: list[Any]) -> None:
        """Write events; those neither written nor spooled (a full disk while the database
        is down) go first next time, and to the spool at exit."""
        key = (target.url, str(target.home))
        waiting = self._unsaved.get(key, [])  # kept there until written: exit may spool them
        result = self.delivery(target).submit_many(waiting + events, batch_size=MAX_BATCH_EVENTS)
        unsaved = [event for event, outcome, _ in result.outcomes if outcome == "unsaved"]
        if unsaved:
            self._unsaved[key] = unsaved
            self._targets[key] = target
        else:
            self._unsaved.pop(key, None)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written (or spooled)."""
        if self._thread is None or not self._thread.is_alive():
            return True
        marker = _Flush()
        self._put(marker)
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """At exit: give pending events a bounded time, then spool what is left."""
        if self._closed:
            return
        if timeout is None:
            timeout = flush_timeout()
        flushed = self.flush(timeout)
        self._closed = True
        # what is left, each event once: events written neither to the database nor to the
        # spool (a full disk), then, when the worker is stuck on a batch, what it holds
        # (taken, not yet written) and what is still queued; an event the worker writes after
        # all is applied once too (replay skips what was applied)
        batches = [(self._targets[key], events) for key, events in list(self._unsaved.items())]
        if not flushed:
            log.warning("lora-tracker: the database is slow; pending events go to the spool")
            with self._cond:
                left = list(self._held.values())
                left += [item for item in self._items if isinstance(item, tuple)]
                self._items.clear()
                self._items.append(None)
                self._cond.notify()
            for target, job in left:
                try:  # a job the worker is reading right now: its events, once it is done
                    batches.append((target, job(wait=EXIT_JOB_WAIT_S)))
                except TimeoutError:
                    log.warning("lora-tracker: an event still being read at exit is lost")
                except Exception:
                    log.exception("lora-tracker could not spool an event")
        else:
            self._put(None)
        seen: set[Any] = set()
        for target, events in batches:
            fresh = [e for e in events if getattr(e, "event_id", id(e)) not in seen]
            seen.update(getattr(e, "event_id", id(e)) for e in fresh)
            if fresh:
                self._run_job_to_spool(target, _returning(fresh))
        self._unsaved.clear()
        for delivery in list(self._deliveries.values()):
            with contextlib.suppress(Exception):
                delivery.close()

    def _run_job_to_spool(self, target: Target, job: Job) -> None:
        """Events straight to the spool, through the target's delivery (which does not wait
        for a worker stuck on the database); a spool that cannot be written is logged."""
        try:
            self.delivery(target).keep(job())
        except Exception:
            log.exception("lora-tracker could not spool an event")


def _import_exit_path() -> None:
    """The background thread's first work: import all that delivering and spooling need,
    so nothing is imported at exit (see the import of ``concurrent.futures.thread``)."""
    try:
        from .capture import delivery, events  # noqa: F401 (delivery imports the spool)
    except Exception as exc:  # pragma: no cover - a broken install; logged by the jobs
        log.debug("lora-tracker: import failed: %s", exc)


def _returning(events: list[Any]) -> Job:
    return lambda: events


_dispatcher: Dispatcher | None = None
_dispatcher_lock = threading.Lock()


def dispatcher() -> Dispatcher:
    """The process-wide dispatcher."""
    global _dispatcher
    if _dispatcher is None:
        with _dispatcher_lock:
            if _dispatcher is None:
                _dispatcher = Dispatcher()
    return _dispatcher


def _now() -> datetime:
    return datetime.now(timezone.utc)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config as a JSON-safe dict: a dict, pydantic model, dataclass or argparse.Namespace,
    with its secrets masked (``lora_tracker.secrets.mask_secrets``)."""
    if config is None:
        return {}
    if hasattr(config, "model_dump"):
        raw = config.model_dump(mode="json")
    elif dataclasses.is_dataclass(config) and not isinstance(config, type):
        raw = dataclasses.asdict(config)
    elif isinstance(config, dict):
        raw = dict(config)
    elif hasattr(config, "__dict__"):
        raw = dict(vars(config))
    else:
        raise TypeError(
            f"config must be a dict, a pydantic model, a dataclass or a namespace, "
            f"not {type(config).__name__}"
        )
    from .secrets import mask_secrets

    # a secret (--hub_token, a password in a URL) is masked before it is stored or spooled
    safe: dict[str, Any] = mask_secrets(_json_safe(raw))
    return safe


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and _small(value):  # numpy's and torch's numbers and arrays
        try:
            plain = value.tolist()
        except Exception:  # (an odd object's tolist: its text, as any other)
            return str(value)
        if plain is not value:
            return _json_safe(plain)
    return str(value)


def _small(value: Any) -> bool:
    """Whether an array (or a number) holds few enough values to be stored as a list."""
    size = getattr(value, "size", 1)
    try:
        size = size() if callable(size) else size  # (torch's size is a method: the shape)
        count = 1
        for dimension in size if isinstance(size, tuple) else (size,):
            count *= int(dimension)
    except (TypeError, ValueError):
        return False
    return count <= 10_000


class TrackedRun:
    """A run being recorded from inside training. Every method returns at once."""

    def __init__(
        self,
        run_key: str,
        run_name: str | None,
        target: Target,
        *,
        output_dir: str | None = None,
        enabled: bool = True,
    ) -> None:
        self.run_key = run_key
        self.run_name = run_name
        self.target = target
        self.output_dir = output_dir
        self.enabled = enabled
        self.finished = False
        # issue 17: the checkpoint files this run was told about (kept by the background
        # thread): one deleted since (--checkpoints_total_limit) is reported as removed
        self._told: dict[str, None] = {}
        self._guard: Any = None  # warn mode's launch check, its answer on its way

    # -- the training thread's calls -------------------------------------------------------
    def log_epoch(
        self,
        epoch: int,
        *,
        loss: float | None = None,
        metrics: dict[str, float] | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        sample_images: Iterable[str | os.PathLike[str]] | None = None,
    ) -> None:
        """Record an epoch's loss, metrics, checkpoint file and sample images."""
        if not self.enabled:
            return
        at = _now()
        # (what the caller gave, taken as it can be: a call never raises into training)
        if isinstance(sample_images, (str, os.PathLike)):
            sample_images = [sample_images]  # one image, not its path's letters
        samples = [p for p in (_path(i, "sample image") for i in sample_images or ()) if p]
        checkpoint = _path(checkpoint_path, "checkpoint") if checkpoint_path is not None else None
        metric_values = _mapping(metrics, "metrics")

        def job() -> list[Any]:
            from .capture.events import EpochLogged, validated

            events: list[Any] = self._vanished(at)
            if checkpoint is not None:
                events.extend(self._observe(checkpoint, epoch, at))
            events.append(validated(  # (the caller's values, checked)
                EpochLogged, run_key=self.run_key, run_name=self.run_name, observed_at=at,
                epoch=epoch, loss=_finite(loss), metrics=_numbers(metric_values),
                sample_images=[os.path.abspath(p) for p in samples],
            ))  # fmt: skip
            return events

        self._submit(job)

    def log_checkpoint(self, path: str | os.PathLike[str], *, epoch: int | None = None) -> None:
        """Record a checkpoint file just saved (read on the background thread)."""
        if not self.enabled:
            return
        at = _now()
        file = _path(path, "checkpoint")
        if file is not None:
            self._submit(lambda: self._vanished(at) + self._observe(file, epoch, at))

    def log_saved(
        self,
        path: str | os.PathLike[str],
        metadata: dict[str, str] | None = None,
        *,
        epoch: int | None = None,
    ) -> None:
        """Record a checkpoint from what the trainer just wrote (path and metadata), without
        reading the file again: right for a hook inside the save, even if the file is
        deleted a moment later. Costs one stat() on the calling thread."""
        if not self.enabled:
            return
        at = _now()
        given = _path(path, "checkpoint")
        if given is None:
            return
        file = os.path.abspath(given)
        try:
            stat = os.stat(file)
        except OSError as exc:
            log.warning("lora-tracker: checkpoint %s not recorded: %s", file, exc)
            return
        meta = {str(k): v if isinstance(v, str) else str(v) for k, v in (metadata or {}).items()}

        def job() -> list[Any]:
            from .capture.events import checkpoint_event

            try:
                event = checkpoint_event(
                    Path(file), stat.st_size, stat.st_mtime, meta, run_key=self.run_key, epoch=epoch
                )
            except ValueError as exc:
                log.warning("lora-tracker: %s not recorded: %s", file, exc)
                return []
            event.run_name = self.run_name
            event.observed_at = at
            self._told[file] = None
            return [*self._vanished(at), event]

        self._submit(job)

    def log_removed(self, path: str | os.PathLike[str]) -> None:
        """Record that a checkpoint file was deleted (its row stays, marked)."""
        if not self.enabled:
            return
        at = _now()
        given = _path(path, "checkpoint")
        if given is None:
            return
        file = os.path.abspath(given)

        def job() -> list[Any]:
            from .capture.events import CheckpointRemoved

            self._told.pop(file, None)
            return [CheckpointRemoved(path=file, observed_at=at)]

        self._submit(job)

    def submit(self, job: Job) -> None:
        """Queue a custom job that returns events (for integrations)."""
        if self.enabled:
            self._submit(job)

    def finish(
        self,
        status: EndStatus = "completed",
        error: BaseException | str | None = None,
    ) -> None:
        """Mark the run completed, or failed/cancelled with the error."""
        if not self.enabled or self.finished:
            return
        if status not in END_STATUSES:  # (the run ends at exit, as if finish was not called)
            log.warning(
                "lora-tracker: finish(status=%r) ignored: a run ends %s", status,
                ", ".join(END_STATUSES[:-1]) + " or " + END_STATUSES[-1],
            )  # fmt: skip
            return
        self.finished = True
        at = _now()
        reason = _describe(error) if error is not None else None

        def job() -> list[Any]:
            from .capture.events import RunFinished, validated

            return [
                *self._vanished(at),
                validated(
                    RunFinished,
                    run_key=self.run_key,
                    run_name=self.run_name,
                    observed_at=at,
                    status=status,
                    failure_reason=reason,
                ),
            ]

        self._submit(job)

    def fail(self, error: BaseException | str) -> None:
        """Mark the run failed with the error."""
        self.finish("failed", error)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait (at most ``timeout`` s) until everything logged so far is written or spooled
        (and the launch check has said what it found)."""
        if self._guard is not None:
            self._guard.join(timeout)
        return dispatcher().flush(timeout)

    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:
        status = end_status(error)
        self.finish(status, error if status != "completed" else None)

    # -- internals ---------------------------------------------------------------------------
    def _submit(self, job: Job) -> None:
        try:
            dispatcher().submit(self.target, job)
        except Exception:  # pragma: no cover - queue.put does not fail
            log.exception("lora-tracker could not queue an event")

    def _observe(self, path: str, epoch: int | None, at: datetime) -> list[Any]:
        from .capture.events import observe_checkpoint
        from .capture.safetensors_header import CheckpointError

        try:
            event = observe_checkpoint(Path(path), run_key=self.run_key, epoch=epoch)
        except (CheckpointError, ValueError, OSError) as exc:
            log.warning("lora-tracker: checkpoint %s not recorded: %s", path, exc)
            return []
        event.run_name = self.run_name
        event.observed_at = at
        self._told[event.path] = None
        return [event]

    def _vanished(self, at: datetime) -> list[Any]:
        """Removals of the files told about before that are gone now (one stat each, on
        the background thread)."""
        gone = [path for path in self._told if not os.path.exists(path)]
        if not gone:
            return []
        from .capture.events import CheckpointRemoved

        for path in gone:
            del self._told[path]
        return [CheckpointRemoved(path=path, observed_at=at) for path in gone]


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics that are finite numbers (a NaN or infinite one is left out quietly: a
    diverging training says so in its loss; one that is no number at all, with a line)."""
    found = {}
    for key, value in metrics.items():
        if isinstance(value, bool):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            if value is not None:
                shown = short_repr(value, 60)
                _warn_once(f"metric {key}", f"metric {key!r} = {shown} is no number")
            continue
        if number == number and abs(number) != float("inf"):
            found[str(key)] = number
    return found


def _path(value: Any, what: str) -> str | None:
    """``value`` as a file path, or None, said once, when it is none (an int, a list)."""
    try:
        path = os.fspath(value)
    except TypeError:
        path = None
    if not isinstance(path, str):
        shown = short_repr(value, 60)
        _warn_once(f"{what} {type(value).__name__}", f"{what} {shown} is no file path")
        return None
    return path


def _mapping(value: Any, what: str) -> dict[Any, Any]:
    if not value:
        return {}
    try:
        return dict(value)
    except (TypeError, ValueError):
        _warn_once(what, f"{what} {short_repr(value, 60)} is no mapping")
        return {}


_WARNED: set[str] = set()


def _warn_once(key: str, problem: str) -> None:
    """One line for a value the caller gave that is left out, once per kind of problem."""
    if key not in _WARNED and len(_WARNED) < 1000:
        _WARNED.add(key)
        log.warning("lora-tracker: %s: left out", problem)


def _describe(error: BaseException | str) -> str:
    if isinstance(error, str):
        return error
    text = "".join(traceback.format_exception_only(type(error), error)).strip()
    return text[:4000]


_open_runs: weakref.WeakSet[TrackedRun] = weakref.WeakSet()
_hook_installed = False


def _install_excepthook() -> None:
    """An uncaught exception ends the process: mark the runs still open as failed first."""
    global _hook_installed
    if _hook_installed:
        return
    _hook_installed = True
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, tb: Any) -> None:
        try:
            for run in list(_open_runs):
                if not run.finished:
                    run.finish(end_status(error), error)
        except Exception:  # never hide the real error
            pass
        previous(kind, error, tb)

    sys.excepthook = hook


def start_run(
    name: str | None = None,
    config: Any = None,
    *,
    database_url: str | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    output_name: str | None = None,
    trainer: str = "python",
    run_key: str | None = None,
    guard: str | None = None,
    **fields: Any,
) -> TrackedRun:
    """Start recording a run; returns at once (in strict mode, after the launch check).

    ``config`` (dict, pydantic model, dataclass or argparse.Namespace) is stored whole and
    mined for known settings (network dim/rank, alpha, learning rate, resolution, ...);
    keyword ``fields`` set training_runs columns directly (``model_type="SDXL"``). With
    ``output_dir``, a watcher on the same folder records into this run, not a new one.
    Never raises: on a problem it logs and returns a run whose calls do nothing.

    The launch check (``guard``: strict, warn or off; default ``$LORA_TRACKER_GUARD``, else
    warn) logs a banner when the same settings already failed, at most 0.8 s after the
    call (see ``lora_tracker.guard``); in warn mode from its own thread, while training
    starts. In strict mode ``start_run`` waits for the answer: a repeated failure is
    recorded as cancelled and ``RepeatsFailedRun`` (a ``SystemExit`` with status 3) is
    raised.
    """
    try:
        with caller_first():  # the threads started here wait for this call to return
            run, check = _start(name, config, database_url, output_dir, output_name, trainer,
                                run_key, guard, fields)  # fmt: skip
    except Exception:
        log.exception("lora-tracker could not start recording; training goes on untracked")
        return TrackedRun("disabled", name, resolve_target(None), enabled=False)
    if check is not None:
        try:
            _end_guard(run, *check)
        except Exception:  # RepeatsFailedRun (strict mode) is a SystemExit: it goes through
            log.exception("lora-tracker: the launch check failed; training goes on")
    return run


def _start(
    name: str | None,
    config: Any,
    database_url: str | None,
    output_dir: str | os.PathLike[str] | None,
    output_name: str | None,
    trainer: str,
    run_key: str | None,
    guard: str | None,
    fields: dict[str, Any],
) -> tuple[TrackedRun, tuple[Any, str] | None]:
    """`start_run`'s work on the training thread."""
    # Only what must be read now happens on the training thread (the config as it is
    # at this moment); capture's imports and the mining of the config are the
    # background thread's work, so the first call returns as fast as the next ones.
    target = resolve_target(database_url)
    config_dict = config_to_dict(config)
    host = this_host()
    folder = os.path.abspath(os.fspath(output_dir)) if output_dir is not None else None
    if folder is not None:
        output_name = output_name or os.path.basename(folder)
    if run_key is None:
        run_key = f"dir:{host}:{folder}:{output_name}" if folder else f"api:{uuid.uuid4()}"
    key = run_key
    at = _now()
    run = TrackedRun(run_key, name, target, output_dir=folder)
    check = _start_guard(target, guard, config_dict, fields, name)

    def job() -> list[Any]:
        from .capture.events import RunStarted, validated
        from .capture.trainer_config import run_fields_from_generic_config
        from .run_fields import valid_run_fields

        found = run_fields_from_generic_config(config_dict)
        found.update(fields)
        found.update(trainer=trainer, host=host)
        if folder is not None:
            found.update(output_dir=folder, output_name=output_name)
        return [
            validated(
                RunStarted,
                run_key=key,
                run_name=name,
                observed_at=at,
                fields=valid_run_fields(found, mode="json"),
                config=config_dict or None,
                default_name=output_name or trainer,
            )
        ]

    run.submit(job)
    _open_runs.add(run)
    _install_excepthook()
    return run, check


def _start_guard(
    target: Target,
    given: str | None,
    config: dict[str, Any],
    fields: dict[str, Any],
    name: str | None,
) -> tuple[Any, str] | None:
    """The launch check on the settings this run will be recorded with (worked out on the
    check's own thread), or None when it is off; the run named ``name``, started again
    when it exists, is left out of the answer."""
    if (given or os.environ.get("LORA_TRACKER_GUARD") or "").strip().lower() == "off":
        return None  # off: not even the guard's import on the training thread
    from .guard import COMPARED, mode_or_default, report, start_check

    mode = mode_or_default(given)
    if mode == "off" or (not config and not set(fields) & set(COMPARED)):
        return None  # nothing to compare: no thread, no wait

    def settings() -> dict[str, Any]:
        from .capture.trainer_config import run_fields_from_generic_config

        found = run_fields_from_generic_config(config)
        found.update(fields)
        return found

    def say(result: Any) -> None:  # warn: said by the check's thread when it has the answer
        report(result, mode, stops=True)

    return start_check(target, settings, None if mode == "strict" else say, leave_out=name), mode


def _end_guard(run: TrackedRun, check: Any, mode: str) -> None:
    """Strict: wait for the answer here, before training starts. Warn: the check's thread
    says what it found when it has the answer (the training thread never waits)."""
    from .guard import RepeatsFailedRun, cancel_reason, report

    if mode != "strict":
        run._guard = check
        return
    result = check.result()
    report(result, mode, stops=True)
    if mode == "strict" and result.repeats_failure:
        reason = cancel_reason(result)
        run.finish("cancelled", reason)
        run.flush(flush_timeout())
        raise RepeatsFailedRun(reason)
