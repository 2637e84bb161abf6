"""Where a capture event becomes database rows (the watcher, the hooks and a spool replay
all come here through ``delivery.EventDelivery``).

``apply_event`` applies one event in one transaction (a savepoint inside a batch):
first it claims the event id in ``applied_events``, so an event replayed from the spool or
seen by two watchers lands exactly once; then

- a checkpoint finds or creates its run (by session id, else by folder and output name),
  fills the run's configuration, upserts its ``checkpoints`` row (keyed by host + path,
  so a rewritten file updates its row) and, for an epoch or final file, its
  ``epoch_results`` row;
- a removal marks the file as no longer on disk (the rows stay);
- sample images are added to their epoch's ``sample_images``;
- a hook's run events (started, epoch logged, finished) find their run by the hook's key
  and set its configuration, per-epoch loss and metrics, and final status;
- a rendered test image (``watch --images``) becomes a prompt result of the epoch of each
  tracked LoRA it was made with (``image_capture.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

import psycopg
from psycopg import Pipeline, sql
from psycopg.types.json import Jsonb

from .. import _sqlbuild
from ..pg import Connection, leave_pipeline, sent_together
from ..run_fields import valid_run_fields
from .checkpoint_metadata import (
    SAVE_KEYS,
    run_settings_from_metadata,
    save_fields_from_metadata,
    session_id_of,
)
from .events import (
    AnyEvent,
    CheckpointObserved,
    CheckpointRemoved,
    EpochLogged,
    ImageObserved,
    RunFinished,
    RunStarted,
    SamplesObserved,
)
from .nul_safe import strip_nul
from .sample_links import SampleLinks, link_event_samples
from .trainer_config import run_fields_from_adapter_files, run_fields_from_config

log = logging.getLogger(__name__)

Outcome = Literal["recorded", "duplicate", "unmatched", "deleted"]

# Columns capture may fill on an existing run only when they are still empty: a person's
# corrections are never overwritten by what a later checkpoint says.
FILL_IF_EMPTY = (
    "model_type", "base_model", "network_dim", "network_alpha", "resolution", "num_images",
    "learning_rate", "unet_lr", "text_encoder_lr", "optimizer", "lr_scheduler", "seed",
    "num_epochs", "max_train_steps", "batch_size", "network_module", "mixed_precision",
    "tag_frequency", "dataset_dirs", "session_id", "output_name", "output_dir", "host",
    "trainer", "training_started_at", "config",
)  # fmt: skip
# Of those, the settings a later event may correct while the column still holds what capture
# wrote there (training_runs.captured_values): the kohya hook starts a run from the command
# line, and kohya's checkpoints then state the real dataset size and step count.
REFILLABLE = frozenset(FILL_IF_EMPTY) - {
    "config", "session_id", "output_name", "output_dir", "host", "trainer",
    "training_started_at",
}  # fmt: skip
MAX_NAME_ATTEMPTS = 1000


@dataclass(frozen=True)
class Applied:
    """What applying an event did, for the one log line per checkpoint."""

    outcome: Outcome
    run_name: str | None = None
    epoch: int | None = None
    new_run: bool = False  # this event created its run (logged once the write is committed)
    # a test image: every (run, epoch) it was linked to, or why none
    links: tuple[tuple[str, int], ...] = ()
    detail: str = ""


# capture key -> training_runs row, within one transaction; an empty dict marks a key
# already looked up and not found
RunCache = dict[str, dict[str, Any]]


def apply_event(
    conn: Connection,
    event: AnyEvent,
    *,
    savepoint: bool = True,
    runs: RunCache | None = None,
) -> Applied:
    """Apply one event exactly once.

    With ``savepoint`` (the default) the event is its own transaction, or a savepoint in
    the caller's; a batch may pass ``savepoint=False`` and a ``runs`` cache when it rolls
    the whole batch back on any error.
    """
    if not savepoint:
        return _apply_once(conn, event, runs)
    with conn.transaction():
        return _apply_once(conn, event, runs)


def _apply_once(conn: Connection, event: AnyEvent, runs: RunCache | None) -> Applied:
    claimed = conn.execute(
        "INSERT INTO applied_events (event_id, kind) VALUES (%s, %s) "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        (event.event_id, event.kind),
    ).fetchone()
    if claimed is None:
        return Applied("duplicate")
    return _apply_claimed(conn, event, runs if runs is not None else {})


def _apply_claimed(
    conn: Connection, event: AnyEvent, runs: RunCache, files: _FileBatch | None = None
) -> Applied:
    if isinstance(event, CheckpointObserved):
        return _apply_checkpoint(conn, event, runs, files)
    if isinstance(event, CheckpointRemoved):
        return _apply_removal(conn, event)
    if isinstance(event, SamplesObserved):
        return _apply_samples(conn, event)
    if isinstance(event, RunStarted):
        return _apply_run_started(conn, event, runs)
    if isinstance(event, EpochLogged):
        return _apply_epoch_logged(conn, event, runs)
    if isinstance(event, ImageObserved):
        return _apply_image(conn, event)
    return _apply_run_finished(conn, event, runs)


def _apply_image(conn: Connection, event: ImageObserved) -> Applied:
    """A test image linked to the epoch of each tracked LoRA it was made with."""
    from .image_capture import record_image

    linked = record_image(conn, event)
    if not linked.matches:
        return Applied("unmatched", detail=linked.detail)
    first = linked.matches[0]
    return Applied("recorded", first.run_name, first.epoch_number,
                   links=tuple((m.run_name, m.epoch_number) for m in linked.matches))  # fmt: skip


def apply_events(conn: Connection, events: list[AnyEvent], runs: RunCache) -> list[Applied]:
    """Apply a batch in the caller's transaction (which the caller rolls back whole on any
    error): every event id claimed in one statement, and the epoch reports of hooks and the
    Python API (most of what a training sends) written together in one pipelined
    statement, with each run's ``last_event_at`` set once."""
    # three questions, one wait: the server claims the events and reads what it knows of
    # the files while the runs to look for are worked out here
    with sent_together(conn):
        claiming = conn.execute(
            "INSERT INTO applied_events (event_id, kind) "
            "SELECT * FROM unnest(%s::uuid[], %s::text[]) "
            "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            ([e.event_id for e in events], [e.kind for e in events]),
        )
        files = _FileBatch(conn, [e for e in events if isinstance(e, CheckpointObserved)])
        _prefill(conn, events, runs)
        claimed = {row["event_id"] for row in claiming.fetchall()}
        files.read_known()
    _create_started_runs(conn, events, runs)
    writer = _EpochWriter(conn, runs)
    try:
        return _apply_all(conn, events, claimed, runs, writer, files)
    except BaseException as exc:
        files.close(exc)  # (sent chunks: the caller rolls the batch back)
        raise


def _apply_all(
    conn: Connection,
    events: list[AnyEvent],
    claimed: set[Any],
    runs: RunCache,
    writer: _EpochWriter,
    files: _FileBatch,
) -> list[Applied]:
    _create_file_runs(conn, events, claimed, runs, files)
    results: list[Applied] = []
    for event in events:
        if event.event_id not in claimed:
            results.append(Applied("duplicate"))
            continue
        claimed.discard(event.event_id)  # the same event twice in a batch lands once
        if isinstance(event, (EpochLogged, RunFinished)):
            files.flush()  # what the files queued comes first
            results.append(
                writer.add(event) if isinstance(event, EpochLogged) else writer.finish(event)
            )
            continue
        writer.flush()
        if isinstance(event, CheckpointObserved):
            results.append(_apply_checkpoint(conn, event, runs, files))
            continue
        files.flush()
        results.append(_apply_claimed(conn, event, runs))
    writer.flush()
    files.flush()
    return results


# A batch's epoch files go to the server this many at a time, without waiting: it writes
# them while the next ones are worked out here (pipeline mode; one statement a chunk). The
# first chunk is smaller: the server, slower at them than this side, starts sooner.
FILE_CHUNK = 64
FIRST_FILE_CHUNK = 16


class _FileBatch:
    """The checkpoint files of one batch: what the database knows of their paths asked in
    one statement up front (`read_known` reads the answer); their rows (each file's two
    rows in one statement) sent in chunks of `FILE_CHUNK` as they are worked out, without
    waiting for the server; the sample images they bring and their runs' updates written
    at the end. A backfill costs a few statements a batch. `close` waits for the server
    (and raises what it refused)."""

    def __init__(self, conn: Connection, events: list[CheckpointObserved]) -> None:
        self.conn = conn
        self.pipeline: tuple[contextlib.ExitStack, Pipeline] | None = None  # chunks in flight
        self.chunk = FIRST_FILE_CHUNK  # files queued before the next chunk is sent
        self.file_rows: list[dict[str, Any]] = []  # EPOCH_AND_CHECKPOINT_UPSERT
        self.step_rows: list[dict[str, Any]] = []  # CHECKPOINT_UPSERT, no epoch row
        self.samples: dict[tuple[int, int], set[str]] = {}
        self.samples_written: dict[tuple[int, int], set[str]] = {}
        self.samples_of_run: dict[int, dict[int, list[str]]] = {}  # each event brings all
        self.links = SampleLinks()  # the samples to link to the prompt grid (issue 12)
        self.run_updates: dict[int, dict[str, Any]] = {}
        self.seen: set[str] = set()  # paths queued in this batch
        self.known: dict[str, dict[str, Any]] = {}
        self.deleted: dict[str, dict[str, Any]] = {}
        self.deleted_keys: set[str] | None = set()
        self.asking: psycopg.Cursor[Any] | None = None  # what is known of these files
        if not events:
            return
        hosts = {e.host for e in events}
        paths = [e.path for e in events]
        self.asking = conn.execute(
            """
            SELECT 'known' AS what, host, path, epoch_result_id, content_hash, mtime,
                   NULL::bigint AS size_bytes, training_run_id AS run_id
            FROM checkpoints WHERE host = ANY(%(hosts)s) AND path = ANY(%(paths)s)
            UNION ALL
            SELECT 'deleted', host, path, NULL, content_hash, mtime, size_bytes, NULL
            FROM deleted_checkpoints WHERE host = ANY(%(hosts)s) AND path = ANY(%(paths)s)
            UNION ALL
            (SELECT 'key', NULL, capture_key, NULL, NULL, NULL, NULL, NULL FROM deleted_runs
             LIMIT 10001)
            """,
            {"hosts": list(hosts), "paths": paths},
        )

    def read_known(self) -> None:
        """The answer to the question asked at the start (sent, not awaited, there)."""
        if self.asking is None:
            return
        rows, self.asking = self.asking.fetchall(), None
        for row in rows:
            if row["what"] == "known":
                self.known[f"{row['host']}\0{row['path']}"] = row
            elif row["what"] == "deleted":
                self.deleted[f"{row['host']}\0{row['path']}"] = row
            elif self.deleted_keys is not None:
                self.deleted_keys.add(row["path"])
        if self.deleted_keys is not None and len(self.deleted_keys) > 10000:
            self.deleted_keys = None  # too many to hold: asked file by file

    def takes(self, event: CheckpointObserved) -> bool:
        """Whether this event can be queued (a path seen twice in a batch is written after
        what is queued, the way a single event is)."""
        if event.path in self.seen or event.force:
            self.flush()
            return False
        self.seen.add(event.path)
        return True

    def of_a_deleted_run(self, event: CheckpointObserved, key: str) -> bool | None:
        """As `_of_a_deleted_run`, from what was read up front (None: ask the database)."""
        if self.deleted_keys is None:
            return None
        if key in self.deleted_keys:
            return True
        return _still_the_deleted_file(self.deleted.get(f"{event.host}\0{event.path}"), event)

    def replaced(self, event: CheckpointObserved) -> bool | None:
        """As `_replaced_file` when nothing changes on disk (None: ask the database)."""
        if _same_model(self.known.get(f"{event.host}\0{event.path}"), event):
            return False
        return None  # another model at this path: the careful way

    def add_file(self, run_id: int, epoch: int | None, with_epoch: bool,
                 event: CheckpointObserved) -> None:  # fmt: skip
        params = _file_params(run_id, epoch, event)
        (self.file_rows if with_epoch else self.step_rows).append(params)
        if len(self.file_rows) >= self.chunk:
            self._send_files()
            self.chunk = FILE_CHUNK

    def add_samples(self, run_id: int, samples: dict[int, list[str]]) -> bool:
        """Queue a file's sample images for their epochs; False when they are what the
        run's last file brought (each of a run's events brings them all)."""
        if self.samples_of_run.get(run_id) == samples:
            return False
        self.samples_of_run[run_id] = samples
        for epoch, paths in samples.items():
            key = (run_id, epoch)
            written = self.samples_written.setdefault(key, set())
            if not written.issuperset(paths):  # each of a run's events brings them all
                self.samples.setdefault(key, set()).update(paths)
                written.update(paths)
        return True

    def update_run(self, run_id: int, updates: dict[str, Any]) -> None:
        if updates:
            self.run_updates.setdefault(run_id, {}).update(updates)

    def _send_files(self) -> None:
        """The queued epoch files' rows, sent without waiting for the server (pipeline
        mode, entered for the rest of the batch) where the connection can."""
        if self.pipeline is None and Pipeline.is_supported():
            stack = contextlib.ExitStack()  # left in close()
            self.pipeline = stack, stack.enter_context(self.conn.pipeline())
        self._write_files()

    def _write_files(self) -> None:
        by_epoch = {(row["run"], row["epoch"]): row for row in self.file_rows}
        for key in [key for key in self.samples if key in by_epoch]:
            # an epoch's images go in with its file's row: no statement of their own (the
            # images of epochs whose files come later wait for them)
            by_epoch[key]["samples"] = sorted(self.samples.pop(key))
        for wave in _waves(self.file_rows, lambda row: (row["run"], row["epoch"])):
            self.conn.execute(EPOCH_AND_CHECKPOINT_UPSERT, file_rows(wave))
        self.file_rows = []

    def close(self, error: BaseException | None = None) -> None:
        """Wait for what was sent, and raise what the server refused (a batch is rolled
        back whole then, and done again the careful way); with ``error`` (already on its
        way out), only leave pipeline mode."""
        if self.pipeline is None:
            return
        (stack, pipeline), self.pipeline = self.pipeline, None
        leave_pipeline(stack, pipeline, error)

    def flush(self) -> None:
        _set_many(self.conn, self.run_updates)
        self.run_updates = {}
        self._write_files()
        self.close()  # the statements below read results, or must come after the files
        if self.step_rows:
            self.conn.execute(CHECKPOINT_ONLY_UPSERT, file_rows(self.step_rows))
        if self.samples:
            keys = sorted(self.samples)
            self.conn.execute(SAMPLES_ADD, (
                [run for run, _ in keys], [epoch for _, epoch in keys],
                [Jsonb(sorted(self.samples[key])) for key in keys],
            ))  # fmt: skip
        self.step_rows, self.samples = [], {}
        self.links.flush(self.conn)  # once their epochs and checkpoints are written


def _waves(rows: list[Any], key: Callable[[Any], tuple[Any, ...]]) -> list[list[Any]]:
    """Rows in waves, one statement each: a wave holds each key once (a statement may not
    update a row twice), a key's later rows in later waves, in order; almost always one."""
    waves: list[list[Any]] = []
    seen: dict[tuple[Any, ...], int] = {}
    for row in rows:
        wave = seen.get(key(row), 0)
        seen[key(row)] = wave + 1
        if wave == len(waves):
            waves.append([])
        waves[wave].append(row)
    return waves


# -- checkpoints -----------------------------------------------------------------------------


def capture_key(event: CheckpointObserved) -> str:
    """How capture recognises the run of a file again: its training session (the run's
    ``session_id``), else its folder and output name on its host (read from the event
    alone: a batch asks for every file's before it works out their runs' settings)."""
    session = session_id_of(event.metadata)
    if session:
        return f"session:{session}"
    return f"dir:{event.host}:{event.output_dir}:{event.output_name}"


def run_fields(event: CheckpointObserved) -> dict[str, Any]:
    """The run's configuration: checkpoint metadata first, the trainer's config fills gaps."""
    fields = dict(_run_settings(event))
    per_save = save_fields_from_metadata(event.metadata)
    per_save["checkpoint_file_size_mb"] = _megabytes(event.size_bytes)
    if event.step is not None:
        per_save["total_steps"] = max(
            event.step, per_save.get("total_steps") or fields.get("total_steps") or 0
        )
    fields.update(valid_run_fields(per_save))
    if event.metadata:  # the event's own str -> str mapping: nothing to validate
        fields["checkpoint_metadata"] = event.metadata
    return fields


# The settings of the runs seen lately, by what they were read from: a run's checkpoints
# differ only in `SAVE_KEYS`, so a backfill reads and validates its settings once a run.
_SETTINGS: dict[tuple[Any, ...], dict[str, Any]] = {}
_SETTINGS_KEPT = 64


# ... and by event: a batch asks for an event's facts up to three times (its run's settings
# to create the run and to record the file, its shared metadata to send its row); the
# event is kept with them, so its id is its own
_BY_EVENT: dict[int, tuple[CheckpointObserved, dict[str, Any], frozenset[tuple[str, str]]]] = {}
_BY_EVENT_KEPT = 1024
_SHARED: dict[frozenset[tuple[str, str]], frozenset[tuple[str, str]]] = {}
# the shared part each run's file brought last (by host, folder and output name), also as
# a dict to compare the next file's metadata with
_RECENT_SHARED: dict[tuple[str, str, str], tuple[frozenset[tuple[str, str]], dict[str, str]]] = {}
_SAVE_KEYS_ORDER = tuple(sorted(SAVE_KEYS))


def _run_settings(event: CheckpointObserved) -> dict[str, Any]:
    """The run columns of ``event`` outside its metadata's `SAVE_KEYS`, validated (shared:
    copy before changing)."""
    return _facts(event)[1]


def _shared_metadata(event: CheckpointObserved) -> frozenset[tuple[str, str]]:
    """The items of ``event``'s metadata outside `SAVE_KEYS`: what its run's other
    checkpoints hold too."""
    return _facts(event)[2]


def _facts(
    event: CheckpointObserved,
) -> tuple[CheckpointObserved, dict[str, Any], frozenset[tuple[str, str]]]:
    known = _BY_EVENT.get(id(event))
    if known is not None and known[0] is event:
        return known
    facts = (event, _settings_of(event, shared := _shared_part(event)), shared)
    if len(_BY_EVENT) >= _BY_EVENT_KEPT:
        _BY_EVENT.clear()
    _BY_EVENT[id(event)] = facts
    return facts


def _shared_part(event: CheckpointObserved) -> frozenset[tuple[str, str]]:
    """The items of ``event``'s metadata outside `SAVE_KEYS`, one object for each distinct
    shared part: looked up again (the run's settings, the batch's metadata), it is found by
    identity, not compared item by item. A run's next file is told by comparing its
    metadata with the part its previous file shared (in C, nothing built)."""
    metadata = event.metadata
    where = (event.host, event.output_dir, event.output_name)
    recent = _RECENT_SHARED.get(where)
    if recent is not None:
        shared, as_dict = recent
        saved = 0
        for key in _SAVE_KEYS_ORDER:
            if key in metadata:
                saved += 1
        # the same keys besides `SAVE_KEYS`, each with the same value
        if len(metadata) == len(as_dict) + saved and as_dict.items() <= metadata.items():
            return shared
    # a set: safetensors writes the keys of each file in an order of its own
    items = set(metadata.items())
    for key in SAVE_KEYS.intersection(metadata):
        items.discard((key, metadata[key]))
    shared = frozenset(items)
    if len(_SHARED) >= _SETTINGS_KEPT:
        _SHARED.clear()
        _RECENT_SHARED.clear()
    shared = _SHARED.setdefault(shared, shared)
    _RECENT_SHARED[where] = (shared, dict(shared))
    return shared


def _settings_of(event: CheckpointObserved, metadata: frozenset[tuple[str, str]]) -> dict[str, Any]:
    config = json.dumps(event.config, sort_keys=True, default=str) if event.config else None
    key = (event.trainer, event.output_name, event.output_dir, event.host, config, metadata)
    found = _SETTINGS.get(key)
    if found is None:
        fields = run_fields_from_config(event.config or {})
        fields.update(run_fields_from_adapter_files(event.config or {}))
        fields.update(run_settings_from_metadata(dict(metadata)))
        fields.update(
            trainer=event.trainer or "unknown",
            output_name=event.output_name,
            output_dir=event.output_dir,
            host=event.host,
        )
        if event.config:
            fields["config"] = event.config
        found = valid_run_fields(fields)
        if len(_SETTINGS) >= _SETTINGS_KEPT:
            _SETTINGS.clear()
        _SETTINGS[key] = found
    return found


def _megabytes(size_bytes: int) -> Decimal:
    return (Decimal(size_bytes) / Decimal(1024 * 1024)).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_UP
    )


def _apply_checkpoint(
    conn: Connection,
    event: CheckpointObserved,
    runs: RunCache,
    files: _FileBatch | None = None,
) -> Applied:
    if files is not None and not files.takes(event):
        files = None  # this one the careful way, after what is queued
    fields = run_fields(event)
    key = event.run_key or capture_key(event)
    deleted = files.of_a_deleted_run(event, key) if files is not None else None
    if deleted is None:
        deleted = _of_a_deleted_run(conn, event, key)
    if deleted:
        return Applied("deleted")
    run, fields, event = _file_run(conn, event, key, fields, runs, files)
    created = _created(run)
    updates = _update_run(conn, run, event, fields, apply=files is None)
    run.update(updates)
    if files is not None:
        files.update_run(run["id"], updates)

    epoch = _epoch_of(conn, event, run, fields, files)
    with_epoch = epoch is not None and event.checkpoint_kind in ("epoch", "final", "unknown")
    if files is not None and files.replaced(event) is False:
        files.add_file(run["id"], epoch, with_epoch, event)
        new_samples = files.add_samples(run["id"], event.samples_by_epoch)
        carried = _carried(event) if new_samples else ()  # (the same ones queued already)
        files.links.add(run, carried, event.sample_prompts, _step_file(event))
        return Applied("recorded", run["run_name"], epoch, new_run=created)
    if files is not None:
        files.flush()
    stale = _replaced_file(conn, event)
    epoch_result_id = None
    if with_epoch:
        assert epoch is not None
        epoch_result_id = _upsert_epoch(conn, run["id"], epoch, event)
    if stale:  # the file was overwritten by another model since this event was observed
        _epoch_file_gone(conn, epoch_result_id, event.path)
    else:
        _upsert_checkpoint(conn, run["id"], epoch_result_id, epoch, event)
    for sample_epoch, paths in event.samples_by_epoch.items():
        _add_samples(conn, run["id"], sample_epoch, paths)
    link_event_samples(conn, run, _carried(event), event.sample_prompts, _step_file(event))
    return Applied("recorded", run["run_name"], epoch, new_run=created)


def _file_run(
    conn: Connection,
    event: CheckpointObserved,
    key: str,
    fields: dict[str, Any],
    runs: RunCache,
    files: _FileBatch | None = None,
) -> tuple[dict[str, Any], dict[str, Any], CheckpointObserved]:
    """The run a checkpoint file goes to, the settings it may give that run, and the event
    as that run takes it."""
    by_name = event.run_key is None and event.run_name is not None  # watch --run NAME
    run = None if by_name else runs.get(key) or None
    if run is None:
        run = resolve_run(
            conn, key, event.run_name, fields, by_name=by_name, key_absent=runs.get(key) == {},
            default_names=lambda: _default_names(event, fields),
        )  # fmt: skip
        runs[key] = run
    placed = None if by_name or event.run_key else _placed_by_hand(conn, event, run, files)
    if placed is not None:
        run = placed
    if (by_name and run.get("capture_key") != key) or placed is not None:
        # the run asked for does not hold this training (`record --run NAME` of a file
        # recorded in another run, or that file met again): the file brings its own
        # epoch's samples, not all of its training's, and not the training's session
        fields = _without_session(fields)
        own = {e: paths for e, paths in event.samples_by_epoch.items() if e == event.epoch}
        event = dataclasses.replace(event, samples_by_epoch=own)
        return run, fields, event
    if not by_name and event.run_key is None and _another_training(conn, run, event, key):
        _detach(conn, run, runs, key)
        run = runs[key] = resolve_run(
            conn, key, event.run_name, fields, key_absent=True,
            default_names=lambda: _default_names(event, fields),
        )  # fmt: skip
    return run, fields, event


def _placed_by_hand(
    conn: Connection, event: CheckpointObserved, run: dict[str, Any], files: _FileBatch | None
) -> dict[str, Any] | None:
    """The run a person put this very file in (`record --run NAME`), when it is not the run
    its training's key finds: met again unchanged (the same content at the same path, its
    time touched), it stays where it was put; a new model at the path goes by its key."""
    if event.content_hash is None:
        return None  # (no telling the content apart: by its key)
    if files is not None and files.asking is None:
        row = files.known.get(f"{event.host}\0{event.path}")
    else:
        row = conn.execute(
            "SELECT training_run_id AS run_id, content_hash FROM checkpoints "
            "WHERE host = %s AND path = %s",
            (event.host, event.path),
        ).fetchone()
    if row is None or row["run_id"] == run["id"] or row["content_hash"] != event.content_hash:
        return None
    found: dict[str, Any] | None = conn.execute(
        "SELECT * FROM training_runs WHERE id = %s", (row["run_id"],)
    ).fetchone()
    return found


def _carried(event: CheckpointObserved) -> list[str]:
    return [path for paths in event.samples_by_epoch.values() for path in paths]


def _step_file(event: CheckpointObserved) -> int | None:
    """The step of a kohya step checkpoint (its step's samples were written before it)."""
    if event.checkpoint_kind == "step" and event.trainer == "kohya":
        return event.step
    return None


def _epoch_of(
    conn: Connection,
    event: CheckpointObserved,
    run: dict[str, Any],
    fields: dict[str, Any],
    files: _FileBatch | None,
) -> int | None:
    """The epoch a checkpoint belongs to; an unnumbered final file comes after the last."""
    if event.epoch is not None or event.checkpoint_kind != "final":
        return event.epoch
    if files is not None:
        files.flush()  # the epochs queued so far count
    planned = {"num_epochs": fields.get("num_epochs") or run.get("num_epochs")}
    epoch = _final_epoch_number(conn, run["id"], planned)
    if epoch == 1 and not planned["num_epochs"] and event.trainer == "diffusers":
        return None  # an unknown epoch count says nothing: never epoch 1
    return epoch


NEW_RUN = "_new_run"


def _created(run: dict[str, Any]) -> bool:
    """Whether ``run`` was just inserted (the mark is removed: it is no column)."""
    return bool(run.pop(NEW_RUN, False))


def _of_a_deleted_run(conn: Connection, event: CheckpointObserved, key: str) -> bool:
    """A file (unchanged since) or a training of a run deleted with ``cleanup``: left out,
    unless the event is forced, which forgets that the run was deleted."""
    if event.force:
        conn.execute(
            "DELETE FROM deleted_checkpoints WHERE host = %s AND path = %s",
            (event.host, event.path),
        )
        conn.execute("DELETE FROM deleted_runs WHERE capture_key = %s", (key,))
        return False
    row = conn.execute(
        """
        SELECT EXISTS (SELECT 1 FROM deleted_runs WHERE capture_key = %s) AS run_deleted,
               d.size_bytes, d.mtime, d.content_hash
        FROM (SELECT 1) AS one
        LEFT JOIN deleted_checkpoints d ON d.host = %s AND d.path = %s
        """,
        (key, event.host, event.path),
    ).fetchone()
    assert row is not None
    if row["run_deleted"]:
        return True
    return row["size_bytes"] is not None and _still_the_deleted_file(row, event)


def _still_the_deleted_file(row: dict[str, Any] | None, event: CheckpointObserved) -> bool:
    """A deleted run's file (``deleted_checkpoints`` row) that has not changed since."""
    return row is not None and (
        row["size_bytes"] == event.size_bytes and row["mtime"] == event.mtime
        and (row["content_hash"] is None or event.content_hash is None
             or row["content_hash"] == event.content_hash)
    )  # fmt: skip


def _same_model(row: dict[str, Any] | None, event: CheckpointObserved) -> bool:
    """Whether the ``checkpoints`` row of this path (if any) may hold the event's model: no
    row, or a content hash missing on either side, or the same hash."""
    return (
        row is None or row["content_hash"] is None or event.content_hash is None
        or row["content_hash"] == event.content_hash
    )  # fmt: skip


def resolve_run(
    conn: Connection,
    key: str,
    run_name: str | None,
    fields: dict[str, Any],
    *,
    by_name: bool = False,
    key_absent: bool = False,
    default_names: Callable[[], list[str]],
    captured: bool = True,
) -> dict[str, Any]:
    """The run an event belongs to: found by its capture key (or, ``by_name``, by the run
    name it asks for), else created. A run found by name that has no key yet takes this
    one, so later files of the same training find it too. ``key_absent``: the caller
    already looked the key up in this transaction and found no run."""
    if not by_name and not key_absent:
        row = conn.execute("SELECT * FROM training_runs WHERE capture_key = %s", (key,)).fetchone()
        if row is not None:
            return row
    if run_name:
        row = conn.execute(
            "SELECT * FROM training_runs WHERE run_name = %s", (run_name,)
        ).fetchone()
        key_free = key_absent or (
            conn.execute("SELECT 1 FROM training_runs WHERE capture_key = %s", (key,)).fetchone()
            is None
        )
        if row is not None:
            if row["capture_key"] is None and key_free:
                conn.execute(
                    "UPDATE training_runs SET capture_key = %s WHERE id = %s", (key, row["id"])
                )
                row["capture_key"] = key
            return row
        if key_free:
            return _insert_run(conn, [run_name], key, fields, captured)
        # the training is recorded already, in another run: this one, asked for by name,
        # takes its files but not its session (`record --run NAME` of a recorded file)
        return _insert_run(conn, [run_name], None, _without_session(fields), captured)
    return _insert_run(conn, default_names(), key, fields, captured)


def _without_session(fields: dict[str, Any]) -> dict[str, Any]:
    """A training's settings for a run that does not hold its session (the session id of
    a training names one run: ``training_runs_session_uq``)."""
    return {k: v for k, v in fields.items() if k != "session_id"}


def _default_name(event: CheckpointObserved, fields: dict[str, Any]) -> str:
    """The first name a file's run is given: its output name and the day it started."""
    return _dated_name(event.output_name, fields.get("training_started_at") or event.mtime)


def _default_names(event: CheckpointObserved, fields: dict[str, Any]) -> list[str]:
    return _names_from(_default_name(event, fields))


def _dated_name(base: str, started: datetime) -> str:
    return f"{base}_{started:%Y-%m-%d}"


def _names_from(first: str) -> list[str]:
    """``first`` (``{base}_{date}``), then ``..._2``, ``..._3``: the run names to try, in
    order."""
    return [first] + [f"{first}_{n}" for n in range(2, MAX_NAME_ATTEMPTS)]


def _new_run_values(fields: dict[str, Any], captured: bool) -> dict[str, Any]:
    """The columns of a run created from ``fields`` (its name and key aside)."""
    values = {k: v for k, v in fields.items() if k != "total_steps" or v}
    values["status"] = "in_progress"
    values["captured_values"] = Jsonb(_captured_values({}, values) if captured else {})
    if fields.get("training_started_at"):
        values["run_date"] = fields["training_started_at"]
    return values


def _insert_run(
    conn: Connection,
    names: list[str],
    key: str | None,
    fields: dict[str, Any],
    captured: bool = True,
) -> dict[str, Any]:
    values = _new_run_values(fields, captured)
    for name in names:
        query, params = _sqlbuild.insert(
            "training_runs",
            {"run_name": name, "capture_key": key, **values},
            on_conflict="ON CONFLICT DO NOTHING",  # the key or the name is taken
        )
        row = conn.execute(query, params).fetchone()
        if row is not None:
            row[NEW_RUN] = True  # taken off by the caller, see _created
            return row
        if key is not None:  # another process created the run with this key a moment ago?
            existing = conn.execute(
                "SELECT * FROM training_runs WHERE capture_key = %s", (key,)
            ).fetchone()
            if existing is not None:
                return existing
        # else that name is taken by another run: try the next one
    raise RuntimeError(f"no free run name from {names[0]!r}")


def _update_run(
    conn: Connection,
    run: dict[str, Any],
    event: CheckpointObserved,
    fields: dict[str, Any],
    *,
    apply: bool = True,
) -> dict[str, Any]:
    """Fill the run's empty columns; keep size, steps, end time and metadata current.

    Returns the columns it changed (written now, or by the caller when not ``apply``)."""
    updates = _fillable(run, fields)
    newest = run.get("total_steps") is None or (fields.get("total_steps") or 0) >= (
        run.get("total_steps") or 0
    )
    if newest:
        for column in (
            "checkpoint_file_size_mb",
            "checkpoint_metadata",
            "total_steps",
            "training_finished_at",
        ):
            if fields.get(column) is not None and fields[column] != run.get(column):
                updates[column] = fields[column]
    if event.checkpoint_kind == "final" and run["status"] == "in_progress":
        updates["status"] = "completed"
    _note_captured(run, updates)
    if apply:
        _set(conn, run["id"], updates)
    return updates


def _final_epoch_number(conn: Connection, run_id: int, fields: dict[str, Any]) -> int:
    """The epoch of an unnumbered final file without ss_epoch: the planned epoch count,
    else one after the last epoch file (kohya writes no numbered file for the last epoch)."""
    if fields.get("num_epochs"):
        return int(fields["num_epochs"])
    row = conn.execute(
        "SELECT max(epoch_number) AS last FROM checkpoints "
        "WHERE training_run_id = %s AND kind = 'epoch'",
        (run_id,),
    ).fetchone()
    return int(row["last"]) + 1 if row and row["last"] is not None else 1


# The rows of checkpoint files travel as one JSON array, one object a file, so a backfill's
# batch of files is one statement (its rows planned once, the tables' statement triggers
# fired once) and a single event is the same statement with one element. (JSON, not an
# array a column: psycopg writes arrays in Python, about four times slower than json in C.)
FILE_ROWS = """
    file AS (
        SELECT f.*,
               -- a file's metadata is what its run's files share (sent once:
               -- `metadata_shared` holds each distinct one, `f.shared` points in it) and its
               -- own keys (`SAVE_KEYS`: epoch, steps, hashes): the same document, 1/7 of
               -- the bytes
               CASE WHEN f.shared IS NOT NULL THEN
                   (%(metadata_shared)s::jsonb -> f.shared) || f.own
               END AS metadata
        FROM jsonb_to_recordset(%(rows)s::jsonb) AS f(
            n integer, run bigint, epoch integer, path text, host text, mb numeric,
            size bigint, hash text, mtime timestamptz, step integer, kind text,
            format text, epoch_result_id bigint, shared integer, own jsonb, samples jsonb))
"""

EPOCH_INSERT = """
    INSERT INTO epoch_results (
        training_run_id, epoch_number, checkpoint_path, checkpoint_file_size_mb,
        checkpoint_size_bytes, checkpoint_hash, checkpoint_mtime, checkpoint_on_disk,
        global_step, checkpoint_metadata, sample_images)
    SELECT run, epoch, path, mb, size, hash, mtime, true, step, metadata,
           ARRAY(SELECT jsonb_array_elements_text(samples))
    FROM file ORDER BY n
    ON CONFLICT (training_run_id, epoch_number) DO UPDATE SET
        sample_images = ARRAY(
            SELECT DISTINCT unnest(epoch_results.sample_images || EXCLUDED.sample_images)
            ORDER BY 1),
        checkpoint_path = EXCLUDED.checkpoint_path,
        checkpoint_file_size_mb = EXCLUDED.checkpoint_file_size_mb,
        checkpoint_size_bytes = EXCLUDED.checkpoint_size_bytes,
        checkpoint_hash = EXCLUDED.checkpoint_hash,
        checkpoint_mtime = EXCLUDED.checkpoint_mtime,
        checkpoint_on_disk = true,
        global_step = COALESCE(EXCLUDED.global_step, epoch_results.global_step),
        checkpoint_metadata = COALESCE(EXCLUDED.checkpoint_metadata,
                                       epoch_results.checkpoint_metadata)
    RETURNING id, training_run_id, epoch_number
"""

CHECKPOINT_INSERT = """
    INSERT INTO checkpoints (
        training_run_id, epoch_result_id, host, path, kind, file_format, epoch_number,
        global_step, size_bytes, content_hash, mtime, on_disk, removed_at, lora_hash)
    SELECT f.run, {epoch_result_id}, f.host, f.path, f.kind, f.format, f.epoch, f.step,
           f.size, f.hash, f.mtime, true, NULL,
           -- kohya's sshs_model_hash (the content hash when it is one) is A1111's LoRA
           -- hash, which test images are matched by (lora_tracker/images/matching.py);
           -- 64 hex digits, tested without a bounded regex ({{64}} costs 5 us a row)
           CASE WHEN length(f.hash) = 64 AND f.hash !~ '[^0-9a-f]' THEN f.hash END
    FROM {source} ORDER BY f.n
    ON CONFLICT (host, path) DO UPDATE SET
        training_run_id = EXCLUDED.training_run_id,
        -- the same file told by another source (the API's epoch, the watcher's step)
        -- keeps the richest facts; a new file's facts replace them
        epoch_result_id = CASE WHEN checkpoints.training_run_id = EXCLUDED.training_run_id
            AND checkpoints.content_hash IS NOT DISTINCT FROM EXCLUDED.content_hash
            THEN COALESCE(EXCLUDED.epoch_result_id, checkpoints.epoch_result_id)
            ELSE EXCLUDED.epoch_result_id END,
        kind = CASE WHEN checkpoints.training_run_id = EXCLUDED.training_run_id
            AND checkpoints.content_hash IS NOT DISTINCT FROM EXCLUDED.content_hash
            AND EXCLUDED.kind IN ('step', 'unknown') AND checkpoints.kind = 'epoch'
            THEN checkpoints.kind ELSE EXCLUDED.kind END,
        file_format = EXCLUDED.file_format,
        epoch_number = CASE WHEN checkpoints.training_run_id = EXCLUDED.training_run_id
            AND checkpoints.content_hash IS NOT DISTINCT FROM EXCLUDED.content_hash
            THEN COALESCE(EXCLUDED.epoch_number, checkpoints.epoch_number)
            ELSE EXCLUDED.epoch_number END,
        global_step = CASE WHEN checkpoints.training_run_id = EXCLUDED.training_run_id
            AND checkpoints.content_hash IS NOT DISTINCT FROM EXCLUDED.content_hash
            THEN COALESCE(EXCLUDED.global_step, checkpoints.global_step)
            ELSE EXCLUDED.global_step END,
        size_bytes = EXCLUDED.size_bytes,
        content_hash = EXCLUDED.content_hash,
        -- a hash computed for an image stays while the file is the same one
        lora_hash = CASE WHEN checkpoints.content_hash IS NOT DISTINCT FROM EXCLUDED.content_hash
            THEN COALESCE(EXCLUDED.lora_hash, checkpoints.lora_hash) ELSE EXCLUDED.lora_hash END,
        mtime = EXCLUDED.mtime,
        on_disk = true,
        removed_at = NULL
"""

# the constants above, nothing from input:
# files' epoch rows (their ids returned)
EPOCH_UPSERT = "".join(("WITH", FILE_ROWS, EPOCH_INSERT))
# files without an epoch row, or whose epoch row was written first (its id given)
CHECKPOINT_ONLY_UPSERT = "".join(("WITH", FILE_ROWS, CHECKPOINT_INSERT.format(
    epoch_result_id="f.epoch_result_id", source="file f")))  # fmt: skip
# epoch files: both rows of each file in one statement
EPOCH_AND_CHECKPOINT_UPSERT = "".join(("WITH", FILE_ROWS, ", epoch_row AS (", EPOCH_INSERT, ") ",
    CHECKPOINT_INSERT.format(
        epoch_result_id="e.id",
        source="file f JOIN epoch_row e "
        "ON e.training_run_id = f.run AND e.epoch_number = f.epoch")))  # fmt: skip


def _file_params(
    run_id: int, epoch: int | None, event: CheckpointObserved, epoch_result_id: int | None = None
) -> dict[str, Any]:
    """One file's row (an object of `FILE_ROWS`' JSON array, but for ``event``)."""
    return {
        "run": run_id, "epoch": epoch, "path": event.path, "host": event.host,
        "mb": str(_megabytes(event.size_bytes)), "size": event.size_bytes,
        "hash": event.content_hash, "mtime": event.mtime.isoformat(), "step": event.step,
        "event": event,
        "kind": event.checkpoint_kind, "format": event.file_format,
        "epoch_result_id": epoch_result_id, "samples": None,
    }  # fmt: skip


def file_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Files' rows as `FILE_ROWS`' parameters: one JSON object a file (its metadata's own
    keys in it), each distinct shared part of the files' metadata once."""
    shared: dict[frozenset[tuple[str, str]], int] = {}
    documents: list[dict[str, Any]] = []
    for n, row in enumerate(rows, 1):
        document = dict(row)
        event: CheckpointObserved = document.pop("event")
        document["n"] = n
        metadata = event.metadata
        if metadata:
            document["shared"] = shared.setdefault(_shared_metadata(event), len(shared))
            document["own"] = {key: metadata[key] for key in SAVE_KEYS if key in metadata}
        documents.append(document)
    return {"rows": Jsonb(documents), "metadata_shared": Jsonb([dict(items) for items in shared])}


def _upsert_epoch(conn: Connection, run_id: int, epoch: int, event: CheckpointObserved) -> int:
    params = file_rows([_file_params(run_id, epoch, event)])
    row = conn.execute(EPOCH_UPSERT, params).fetchone()
    assert row is not None
    return int(row["id"])


def _upsert_checkpoint(
    conn: Connection,
    run_id: int,
    epoch_result_id: int | None,
    epoch: int | None,
    event: CheckpointObserved,
) -> None:
    conn.execute(
        CHECKPOINT_ONLY_UPSERT,
        file_rows([_file_params(run_id, epoch, event, epoch_result_id)]),
    )


# -- removals and samples -------------------------------------------------------------------


def _apply_removal(conn: Connection, event: CheckpointRemoved) -> Applied:
    row = conn.execute(
        """
        UPDATE checkpoints SET on_disk = false, removed_at = %s
        WHERE host = %s AND path = %s AND on_disk
        RETURNING training_run_id, epoch_result_id, epoch_number, content_hash
        """,
        (event.observed_at, event.host, event.path),
    ).fetchone()
    if row is None:
        return Applied("unmatched")
    # A copy of the same file still on disk (the folder was copied, or the file is also in
    # a UI's LoRA folder) keeps the epoch on disk: the epoch points at the copy instead.
    copy = conn.execute(
        "SELECT path FROM checkpoints WHERE training_run_id = %s AND on_disk "
        "AND content_hash = %s AND path <> %s ORDER BY mtime, path LIMIT 1",
        (row["training_run_id"], row["content_hash"], event.path),
    ).fetchone()
    conn.execute(  # by path too, whichever source linked the epoch to the file
        "UPDATE epoch_results SET checkpoint_path = COALESCE(%s, checkpoint_path), "
        "checkpoint_on_disk = %s "
        "WHERE (id = %s OR training_run_id = %s) AND checkpoint_path = %s AND checkpoint_on_disk",
        (copy["path"] if copy else None, copy is not None, row["epoch_result_id"],
         row["training_run_id"], event.path),
    )  # fmt: skip
    name = conn.execute(
        "SELECT run_name FROM training_runs WHERE id = %s", (row["training_run_id"],)
    ).fetchone()
    return Applied("recorded", name["run_name"] if name else None, row["epoch_number"])


def _apply_samples(conn: Connection, event: SamplesObserved) -> Applied:
    # the run training when kohya wrote it: the latest started by then, and not finished
    # before it (a reused folder's next run may not be recorded yet)
    run = conn.execute(
        """
        SELECT id, run_name, config FROM training_runs
        WHERE host = %(host)s AND output_dir = %(dir)s AND output_name = %(name)s
          AND (%(at)s::timestamptz IS NULL OR (
               (training_started_at IS NULL
                OR date_trunc('second', training_started_at) <= %(at)s)
           AND (status IN ('planned', 'in_progress') OR training_finished_at IS NULL
                OR training_finished_at >= %(at)s)))
        ORDER BY run_date DESC, id DESC LIMIT 1
        """,
        {"host": event.host, "dir": event.output_dir, "name": event.output_name,
         "at": event.written_at},
    ).fetchone()  # fmt: skip
    if run is None:
        return Applied("unmatched")  # its run's next checkpoint event brings it along
    _add_samples(conn, run["id"], event.epoch, event.paths)
    link_event_samples(conn, run, event.paths, event.sample_prompts)
    return Applied("recorded", run["run_name"], event.epoch)


SAMPLES_ADD = """
    INSERT INTO epoch_results (training_run_id, epoch_number, sample_images)
    SELECT run, epoch, ARRAY(SELECT jsonb_array_elements_text(paths))
    FROM unnest(%s::bigint[], %s::integer[], %s::jsonb[]) WITH ORDINALITY AS s(run, epoch, paths, n)
    ORDER BY n
    ON CONFLICT (training_run_id, epoch_number) DO UPDATE SET
        sample_images = ARRAY(
            SELECT DISTINCT unnest(epoch_results.sample_images || EXCLUDED.sample_images)
            ORDER BY 1)
    WHERE NOT epoch_results.sample_images @> EXCLUDED.sample_images
"""


def _add_samples(conn: Connection, run_id: int, epoch: int, paths: list[str]) -> None:
    """Add sample images to an epoch (creating its row: samples outlive checkpoints)."""
    conn.execute(SAMPLES_ADD, ([run_id], [epoch], [Jsonb(sorted(paths))]))


# -- runs reported by hooks and the Python API ---------------------------------------------


def _run_of(
    conn: Connection,
    event: RunStarted | EpochLogged | RunFinished,
    fields: dict[str, Any] | None = None,
    runs: RunCache | None = None,
) -> dict[str, Any]:
    cached = runs.get(event.run_key) if runs is not None else None
    if cached:
        return cached
    run = _resolve_run_of(conn, event, fields or {}, key_absent=cached is not None)
    if runs is not None:
        runs[event.run_key] = run
    return run


def _resolve_run_of(
    conn: Connection,
    event: RunStarted | EpochLogged | RunFinished,
    fields: dict[str, Any],
    *,
    key_absent: bool,
) -> dict[str, Any]:
    base = (
        getattr(event, "default_name", None) or fields.get("output_name") or event.run_name or "run"
    )
    started = fields.get("training_started_at") or event.observed_at
    return resolve_run(
        conn, event.run_key, event.run_name, fields, key_absent=key_absent,
        default_names=lambda: _names_from(_dated_name(base, started)),
        captured=getattr(event, "captured", False),
    )  # fmt: skip


def _prefill(conn: Connection, events: list[AnyEvent], runs: RunCache) -> None:
    """Look up in one statement the runs of the events' keys: those a hook names, and
    those of checkpoint files (found by their session or folder, as `_apply_checkpoint`
    asks; a file recorded into a run named by `watch --run` is looked up by name there)."""
    keys = set()
    for event in events:
        key = getattr(event, "run_key", None)
        if key is None and isinstance(event, CheckpointObserved) and event.run_name is None:
            key = capture_key(event)
        if key and key not in runs:
            keys.add(key)
    if not keys:
        return
    found = conn.execute(
        "SELECT * FROM training_runs WHERE capture_key = ANY(%s)", (list(keys),)
    ).fetchall()
    for row in found:
        runs[row["capture_key"]] = row
    for key in keys - set(runs):
        runs[key] = {}  # looked up, not there (yet)


class _EpochWriter:
    """The epoch reports and run ends (hooks, the Python API) of one batch, written
    together: a statement per wave of epoch reports, one for the runs' last word, one for
    the runs that ended."""

    def __init__(self, conn: Connection, runs: RunCache) -> None:
        self.conn = conn
        self.runs = runs
        self.rows: list[tuple[Any, ...]] = []
        self.heard: dict[int, datetime] = {}  # run id -> its latest event
        self.ended: dict[int, dict[str, Any]] = {}  # run id -> its end (the last one given)
        self.links = SampleLinks()

    def finish(self, event: RunFinished) -> Applied:
        run = _run_of(self.conn, event, runs=self.runs)
        created = _created(run)
        updates = _finish_updates(run, event)
        earlier = self.ended.get(run["id"], {})
        if "failure_reason" not in updates and "failure_reason" in earlier:
            updates["failure_reason"] = earlier["failure_reason"]
        if "total_steps" not in updates and "total_steps" in earlier:
            updates["total_steps"] = earlier["total_steps"]
        self.ended[run["id"]] = updates
        run.update(updates)
        return Applied("recorded", run["run_name"], new_run=created)

    def add(self, event: EpochLogged) -> Applied:
        run = _run_of(self.conn, event, runs=self.runs)
        created = _created(run)
        self.rows.append(_epoch_logged_row(run["id"], event))
        if event.sample_images:
            self.links.add(run, event.sample_images, event.sample_prompts)
        if event.observed_at > self.heard.get(run["id"], event.observed_at - _ONE_US):
            self.heard[run["id"]] = event.observed_at
        return Applied("recorded", run["run_name"], event.epoch, new_run=created)

    def flush(self) -> None:
        for rows in _waves(self.rows, lambda row: (row[0], row[1])):
            runs, epochs, losses, metrics, samples = zip(*rows, strict=True)
            self.conn.execute(
                EPOCH_LOGGED_MANY,
                (Jsonb([m.obj if isinstance(m, Jsonb) else m for m in metrics]),
                 Jsonb([list(paths) for paths in samples]),
                 list(runs), list(epochs), list(losses)),
            )  # fmt: skip
        self.rows = []
        self.links.flush(self.conn)
        if self.heard:
            self.conn.execute(
                "UPDATE training_runs tr SET last_event_at = v.at "
                "FROM unnest(%s::bigint[], %s::timestamptz[]) AS v(id, at) WHERE tr.id = v.id",
                (list(self.heard), list(self.heard.values())),
            )
            self.heard = {}
        if self.ended:
            ended = [self.ended[run_id] for run_id in sorted(self.ended)]
            self.conn.execute(
                """
                UPDATE training_runs tr SET
                    status = v.status, training_finished_at = v.at, last_event_at = v.at,
                    failure_reason = COALESCE(v.reason, tr.failure_reason),
                    total_steps = COALESCE(v.steps, tr.total_steps)
                FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[], %s::text[],
                            %s::integer[]) AS v(id, status, at, reason, steps)
                WHERE tr.id = v.id
                """,
                (sorted(self.ended), [e["status"] for e in ended],
                 [e["training_finished_at"] for e in ended],
                 [e.get("failure_reason") for e in ended], [e.get("total_steps") for e in ended]),
            )  # fmt: skip
            self.ended = {}


_ONE_US = timedelta(microseconds=1)


def _set_many(conn: Connection, updates: dict[int, dict[str, Any]]) -> None:
    """Each run's updates; runs that change the same columns in one statement (a backfill
    updates each of its runs once a batch with the same columns: one round trip, not one a
    run), the rows in id order (one order: no deadlock between writers)."""
    rows_of = _by_columns([{"id": run_id} | updates[run_id] for run_id in sorted(updates)
                           if updates[run_id]])  # fmt: skip
    for columns, group in rows_of.items():
        columns = tuple(c for c in columns if c != "id")
        if len(group) == 1:
            _set(conn, group[0]["id"], {c: group[0][c] for c in columns})
            continue
        rows = [_json_ready(row) for row in group]
        conn.execute(
            sql.SQL(
                "UPDATE training_runs tr SET {} "
                "FROM jsonb_populate_recordset(NULL::training_runs, %s) AS v "
                "WHERE tr.id = v.id"
            ).format(
                sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(c), sql.Identifier("v", c))
                    for c in columns
                )
            ),
            (Jsonb(rows),),
        )


def _by_columns(rows: list[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Rows grouped by the columns they set (one statement a group), in their order."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(row)
    return groups


def _json_ready(updates: dict[str, Any]) -> dict[str, Any]:
    """Column values as JSON that ``jsonb_populate_recordset`` reads back to the column's
    type: numbers and times as text (exact), JSON columns as JSON; text as the connection's
    text parameters go (NUL removed: JSON would keep it escaped)."""
    ready: dict[str, Any] = {}
    for column, value in updates.items():
        if isinstance(value, Jsonb):
            value = value.obj
        if column in _sqlbuild.JSON_COLUMNS or column == "captured_values":
            pass
        elif isinstance(value, str):
            value = strip_nul(value)
        elif isinstance(value, list):
            value = [strip_nul(v) if isinstance(v, str) else v for v in value]
        elif isinstance(value, (Decimal, float)) and not isinstance(value, bool):
            value = str(value) if value == value else "NaN"
        elif isinstance(value, datetime):
            value = value.isoformat()
        ready[column] = value
    return ready


def _set(conn: Connection, run_id: int, updates: dict[str, Any]) -> None:
    if updates:
        if "captured_values" in updates:
            updates = {**updates, "captured_values": Jsonb(updates["captured_values"])}
        assignments, params = _sqlbuild.assignments(updates)
        conn.execute(
            sql.SQL("UPDATE training_runs SET {} WHERE id = %s").format(assignments),
            [*params, run_id],
        )


def _started_fields(event: RunStarted) -> dict[str, Any]:
    """The run columns a start states (validated), and when it was heard of."""
    fields = dict(event.fields)
    fields.setdefault("host", event.host)
    if event.config is not None:
        fields["config"] = event.config
    fields = valid_run_fields(fields)
    fields["last_event_at"] = event.observed_at  # a run made now is made complete
    return fields


def _create_started_runs(conn: Connection, events: list[AnyEvent], runs: RunCache) -> None:
    """Runs started through the Python API under a name and key not taken yet (a sweep
    starts hundreds in one process), created in one statement per set of columns, as
    `_apply_run_started` would create each; any other start is left to it."""
    fresh: dict[str, RunStarted] = {}
    for event in events:
        if (
            isinstance(event, RunStarted) and event.run_name and not event.previous_key
            and not event.captured and runs.get(event.run_key) == {}
            and event.run_name not in fresh
        ):  # fmt: skip
            fresh[event.run_name] = event
    if not fresh:
        return
    taken = {
        row["run_name"]
        for row in conn.execute(
            "SELECT run_name FROM training_runs WHERE run_name = ANY(%s)", (list(fresh),)
        ).fetchall()
    }
    _insert_runs(conn, [
        {"run_name": name, "capture_key": event.run_key}
        | _new_run_values(_started_fields(event), captured=False)
        for name, event in fresh.items() if name not in taken
    ], runs)  # fmt: skip


def _create_file_runs(
    conn: Connection, events: list[AnyEvent], claimed: set[Any], runs: RunCache,
    files: _FileBatch,
) -> None:  # fmt: skip
    """The runs of a batch's checkpoint files that no run holds yet (by session or
    folder), each created from its first file not left out, under its first name, in one
    statement per set of columns, as `_apply_checkpoint` would create it; a name taken, a
    file of a deleted run or anything unusual goes the careful way."""
    first: dict[str, dict[str, Any]] = {}
    for event in events:
        if (
            not isinstance(event, CheckpointObserved) or event.event_id not in claimed
            or event.force or event.run_key is not None or event.run_name is not None
        ):  # fmt: skip
            continue
        key = capture_key(event)
        if key in first or runs.get(key) != {} or files.of_a_deleted_run(event, key) is not False:
            continue
        fields = run_fields(event)
        values = {"run_name": _default_name(event, fields), "capture_key": key}
        first[key] = values | _new_run_values(fields, captured=True)
    _insert_runs(conn, list(first.values()), runs)


def _insert_runs(conn: Connection, new: list[dict[str, Any]], runs: RunCache) -> None:
    """Runs inserted in one statement per set of columns (``jsonb_populate_recordset``);
    those inserted go into ``runs`` marked new, a name or key taken meanwhile is skipped."""
    for columns, rows in _by_columns(new).items():
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        created = conn.execute(
            sql.SQL(
                "INSERT INTO training_runs ({}) SELECT {} "
                "FROM jsonb_populate_recordset(NULL::training_runs, %s) "
                "ON CONFLICT DO NOTHING RETURNING *"
            ).format(names, names),
            (Jsonb([_json_ready(row) for row in rows]),),
        ).fetchall()
        for row in created:  # what is not here goes the careful way
            row[NEW_RUN] = True
            runs[row["capture_key"]] = row


def _apply_run_started(
    conn: Connection, event: RunStarted, runs: RunCache | None = None
) -> Applied:
    fields = _started_fields(event)
    if event.previous_key:
        _take_key(conn, event.previous_key, event.run_key)
        if runs is not None:  # keys moved: what the batch looked up is out of date
            runs.pop(event.previous_key, None)
            runs.pop(event.run_key, None)
    _older_run_gives_way(conn, event, runs)  # issue 17
    run = _run_of(conn, event, fields, runs)
    created = _created(run)
    updates = _fillable(run, fields)
    updates.update(_api_name(conn, run, event))  # issue 17
    if event.config is not None:
        updates["config"] = event.config  # the hook read it whole: newer than any file's
    if run["status"] in ("planned", "failed", "cancelled", "completed"):
        updates["status"] = "in_progress"  # started (again)
        updates["failure_reason"] = None
        if not created and run["status"] != "planned":  # (a script run twice, same name)
            verdict = run.get("overall_verdict")
            log.warning(
                "run %s was %s%s: started again under its name, it takes this training's "
                "epochs (a new experiment wants a new name)", run["run_name"], run["status"],
                f", judged {verdict}" if verdict and verdict != "pending" else "",
            )  # fmt: skip
    updates["last_event_at"] = event.observed_at
    updates = {column: value for column, value in updates.items() if run.get(column) != value}
    if event.captured:
        _note_captured(run, updates)
    _set(conn, run["id"], updates)
    run.update(updates)
    return Applied("recorded", run["run_name"], new_run=created)


_EPOCH_LOGGED_MERGE = """
    ON CONFLICT (training_run_id, epoch_number) DO UPDATE SET
        loss = COALESCE(EXCLUDED.loss, epoch_results.loss),
        metrics = COALESCE(epoch_results.metrics, '{}'::jsonb)
                  || COALESCE(EXCLUDED.metrics, '{}'::jsonb),
        sample_images = ARRAY(
            SELECT DISTINCT unnest(epoch_results.sample_images || EXCLUDED.sample_images)
            ORDER BY 1)
"""

# Many epoch reports at once (no (run, epoch) twice): what a batch of hooks' events needs.
EPOCH_LOGGED_MANY = "".join((  # the constants here, nothing from input
    """
    INSERT INTO epoch_results (training_run_id, epoch_number, loss, metrics, sample_images)
    SELECT v.run, v.epoch, v.loss,
           -- JSON values as one JSON array each (an array of jsonb costs psycopg 0.3 ms
           -- an element to write); a JSON null there is no value
           NULLIF(%s::jsonb -> (v.n - 1)::integer, 'null'),
           ARRAY(SELECT jsonb_array_elements_text(%s::jsonb -> (v.n - 1)::integer))
    FROM unnest(%s::bigint[], %s::integer[], %s::float8[]) WITH ORDINALITY
         AS v(run, epoch, loss, n)
    ORDER BY v.n
    """,
    _EPOCH_LOGGED_MERGE,
))  # fmt: skip

EPOCH_LOGGED_UPSERT = "".join((  # one report: the same merge as EPOCH_LOGGED_MANY's
    """
    INSERT INTO epoch_results (training_run_id, epoch_number, loss, metrics, sample_images)
    VALUES (%s, %s, %s, %s, %s)
    """,
    _EPOCH_LOGGED_MERGE,
))  # fmt: skip


def _epoch_logged_row(run_id: int, event: EpochLogged) -> tuple[Any, ...]:
    return (
        run_id, event.epoch, event.loss,
        _sqlbuild.adapt("metrics", event.metrics or None),
        sorted(event.sample_images),
    )  # fmt: skip


def _apply_epoch_logged(
    conn: Connection, event: EpochLogged, runs: RunCache | None = None
) -> Applied:
    run = _run_of(conn, event, runs=runs)
    created = _created(run)
    conn.execute(EPOCH_LOGGED_UPSERT, _epoch_logged_row(run["id"], event))
    link_event_samples(conn, run, event.sample_images, event.sample_prompts)
    _set(conn, run["id"], {"last_event_at": event.observed_at})
    return Applied("recorded", run["run_name"], event.epoch, new_run=created)


def _apply_run_finished(
    conn: Connection, event: RunFinished, runs: RunCache | None = None
) -> Applied:
    run = _run_of(conn, event, runs=runs)
    created = _created(run)
    updates = _finish_updates(run, event)
    _set(conn, run["id"], updates)
    run.update(updates)
    return Applied("recorded", run["run_name"], new_run=created)


def _finish_updates(run: dict[str, Any], event: RunFinished) -> dict[str, Any]:
    updates: dict[str, Any] = {
        "status": event.status,
        "training_finished_at": event.observed_at,
        "last_event_at": event.observed_at,
    }
    if event.failure_reason is not None:
        updates["failure_reason"] = event.failure_reason
    if event.total_steps is not None and event.total_steps > (run.get("total_steps") or 0):
        updates["total_steps"] = event.total_steps  # the step reached, not the last file's
    return updates


# -- issue 10: completing what capture wrote, rekeyed runs, overwritten files ---------------


def _captured(value: Any) -> Any:
    """A column value as compared with what capture wrote (JSON; objects as a digest)."""
    if isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True, default=str)
        return "sha1:" + hashlib.sha1(text.encode()).hexdigest()
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (Decimal, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    return str(value)


def _captured_values(run: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    known = dict(run.get("captured_values") or {})
    known.update({c: _captured(updates[c]) for c in FILL_IF_EMPTY if c in updates})
    return known


def _fillable(run: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """Columns capture may set: empty ones, and settings still holding what capture wrote
    that a later event states differently (never a value a person typed)."""
    known = run.get("captured_values") or {}
    updates: dict[str, Any] = {}
    for column in FILL_IF_EMPTY:
        if column not in fields or fields[column] is None:
            continue
        current = run.get(column)
        if current is not None and current == fields[column]:
            continue  # nothing to change (each of a run's checkpoints states it again)
        if current is None or (
            column in REFILLABLE
            and column in known
            and known[column] == _captured(current)
            and _captured(fields[column]) != known[column]
        ):
            updates[column] = fields[column]
    return updates


def _note_captured(run: dict[str, Any], updates: dict[str, Any]) -> None:
    if any(c in updates for c in FILL_IF_EMPTY):
        updates["captured_values"] = _captured_values(run, updates)


def _take_key(conn: Connection, previous: str, key: str) -> None:
    """A run started under a provisional key takes the trainer's own key (the kohya hook
    records at launch, then learns kohya's session id). If files of that session were
    recorded first (a watcher, a replayed spool), their run is the run: the provisional
    one goes when nothing hangs on it yet."""
    old = conn.execute(
        "SELECT id FROM training_runs WHERE capture_key = %s", (previous,)
    ).fetchone()
    if old is None:
        return
    new = conn.execute("SELECT id FROM training_runs WHERE capture_key = %s", (key,)).fetchone()
    if new is None:
        conn.execute("UPDATE training_runs SET capture_key = %s WHERE id = %s", (key, old["id"]))
        return
    conn.execute(
        """
        DELETE FROM training_runs tr WHERE id = %s
          AND NOT EXISTS (SELECT 1 FROM epoch_results WHERE training_run_id = tr.id)
          AND NOT EXISTS (SELECT 1 FROM checkpoints WHERE training_run_id = tr.id)
        """,
        (old["id"],),
    )


def _replaced_file(conn: Connection, event: CheckpointObserved) -> bool:
    """A path recorded with another content hash now holds another model (a re-run into
    the same folder overwrote ``{name}.safetensors``): the earlier epoch row is no longer
    on disk. Returns True when this event is the older one (replayed late)."""
    row = conn.execute(
        "SELECT epoch_result_id, content_hash, mtime FROM checkpoints "
        "WHERE host = %s AND path = %s",
        (event.host, event.path),
    ).fetchone()
    if _same_model(row, event):
        return False
    assert row is not None
    if row["mtime"] is not None and event.mtime < row["mtime"]:
        return True
    _epoch_file_gone(conn, row["epoch_result_id"], event.path)
    return False


def _epoch_file_gone(conn: Connection, epoch_result_id: int | None, path: str) -> None:
    if epoch_result_id is not None:
        conn.execute(
            "UPDATE epoch_results SET checkpoint_on_disk = false "
            "WHERE id = %s AND checkpoint_path = %s",
            (epoch_result_id, path),
        )


# -- what is already recorded ---------------------------------------------------------------


@dataclass
class KnownFiles:
    """Checkpoints and sample images already recorded under some folders of one host."""

    checkpoints: dict[str, tuple[int, datetime | None, bool]]  # path -> size, mtime, on disk
    samples: set[str]
    # samples in the prompt grid: a known sample that is not may be linked now (issue 12)
    linked_samples: set[str] = field(default_factory=set)


def known_files(conn: Connection, host: str, folders: list[str]) -> KnownFiles:
    """One query each for the checkpoints and the samples under ``folders`` on ``host``."""
    patterns = [_sqlbuild.like_prefix(folder.rstrip("/") + "/") for folder in folders]
    rows = conn.execute(
        "SELECT path, size_bytes, mtime, on_disk FROM checkpoints "
        "WHERE host = %s AND path LIKE ANY(%s)",
        (host, patterns),
    ).fetchall()
    samples = conn.execute(
        "SELECT DISTINCT unnest(er.sample_images) AS path FROM epoch_results er "
        "JOIN training_runs tr ON tr.id = er.training_run_id "
        "WHERE tr.host = %s AND tr.output_dir || '/' LIKE ANY(%s)",
        (host, patterns),
    ).fetchall()
    linked = conn.execute(
        "SELECT DISTINCT ptr.image_path AS path FROM prompt_test_results ptr "
        "JOIN epoch_results er ON er.id = ptr.epoch_result_id "
        "JOIN training_runs tr ON tr.id = er.training_run_id "
        "WHERE tr.host = %s AND tr.output_dir || '/' LIKE ANY(%s) AND ptr.generator = 'kohya'",
        (host, patterns),
    ).fetchall()
    return KnownFiles(
        {r["path"]: (r["size_bytes"], r["mtime"], r["on_disk"]) for r in rows},
        {r["path"] for r in samples},
        {r["path"] for r in linked},
    )


def recorded_files(conn: Connection, host: str, paths: list[str]) -> dict[str, dict[str, Any]]:
    """The checkpoints among ``paths`` on ``host`` recorded and on disk (by path: its run's
    name, epoch, size, time and hash), for `record` to leave alone what it recorded before,
    as `watch` does (`same_file`)."""
    rows = conn.execute(
        "SELECT c.path, tr.run_name, c.epoch_number, c.size_bytes, c.mtime, c.content_hash "
        "FROM checkpoints c "
        "JOIN training_runs tr ON tr.id = c.training_run_id "
        "WHERE c.host = %s AND c.path = ANY(%s) AND c.on_disk",
        (host, paths),
    ).fetchall()
    return {row["path"]: row for row in rows}


def same_file(row: dict[str, Any], event: CheckpointObserved) -> bool:
    """Whether a `recorded_files` row is the file ``event`` observed (size, time, hash)."""
    return bool(
        row["size_bytes"] == event.size_bytes and row["mtime"] == event.mtime
        and row["content_hash"] == event.content_hash
    )  # fmt: skip


# -- issue 17: one run per training in a folder used before -------------------------------

SAME_START_SLACK = timedelta(seconds=1)


def _detach(conn: Connection, run: dict[str, Any], runs: RunCache, key: str) -> None:
    """An earlier training's run gives up the folder's key (kept, suffixed, unique)."""
    conn.execute(
        "UPDATE training_runs SET capture_key = capture_key || '#' || id::text WHERE id = %s",
        (run["id"],),
    )
    runs.pop(key, None)


def _another_training(
    conn: Connection, run: dict[str, Any], event: CheckpointObserved, key: str
) -> bool:
    """Whether a file found by its folder's key (files with no training id) was written by
    another training than the run's: accelerate's hparams.yml of another start (a new
    ``logs/<project>/<time>``), or a step checkpoint the run has, rewritten later with other
    tensors (a training restarting in the folder; a copied folder's order does not count)."""
    if _created_now(run) or not key.startswith("dir:"):
        return False
    mine = (event.config or {}).get("hparams_path")
    theirs = (run.get("config") or {}).get("hparams_path")
    if mine and theirs and mine != theirs:
        return True
    if event.checkpoint_kind != "step" or event.step is None:
        return False
    older = conn.execute(
        """
        SELECT 1 FROM checkpoints
        WHERE training_run_id = %s AND host = %s AND path = %s AND mtime < %s
          AND content_hash IS DISTINCT FROM %s
        """,
        (run["id"], event.host, event.path, event.mtime, event.content_hash),
    ).fetchone()
    return older is not None


def _created_now(run: dict[str, Any]) -> bool:
    return bool(run.get(NEW_RUN))


def _older_run_gives_way(conn: Connection, event: RunStarted, runs: RunCache | None) -> None:
    """A ``start_run`` is a new training: a run holding its folder's key with everything
    in it (events, files) from before this start is an earlier training's, and gives up
    the key. One whose files came after the start is this training's, recorded by a
    watcher first: it is adopted."""
    if event.captured or event.previous_key or not event.run_key.startswith("dir:"):
        return
    row = conn.execute(
        """
        SELECT tr.id, tr.training_finished_at AS finished,
               GREATEST(tr.last_event_at, tr.training_started_at, tr.created_at,
                        (SELECT max(mtime) FROM checkpoints WHERE training_run_id = tr.id)
               ) AS latest
        FROM training_runs tr WHERE capture_key = %s
        """,
        (event.run_key,),
    ).fetchone()
    if row is None or row["latest"] is None:
        return
    ended_before = row["finished"] is not None and row["finished"] <= event.observed_at
    if not ended_before and row["latest"] >= event.observed_at - SAME_START_SLACK:
        return
    _detach(conn, row, runs if runs is not None else {}, event.run_key)


def _api_name(conn: Connection, run: dict[str, Any], event: RunStarted) -> dict[str, Any]:
    """The name given to ``start_run`` wins over the one a watcher made up (if free)."""
    if event.captured or not event.run_name or run.get("run_name") == event.run_name:
        return {}
    taken = conn.execute(
        "SELECT 1 FROM training_runs WHERE run_name = %s", (event.run_name,)
    ).fetchone()
    return {} if taken else {"run_name": event.run_name}
