"""`watch`, `record` and `sync`: automatic capture from the command line."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from ..errors import InvalidInput
from . import app_context, collector_paused, imports_done
from .output import echo, plural

if TYPE_CHECKING:  # the capture stack is imported when a command runs, not for --help
    from ..capture.apply import Applied
    from ..capture.delivery import DeliveryOutcome, EventDelivery
    from ..capture.events import CheckpointObserved
    from ..capture.watcher import BackfillStats, Watcher


def register(cli: click.Group) -> None:
    cli.add_command(watch)
    cli.add_command(record)
    cli.add_command(sync)


class _EscapingFormatter(logging.Formatter):
    """Log lines quote file names and metadata: their control characters are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        from .output import escape_control

        message = record.getMessage()
        if message.startswith("\n"):  # a block (the launch check's banner): no time alone
            return escape_control(message)  # on a line of its own above it
        return escape_control(super().format(record))


def _log_to_stderr() -> None:
    """One line per recorded checkpoint, on stderr, unless -v already set up logging."""
    root = logging.getLogger("lora_tracker")
    if not logging.getLogger().handlers and not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_EscapingFormatter("%(asctime)s %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def _check_config(config_path: Path | None) -> None:
    if config_path is not None:
        from ..capture.trainer_config import load_toml

        load_toml(config_path)  # a clear error now, not one per checkpoint later


def _check_prompts(prompts_path: Path | None) -> None:
    """A prompts file kohya could not sample from: a usage error now, nothing watched."""
    if prompts_path is not None:
        from ..errors import InvalidInput
        from ..kohya_prompts import parse_prompts, read_prompts_file

        try:
            found = read_prompts_file(prompts_path)
        except InvalidInput as exc:
            raise click.BadParameter(str(exc), param_hint="'--prompts'") from None
        if not parse_prompts(found.content, found.format, name=str(prompts_path)):
            skipped = " (kohya skips blank lines and lines starting with #)"
            raise click.BadParameter(
                f"{prompts_path} holds no prompt{skipped if found.format == 'txt' else ''}",
                param_hint="'--prompts'",
            )


RUN_OPTION = click.option(
    "--run", "run_name", metavar="NAME",
    help="Record into this run (created if needed) instead of one named after the files.",
)  # fmt: skip
CONFIG_OPTION = click.option(
    "--config", "config_path", metavar="TOML",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="kohya config TOML filling what checkpoint metadata lacks.",
)  # fmt: skip


def _wait_for_folders(missing: list[Path], stop: threading.Event) -> bool:
    """Issue 17: a trainer (diffusers) creates its output folder itself, and the README says
    to start the watcher first: wait for the folders to appear. False when stopped first."""
    previous = {
        sig: signal.signal(sig, lambda signum, frame: stop.set())
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        names = ", ".join(str(folder) for folder in missing)
        echo(f"Waiting for {names} to be created (Ctrl-C to stop)", err=True)
        while any(not folder.exists() for folder in missing):
            if stop.wait(0.2):
                click.echo("Stopped.", err=True)
                return False
        for folder in missing:
            if not folder.is_dir():
                raise click.BadParameter(f"{folder} is not a folder", param_hint="FOLDERS")
        return True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command()
@click.argument(
    "folders", nargs=-1,
    type=click.Path(file_okay=False, path_type=Path),  # may not exist yet: waited for
)  # fmt: skip
@click.option("--once", is_flag=True, help="Import what is there now, then exit.")
@RUN_OPTION
@CONFIG_OPTION
@click.option(
    "--prompts", "prompts_path", metavar="FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The kohya --sample_prompts file (.txt/.toml/.json) the samples were rendered from:"
    " each sample becomes its epoch's result on the test prompt of its line.",
)  # fmt: skip
@click.option(
    "--poll", is_flag=True, help="Poll the folders (network drives) instead of OS events."
)
@click.option(
    "--images", "image_folders", metavar="DIR", multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Also link the test images rendered into DIR (A1111, Forge, SD.Next, ComfyUI "
         "outputs) to their epochs, as `lora-tracker images` does. Repeatable.",
)  # fmt: skip
@click.pass_context
def watch(
    ctx: click.Context,
    folders: tuple[Path, ...],
    once: bool,
    run_name: str | None,
    config_path: Path | None,
    prompts_path: Path | None,
    poll: bool,
    image_folders: tuple[Path, ...],
) -> None:
    """Record every checkpoint in FOLDERS (recursively), then each new one as it is saved.

    Point it at a trainer's output folder before or during training. Old checkpoints
    deleted by --save_last_n_epochs keep their rows, marked as no longer on disk. When
    the database is unreachable, events wait in the local spool and are replayed later.
    A file the database refuses is kept in the spool's rejected.jsonl, once; with --once
    the exit status is then 1, after the others are recorded. With --images, each image
    rendered into those folders is linked to its epoch too. Stop with Ctrl-C.
    """
    if not folders and not image_folders:
        raise click.UsageError("give a FOLDER to watch, or --images DIR")
    _check_config(config_path)
    _check_prompts(prompts_path)
    missing = [folder for folder in (*folders, *image_folders) if not folder.exists()]
    if missing and once:
        raise click.BadParameter(f"{missing[0]} does not exist", param_hint="FOLDERS")
    _log_to_stderr()
    from ..capture.nul_safe import make_nul_safe
    from ..db import Database

    database = Database(app_context(ctx).database_url, on_connect=make_nul_safe)
    database.connect_ahead()  # while the capture stack is imported
    from ..capture.delivery import EventDelivery
    from ..capture.watcher import BackfillStats, Watcher

    # the collector resumes, leaving what was imported out of the full passes that a
    # backfill's many objects set off (500 files: about 25 ms less)
    imports_done()
    stop = threading.Event()
    if missing and not _wait_for_folders(missing, stop):
        database.close()
        return
    delivery = EventDelivery(database=database)
    watcher = Watcher(
        list(folders), delivery, run_name=run_name, config_path=config_path,
        prompts_path=prompts_path.absolute() if prompts_path else None, poll=poll,
        image_folders=list(image_folders),
    )  # fmt: skip

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if once:
            stats = _import_once(watcher)
        else:
            with collector_paused():  # while the worker backfills
                watcher.start()
                while (found := watcher.wait_backfilled(0.5)) is None and not stop.is_set():
                    pass
            stats = found or BackfillStats()
        click.echo(_backfill_line(stats), err=True)
        if once:
            _fail_if_lost(stats, delivery)
            return
        watched = [str(f) for f in folders] + [f"{f} (images)" for f in image_folders]
        echo(f"Watching {', '.join(watched)} (Ctrl-C to stop)", err=True)
        while not stop.wait(0.5):
            if not watcher.alive:
                raise click.ClickException("the watch worker stopped unexpectedly")
        click.echo("Stopped.", err=True)
    finally:
        watcher.stop()
        delivery.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _import_once(watcher: Watcher) -> BackfillStats:
    """``watch --once``: the backfill, with a progress bar on a terminal."""
    if not sys.stderr.isatty():
        with collector_paused():
            return watcher.backfill(None, final=True)
    bar = click.progressbar(length=0, label="Importing", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.length = total
        bar.update(done - bar.pos)

    # files are recorded while they are read: their lines would cut the bar
    with _logs_held(), collector_paused():
        stats = watcher.backfill(progress, final=True)
        bar.render_finish()
    return stats


@contextlib.contextmanager
def _logs_held() -> Iterator[None]:
    """Log lines kept (up to 10,000 at a time) while a progress bar is drawn, then written
    in their order."""
    from logging.handlers import MemoryHandler

    swapped: list[tuple[logging.Logger, logging.Handler, MemoryHandler]] = []
    for logger in (logging.getLogger(), logging.getLogger("lora_tracker")):
        for handler in list(logger.handlers):
            held = MemoryHandler(10_000, flushLevel=logging.CRITICAL + 1, target=handler)
            logger.removeHandler(handler)
            logger.addHandler(held)
            swapped.append((logger, handler, held))
    try:
        yield
    finally:
        for logger, handler, held in swapped:
            logger.removeHandler(held)
            held.close()  # writes what it holds to the handler
            logger.addHandler(handler)


def _fail_if_lost(stats: BackfillStats, delivery: EventDelivery) -> None:
    """`watch --once`: exit status 1 when a file is neither recorded nor kept to be (refused
    by the database, or the spool not writable), after the others (as `record`); a file
    skipped in a folder (not complete yet, not a checkpoint) is not a failure."""
    if stats.rejected:
        raise _refused(stats.rejected, delivery)
    if stats.unsaved:
        raise click.ClickException(
            f"{plural(stats.unsaved, 'file')} not recorded: the database is unavailable and "
            "the spool cannot be written; run this again when either is back"
        )


def _refused(
    count: int, delivery: EventDelivery, what: str = "file", how: str = "refused by the database"
) -> click.ClickException:
    """The last line of a `watch --once`, `record` or `sync` that some files (events) were
    refused by (each refusal was logged with its reason and where it is kept, as it came)."""
    return click.ClickException(
        f"{plural(count, what)} {how}, not recorded (why: said above; "
        f"kept in the spool's {delivery.rejected_path.name})"
    )


def _backfill_line(stats: BackfillStats) -> str:
    return (
        f"{plural(stats.checkpoints, 'checkpoint')} found: {stats.recorded} recorded, "
        f"{stats.unchanged} already recorded, {stats.spooled} spooled, "
        f"{stats.skipped} skipped, {stats.removed} marked removed"
        + (f", {stats.rejected} refused" if stats.rejected else "")
        + (f", {stats.deleted} of deleted runs left out" if stats.deleted else "")
        + (f", {stats.unsaved} not saved yet (disk full)" if stats.unsaved else "")
        + (f"; {plural(stats.samples_linked, 'sample image')} linked"
           if stats.samples_linked else "")
        + (f"; {plural(stats.images, 'test image')}: {stats.images_linked} linked, "
           f"{stats.images_unmatched} unmatched, {stats.images_skipped} skipped"
           if stats.images else "")
    )  # fmt: skip


@click.command()
@click.argument(
    "paths", nargs=-1, required=True,
    type=click.Path(exists=True, path_type=Path),
)  # fmt: skip
@RUN_OPTION
@CONFIG_OPTION
@click.option(
    "--force", is_flag=True,
    help="Record files of a run deleted with `delete` or `cleanup` (capture leaves them out"
    " otherwise).",
)  # fmt: skip
@click.pass_context
def record(
    ctx: click.Context,
    paths: tuple[Path, ...],
    run_name: str | None,
    config_path: Path | None,
    force: bool,
) -> None:
    """Record checkpoint files (or every checkpoint in a folder) once, now.

    For trainers that run a command after each save, e.g. SimpleTuner's
    --post_checkpoint_script "lora-tracker record {local_checkpoint_path}". If any file is
    incomplete or not a valid checkpoint, nothing is recorded. A file recorded before, as
    it is now, is left where it is and said to be "already recorded". A file the database
    refuses is kept in the spool's rejected.jsonl and the others are recorded (exit 1).
    With --run, a file recorded in another run is recorded in the run named: its
    checkpoint goes there, and its epoch's row stays in the other run too. Met again
    unchanged (by record or watch), it stays in the run named.
    """
    from ..capture.delivery import EventDelivery
    from ..capture.files import classify_checkpoint
    from ..capture.watcher import scan

    imports_done()
    _log_to_stderr()  # as `watch`: the embedded server made, migrations, new runs, refusals
    _check_config(config_path)
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(p for p in scan([path]) if classify_checkpoint(p) is not None)
        else:
            files.append(path)
    if not files:
        raise InvalidInput("no checkpoint files found in " + ", ".join(map(str, paths)))
    events = _observed(files, run_name, config_path, force)
    delivery = EventDelivery(app_context(ctx).database_url)
    try:
        # a file recorded before as it is now is left alone, as `watch` leaves it (with
        # --config or --force the caller asks for it to be recorded again; with --run,
        # unless it is in that run)
        recorded = {} if config_path or force else _recorded_already(delivery, events, run_name)
        result = delivery.submit_many([e for e in events if e.path not in recorded])
    finally:
        delivery.close()
    _say_recorded(result.outcomes, [recorded[e.path] for e in events if e.path in recorded])
    spooled = result.count("spooled")
    if spooled:
        click.echo(
            f"database unavailable: {plural(spooled, 'event')} kept in the spool; "
            "`lora-tracker sync` replays them",
            err=True,
        )

    if result.count("unsaved"):
        raise click.ClickException(
            "database unavailable and the spool cannot be written: nothing was recorded; "
            "run this again when the database is back"
        )
    refused = result.count("rejected")
    if refused:
        raise _refused(refused, delivery)


def _recorded_already(
    delivery: EventDelivery, events: list[CheckpointObserved], run_name: str | None
) -> dict[str, tuple[CheckpointObserved, Applied]]:
    """The events whose file is recorded already as it is now (in run ``run_name``, when
    given), with where it is."""
    from ..capture.apply import Applied, same_file

    if not events:
        return {}
    rows = delivery.recorded_files(events[0].host, [e.path for e in events])
    return {
        e.path: (e, Applied("recorded", row["run_name"], row["epoch_number"]))
        for e in events
        if (row := rows.get(e.path)) is not None
        and same_file(row, e)
        and run_name in (None, row["run_name"])
    }


def _say_recorded(
    outcomes: list[tuple[Any, DeliveryOutcome, Applied | None]],
    already: list[tuple[CheckpointObserved, Applied]],
) -> None:
    """`record`'s lines: the files recorded now by run (a line each, or one for a run's many
    files, as `watch` says them), then those ``already`` recorded as they are."""
    from ..capture.events import CheckpointObserved
    from ..capture.watcher import recorded_lines, spooled_lines

    recorded: dict[str, list[tuple[CheckpointObserved, Applied]]] = {}
    spooled: dict[tuple[str, str], list[CheckpointObserved]] = {}
    for event, outcome, applied in outcomes:
        name = Path(event.path).name if event.kind == "checkpoint" else event.kind
        if isinstance(event, CheckpointObserved) and applied is not None and applied.run_name:
            recorded.setdefault(applied.run_name, []).append((event, applied))
        elif isinstance(event, CheckpointObserved) and outcome == "spooled":
            spooled.setdefault((event.output_dir, event.output_name), []).append(event)
        elif outcome == "deleted":
            echo(f"left out {name}: its run was deleted (--force records it again)")
        elif outcome != "rejected":  # (a refusal was said, with its reason, as it came)
            echo(f"{outcome} {name}")
    again: dict[str, list[tuple[CheckpointObserved, Applied]]] = {}
    for event, applied in already:
        again.setdefault(str(applied.run_name), []).append((event, applied))
    for line in recorded_lines(recorded) + recorded_lines(again, "already recorded"):
        echo(line)
    for line in spooled_lines(spooled):
        echo(line)


@click.command()
@click.pass_context
def sync(ctx: click.Context) -> None:
    """Replay events waiting in the local spool (the watcher also does this by itself).

    An event the database refuses is kept in the spool's rejected.jsonl, said with its
    reason, and the others are replayed (exit 1)."""
    from ..capture.delivery import EventDelivery
    from ..errors import DatabaseUnavailable

    imports_done()
    delivery = EventDelivery(app_context(ctx).database_url)
    try:
        if delivery.nothing_spooled():
            click.echo("Spool is empty: nothing to replay")
            return
        result = delivery.replay(wait=True)
    finally:
        delivery.close()
    click.echo(
        f"Replayed {plural(result.applied, 'event')}, {result.remaining} still waiting"
        + (f", {result.rejected} rejected" if result.rejected else "")
    )
    if result.elsewhere:
        verb = "is" if result.elsewhere == 1 else "are"
        echo(
            f"{plural(result.elsewhere, 'event')} waiting {verb} for another database than "
            "this one: `lora-tracker --database-url URL sync` with its URL replays them there",
            err=True,
        )
    if result.remaining > result.elsewhere:
        left = result.remaining - result.elsewhere
        raise DatabaseUnavailable(
            f"{plural(left, 'event')} still waiting: the database is unavailable"
        )
    if result.rejected:  # (as record and watch --once end when a file was refused)
        raise _refused(result.rejected, delivery, "event", "set aside")


def _observed(
    files: list[Path], run_name: str | None, config_path: Path | None, force: bool
) -> list[CheckpointObserved]:
    """Each file read as a checkpoint event; the first that cannot be is a one-line error."""
    from ..capture.events import observe_checkpoint
    from ..capture.safetensors_header import CheckpointError

    events = []
    for path in files:
        try:
            observed = observe_checkpoint(path, run_name=run_name, config_path=config_path)
            observed.force = force
            events.append(observed)
        except CheckpointError as exc:
            raise InvalidInput(f"not recorded: {exc}") from None
        except ValueError as exc:
            raise InvalidInput(f"not recorded: {exc}") from None
        except OSError as exc:
            raise InvalidInput(f"not recorded: cannot read {path}: {exc.strerror}") from None
    return events
