"""Capture events: what was seen on disk, complete enough to be recorded later.

An event carries everything read from the file at the moment it was observed, so it can
wait in the spool and be recorded after the file is gone. ``observe_checkpoint`` is where
a file on disk becomes an event; ``apply.py`` is where an event becomes rows.
"""

import contextlib
import contextvars
import fnmatch
import functools
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from ..secrets import mask_mapping, mask_secrets, mask_text
from ..settings import this_host as this_host
from ..vocab import EndStatus
from .checkpoint_metadata import epoch_fields_from_metadata, timestamp, trainer_of
from .files import (
    CheckpointKind,
    CheckpointName,
    SampleName,
    classify_checkpoint,
    classify_sample,
    output_dir_of,
)
from .safetensors_header import CorruptCheckpoint, SafetensorsHeader, read_safetensors_header
from .sample_prompts import SamplePromptsFile, configured_prompts_path, find_sample_prompts
from .trainer_config import GUI_CONFIG_GLOB, load_toml

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


# The events are plain dataclasses: capture makes them by the thousand and needs pydantic
# only to write one to the spool or read it back (`event_to_json`, `event_from_json`), or
# to check what a caller gave (`validated`); importing pydantic is 50 ms of a backfill's
# 350 (issue 14). Secrets are masked as an event is made (and so as one is read back).
@dataclass(kw_only=True, slots=True)
class _Event:
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    observed_at: datetime = field(default_factory=_now)
    host: str = field(default_factory=this_host)


@dataclass(kw_only=True, slots=True)
class CheckpointObserved(_Event):
    """A complete checkpoint file, with what its name, header and config say."""

    kind: Literal["checkpoint"] = "checkpoint"
    path: str
    output_dir: str
    output_name: str
    checkpoint_kind: CheckpointKind
    file_format: str
    epoch: int | None = None
    step: int | None = None
    size_bytes: int
    mtime: datetime
    content_hash: str | None = None
    trainer: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] | None = None
    config_path: str | None = None
    # every sample image of this run's output name, by epoch: samples are saved after
    # the checkpoint, and one that an earlier event missed comes with the next
    samples_by_epoch: dict[int, list[str]] = field(default_factory=dict)
    # the kohya prompts file the samples were rendered from, as read (issue 12)
    sample_prompts: SamplePromptsFile | None = None
    run_name: str | None = None  # --run: record into this run
    run_key: str | None = None  # a hook's own run (its capture key)
    force: bool = False  # record even a file of a run that was deleted (record --force)

    def __post_init__(self) -> None:  # no secret is spooled or stored
        self.config = _masked_config(self.config)
        self.metadata = mask_mapping(self.metadata)


@dataclass(kw_only=True, slots=True)
class CheckpointRemoved(_Event):
    """A checkpoint file that disappeared (kohya's --save_last_n_epochs, or by hand)."""

    kind: Literal["checkpoint_removed"] = "checkpoint_removed"
    path: str


@dataclass(kw_only=True, slots=True)
class SamplesObserved(_Event):
    """Sample images of one epoch of a run."""

    kind: Literal["samples"] = "samples"
    output_dir: str
    output_name: str
    epoch: int
    paths: list[str]
    # kohya's timestamp in the file name: the sample belongs to the run that was training
    # then (a reused output folder holds several runs' samples under one name)
    written_at: datetime | None = None
    sample_prompts: SamplePromptsFile | None = None  # the kohya prompts file, as read


@dataclass(kw_only=True, slots=True)
class _RunEvent(_Event):
    """An event about a run a hook or the Python API is tracking."""

    run_key: str  # capture key: how every event of this run finds it
    run_name: str | None = None


@dataclass(kw_only=True, slots=True)
class RunStarted(_RunEvent):
    """A run began: its configuration, before the first step."""

    kind: Literal["run_started"] = "run_started"
    fields: dict[str, Any] = field(default_factory=dict)  # training_runs columns
    config: dict[str, Any] | None = None
    default_name: str | None = None  # base of the run name when none is given
    # the key this run was started under before the trainer said who it is (the kohya hook
    # starts at launch, then learns the session id): that run takes ``run_key``
    previous_key: str | None = None
    # the fields were read from the trainer (not given by a person): a later event that
    # knows better may correct them (training_runs.captured_values)
    captured: bool = False

    def __post_init__(self) -> None:
        self.config = _masked_config(self.config)


@dataclass(kw_only=True, slots=True)
class EpochLogged(_RunEvent):
    """What a trainer reported at an epoch's end: loss, other metrics, samples."""

    kind: Literal["epoch_logged"] = "epoch_logged"
    epoch: int
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    sample_images: list[str] = field(default_factory=list)
    sample_prompts: SamplePromptsFile | None = None  # the kohya prompts file, as read


@dataclass(kw_only=True, slots=True)
class RunFinished(_RunEvent):
    """A run ended: completed, failed (with the error) or cancelled."""

    kind: Literal["run_finished"] = "run_finished"
    status: EndStatus
    failure_reason: str | None = None
    total_steps: int | None = None  # the step reached (a hook sees each step)

    def __post_init__(self) -> None:
        reason = self.failure_reason
        self.failure_reason = mask_text(reason) if reason else reason


@dataclass(kw_only=True, slots=True)
class ImageObserved(_Event):
    """A test image rendered in A1111 / Forge / SD.Next / ComfyUI (`watch --images`), with
    what its metadata says (``lora_tracker.images.model.ImageMetadata`` as a dict, secrets
    masked as it was read), so it can wait in the spool after the file is gone."""

    kind: Literal["image"] = "image"
    path: str
    sha256: str
    size_bytes: int
    metadata: dict[str, Any]


def _masked_config(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """A configuration with its secrets masked (see ``lora_tracker.secrets``)."""
    masked: dict[str, Any] | None = mask_secrets(config)
    return masked


AnyEvent = (
    CheckpointObserved
    | CheckpointRemoved
    | SamplesObserved
    | RunStarted
    | EpochLogged
    | RunFinished
    | ImageObserved
)
E = TypeVar("E", bound=_Event)


_ADAPTERS: dict[object, Any] = {}


def _adapter(of: object) -> Any:
    """pydantic's validator and serializer of ``of`` (an event class, or the union of
    them told apart by ``kind``), built when first needed."""
    found = _ADAPTERS.get(of)
    if found is None:
        from pydantic import Field, TypeAdapter

        whole: Any = Annotated[AnyEvent, Field(discriminator="kind")] if of is AnyEvent else of
        found = _ADAPTERS[of] = TypeAdapter(whole)
    return found


def validated(of: type[E], /, **fields: Any) -> E:
    """An event of class ``of`` from values a caller gave, checked and converted by its field
    types as pydantic does (``"3"`` for an epoch is 3; a wrong value raises pydantic's
    ValidationError, a ValueError)."""
    event: E = _adapter(of).validate_python(fields)
    return event


def event_to_json(event: AnyEvent) -> str:
    # (by its own class: pydantic 2.5 warns when a union serializes with ``exclude``)
    text: bytes = _adapter(type(event)).dump_json(event)
    return text.decode()


def event_to_dict(event: AnyEvent, *, exclude: set[str] | None = None) -> dict[str, Any]:
    """``event`` as JSON-ready values (its fields but ``exclude``)."""
    values: dict[str, Any] = _adapter(type(event)).dump_python(event, mode="json", exclude=exclude)
    return values


def event_from_json(line: str) -> AnyEvent:
    event: AnyEvent = _adapter(AnyEvent).validate_json(line)
    return event


def observe_checkpoint(
    path: Path,
    *,
    run_name: str | None = None,
    config_path: Path | None = None,
    run_key: str | None = None,
    epoch: int | None = None,
    prompts_path: Path | None = None,
    stat: os.stat_result | None = None,
) -> CheckpointObserved:
    """Read a checkpoint file into an event (``prompts_path``: the kohya prompts file its
    run's samples were rendered from, when the caller knows it; ``stat``: the file's, just
    taken by the caller).

    Raises IncompleteCheckpoint / CorruptCheckpoint for safetensors files that cannot be
    recorded, ValueError for a path that names no checkpoint, OSError when unreadable.
    """
    path = path.absolute()
    name = _classify(path)
    metadata: dict[str, str] = {}
    content_hash = None
    if name.file_format == "safetensors":
        header = _steady_header(path, keep=False, stat=stat)
        if header.tensor_count == 0:
            raise CorruptCheckpoint(f"{path.name}: holds no tensors")
        metadata = header.metadata
        content_hash = metadata.get("sshs_model_hash") or _diffusers_hash(path, name)
        content_hash = content_hash or f"header-sha256:{header.header_sha256}"
        size = header.file_size
        if stat is None or stat.st_size != size:  # not the file the caller saw
            stat = path.stat()
    else:
        stat = path.stat()
        size = stat.st_size
        if size == 0:
            raise CorruptCheckpoint(f"{path.name}: empty file")
    return checkpoint_event(
        path, size, stat.st_mtime, metadata, content_hash=content_hash, run_name=run_name,
        config_path=config_path, run_key=run_key, epoch=epoch, prompts_path=prompts_path,
        validate=epoch is not None,  # every other value is read here, typed as it should be
    )  # fmt: skip


def _diffusers_hash(path: Path, name: CheckpointName) -> str | None:
    """Issue 17: a diffusers file's header (``{"format": "pt"}``, names, shapes) is the same
    for every training into a folder: its tensors tell a rewrite apart."""
    if name.trainer != "diffusers":
        return None
    from .diffusers import tensor_digest

    digest = tensor_digest(path)
    return f"tensors-sha256:{digest}" if digest else None


def _classify(path: Path) -> CheckpointName:
    name = classify_checkpoint(path)
    if name is None:
        raise ValueError(f"{path.name} is not a LoRA checkpoint file")
    return name


def checkpoint_event(
    path: Path,
    size_bytes: int,
    mtime: float,
    metadata: dict[str, str],
    *,
    content_hash: str | None = None,
    run_name: str | None = None,
    config_path: Path | None = None,
    run_key: str | None = None,
    epoch: int | None = None,
    prompts_path: Path | None = None,
    validate: bool = True,
) -> CheckpointObserved:
    """The event for a checkpoint whose facts are known (read from the file, or handed to
    a hook by the trainer as it saved), checked by pydantic (`validated`); with
    ``validate=False``, every value was read here and is typed as its field
    (`observe_checkpoint`): the event is made as it is (secrets masked, as always)."""
    name = _classify(path)
    from_meta = epoch_fields_from_metadata(metadata)
    kind = name.kind
    if epoch is not None:  # the caller knows: a checkpoint saved at an epoch's end
        kind = "final" if kind == "final" else "epoch"
    else:
        epoch = name.epoch
        if epoch is None and name.kind in ("final", "step", "unknown"):
            epoch = from_meta.get("epoch")
            if epoch is not None and name.kind == "step" and name.trainer == "kohya":
                epoch += 1  # kohya writes its 0-based epoch in progress into step files
    step = name.step if name.step is not None else from_meta.get("global_step")
    output_dir = output_dir_of(path)
    folder = str(output_dir)  # (in the memo keys below: a str hashes and compares fast)
    config, used_config = _once_while_steady(
        ("config", folder, config_path, name.trainer),
        lambda: _trainer_config(output_dir, config_path, name.trainer),
    )  # each event masks a copy of its own
    extra = _adapter_files(path) if name.trainer in ("peft", "diffusers") else {}
    if name.trainer == "diffusers":  # issue 17: hparams.yml, the rank, the final's step
        from .diffusers import diffusers_facts, final_step

        extra.update(diffusers_facts(path, output_dir, mtime, kind))
        if kind == "final" and step is None:
            step = final_step(output_dir, path)
    if extra:
        config = {**(config or {}), **extra}
    output_name = _output_name(metadata, name.output_name)
    started = _started_at(metadata)
    others = (
        _once_while_steady(
            ("others", folder, output_name, started),
            lambda: _other_starts(output_dir, output_name, started),
        )
        if started
        else []
    )
    steps_per_epoch = _steps_per_epoch(metadata)
    samples = _once_while_steady(
        ("samples", folder, output_name, started, steps_per_epoch),
        lambda: samples_by_epoch(
            output_dir, output_name, since=started,
            until=min((t for t in others if t > started), default=None) if started else None,
            shared=bool(others), steps_per_epoch=steps_per_epoch,
        ),
    )  # fmt: skip
    fields = dict(
        path=str(path),
        output_dir=folder,
        output_name=output_name,
        checkpoint_kind=kind,
        file_format=name.file_format,
        epoch=epoch,
        step=step,
        size_bytes=size_bytes,
        mtime=datetime.fromtimestamp(mtime, tz=timezone.utc),
        content_hash=content_hash or metadata.get("sshs_model_hash"),
        trainer=trainer_of(metadata) or name.trainer,
        metadata=metadata,
        config=config,
        config_path=str(used_config) if used_config else None,
        samples_by_epoch=samples,
        sample_prompts=_prompts_for(output_dir, config, used_config, prompts_path)
        if samples or (kind == "step" and name.trainer == "kohya")
        else None,
        run_name=run_name,
        run_key=run_key,
    )
    if validate:
        return validated(CheckpointObserved, **fields)
    # (tests/test_capture.py: an event built so equals the validated one)
    return CheckpointObserved(**fields)


def _prompts_for(
    output_dir: Path,
    config: dict[str, Any] | None,
    config_path: Path | None,
    explicit: Path | None,
) -> SamplePromptsFile | None:
    """The kohya prompts file of a folder's samples (read once per version of the file;
    looked for once per folder during a backfill)."""
    return _once_while_steady(  # type: ignore[no-any-return]
        ("prompts", str(output_dir), configured_prompts_path(config), config_path, explicit),
        lambda: find_sample_prompts(output_dir, config, explicit=explicit, config_path=config_path),
    )


def _output_name(metadata: dict[str, str], from_name: str) -> str:
    value = metadata.get("ss_output_name") or metadata.get("name")
    if value and value not in ("None", "[name]"):
        return value
    return from_name


def _trainer_config(
    output_dir: Path, config_path: Path | None, trainer: str | None
) -> tuple[dict[str, Any] | None, Path | None]:
    if config_path is not None:
        return load_toml(config_path), config_path
    if trainer in (None, "kohya"):
        found = _gui_config_in(output_dir)
        if found is not None:
            try:
                return load_toml(found), found
            except Exception as exc:  # a broken GUI file must not stop recording
                log.warning("ignoring %s: %s", found, exc)
    return None, None


def _adapter_files(path: Path) -> dict[str, Any]:
    """adapter_config.json (PEFT) and trainer_state.json (transformers) beside the weights."""
    found: dict[str, Any] = {}
    for filename, key in (
        ("adapter_config.json", "adapter_config"),
        ("trainer_state.json", "trainer_state"),
    ):
        candidate = path.parent / filename
        try:
            with open(candidate, encoding="utf-8") as handle:
                found[key] = json.load(handle)
        except (OSError, ValueError):
            continue
    return found


def samples_by_epoch(
    output_dir: Path,
    output_name: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    shared: bool = False,
    steps_per_epoch: int | None = None,
) -> dict[int, list[str]]:
    """kohya sample images of one run in ``output_dir/sample``, by epoch.

    A reused output folder holds several trainings' samples under one name: then (other
    trainings' checkpoints are there, ``shared``, or two samples share an epoch and index)
    only those whose name's timestamp falls between ``since`` (the run's
    ``ss_training_started_at``) and ``until`` (the next run's start) count. kohya writes the
    stamp in the trainer's local time, read here in this machine's: a folder only one
    training wrote is never filtered, so a trainer in another time zone (a container) loses
    nothing there. Step samples (``{name}_{step:06d}_``) count for the epoch in progress
    when ``steps_per_epoch`` is known.
    """
    candidates: list[tuple[int, SampleName, str]] = []
    names: set[tuple[int | None, int | None, int]] = set()
    for entry_path, sample in _named(_samples_in(output_dir / "sample"), output_name):
        key = (sample.epoch, sample.step, sample.index)
        shared = shared or key in names
        names.add(key)
        epoch = sample.epoch
        if epoch is None and sample.step is not None and steps_per_epoch:
            epoch = max(1, -(-sample.step // steps_per_epoch))
        if epoch is not None:
            candidates.append((epoch, sample, os.path.abspath(entry_path)))
    low = since.replace(microsecond=0) if since and shared else None  # stamps: whole seconds
    high = until.replace(microsecond=0) if until and shared else None
    found: dict[int, list[str]] = {}
    for epoch, sample, path in candidates:
        stamp = sample.written_at
        if stamp is not None and (
            (low is not None and stamp < low) or (high is not None and stamp >= high)
        ):
            continue
        found.setdefault(epoch, []).append(path)
    return {epoch: sorted(paths) for epoch, paths in sorted(found.items())}


def _started_at(metadata: dict[str, str]) -> datetime | None:
    return timestamp(metadata.get("ss_training_started_at"))  # (1e20: none, no overflow)


def _steps_per_epoch(metadata: dict[str, str]) -> int | None:
    """kohya's optimisation steps per epoch: batches per epoch / gradient accumulation."""
    try:
        batches = int(metadata.get("ss_num_batches_per_epoch") or 0)
        accumulation = int(metadata.get("ss_gradient_accumulation_steps") or 1)
    except ValueError:
        return None
    return -(-batches // max(accumulation, 1)) if batches > 0 else None


_START_CACHE: dict[tuple[str, int, float], datetime | None] = {}

# What a folder holds, classified once for as long as the folder does not change (its
# mtime moves when a file is added, removed or renamed): every checkpoint event looks at
# its folder's other checkpoints and samples, and a backfill makes hundreds of them.
_LISTINGS: dict[tuple[str, str], tuple[int, list[tuple[str, Any]]]] = {}


def _listing(folder: Path, kind: str, classify: Any) -> list[tuple[str, Any]]:
    try:
        stamp = os.stat(folder).st_mtime_ns
    except OSError:
        return []
    cached = _LISTINGS.get((str(folder), kind))
    # mtimes tick coarsely: a listing is trusted once its folder has been still a while,
    # or while a backfill looks at folders as they are (steady_folders)
    settled = _STEADY.get() is not None or time.time_ns() - stamp > 2_000_000_000
    if cached is not None and cached[0] == stamp and settled:
        return cached[1]
    try:
        entries = [entry.path for entry in os.scandir(folder)]
    except OSError:
        return []
    found = [(path, named) for path in entries if (named := classify(path)) is not None]
    if len(_LISTINGS) > 256:
        _LISTINGS.clear()
    _LISTINGS[(str(folder), kind)] = (stamp, found)
    return found


_STEADY: contextvars.ContextVar[dict[Any, Any] | None] = contextvars.ContextVar(
    "steady", default=None
)
_STATS = "stats"  # (the memo's entry of the stats a backfill took)


@contextlib.contextmanager
def steady_folders(stats: dict[str, os.stat_result | None] | None = None) -> Iterator[None]:
    """While a backfill observes folders as they are now, each folder is listed once and
    what a run's checkpoints share (its samples, the other trainings beside it) is worked
    out once per run (a file added meanwhile is seen by the live watcher, whose events
    come after). ``stats``: the files' stats the backfill took (by path), not taken again."""
    token = _STEADY.set({_STATS: stats or {}})
    try:
        yield
    finally:
        _STEADY.reset(token)


def _once_while_steady(key: Any, compute: Any) -> Any:
    memo = _STEADY.get()
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def _gui_config_in(folder: Path) -> Path | None:
    """The newest kohya_ss GUI config (``config_lora-*.toml``) beside the outputs, from
    the folder's listing (shared with the checkpoints and samples)."""
    found = sorted(path for path, _ in _listing(folder, "gui", _gui_config_named))
    return Path(found[-1]) if found else None


@functools.lru_cache(maxsize=4096)
def _gui_config_named(path: str) -> bool | None:
    return fnmatch.fnmatch(os.path.basename(path), GUI_CONFIG_GLOB) or None


@functools.lru_cache(maxsize=65536)
def _sample_named(path: str) -> SampleName | None:
    return classify_sample(Path(path))  # a function of the name alone


@functools.lru_cache(maxsize=65536)
def _checkpoint_named(path: str) -> CheckpointName | None:
    return classify_checkpoint(Path(path))


_GROUPS: dict[int, tuple[list[Any], dict[str, list[Any]]]] = {}


def _named(entries: list[tuple[str, Any]], output_name: str) -> list[tuple[str, Any]]:
    """The entries of a folder's listing with this output name: the listing is grouped
    once (a folder of many trainings is looked at once for each of them)."""
    groups = _GROUPS.get(id(entries))
    if groups is None or groups[0] is not entries:  # (the listing is kept with its groups)
        by_name: dict[str, list[Any]] = {}
        for entry in entries:
            by_name.setdefault(entry[1].output_name, []).append(entry)
        if len(_GROUPS) > 256:
            _GROUPS.clear()
        groups = _GROUPS[id(entries)] = (entries, by_name)
    return groups[1].get(output_name, [])


def _samples_in(folder: Path) -> list[tuple[str, SampleName]]:
    return _listing(folder, "samples", _sample_named)


def _checkpoints_in(folder: Path) -> list[tuple[str, CheckpointName]]:
    return _listing(folder, "checkpoints", _checkpoint_named)


def _steady_header(
    path: Path, *, keep: bool, stat: os.stat_result | None = None
) -> SafetensorsHeader:
    """A file's header. During a backfill (steady_folders) a header read for
    ``_other_starts`` is kept (``keep``) until the file's own event takes it, so each file
    is read once; otherwise (and for a file changed since) it is read now."""
    memo = _STEADY.get()
    if memo is None:
        return read_safetensors_header(path)
    if stat is None:
        try:
            stat = os.stat(path)
        except OSError:
            return read_safetensors_header(path)
    key = ("header", str(path), stat.st_size, stat.st_mtime_ns)
    header: SafetensorsHeader | None = memo.pop(key, None)
    if header is None:
        header = read_safetensors_header(path)
    if keep and len(memo) < 4096:  # bounded: a run of thousands of files is read twice
        memo[key] = header
    return header


def _other_starts(
    output_dir: Path, output_name: str, started: datetime, skip: Path | None = None
) -> list[datetime]:
    """The starts of other trainings that wrote checkpoints of this name into the folder
    (from their headers; the next one ends this run's sample window). The run's own files
    share its start and so never count."""
    found: list[datetime] = []
    taken = (_STEADY.get() or {}).get(_STATS, {})
    for entry_path, name in _named(_checkpoints_in(output_dir), output_name):
        if name.file_format != "safetensors" or (skip is not None and entry_path == str(skip)):
            continue
        try:
            stat = taken.get(entry_path) or os.stat(entry_path)
            key = (entry_path, stat.st_size, stat.st_mtime)
            if key not in _START_CACHE:
                if len(_START_CACHE) > 4096:
                    _START_CACHE.clear()
                header = _steady_header(Path(entry_path), keep=True, stat=stat)
                _START_CACHE[key] = _started_at(header.metadata)
            other = _START_CACHE[key]
        except Exception:  # a file being written or broken: not a witness
            continue
        if other is not None and other.replace(microsecond=0) != started.replace(microsecond=0):
            found.append(other)
    return found


def observe_sample(
    path: Path, *, prompts_path: Path | None = None, config_path: Path | None = None
) -> SamplesObserved | None:
    """An event for one sample image, or None if it names no epoch."""
    sample = classify_sample(path)
    if sample is None or sample.epoch is None:
        return None
    output_dir = Path(output_dir_of(path.absolute()))
    try:
        config, used_config = _trainer_config(output_dir, config_path, "kohya")
    except Exception as exc:  # a config that cannot be read: the prompts file unknown
        log.warning("ignoring %s: %s", config_path, exc)
        config, used_config = None, None
    return SamplesObserved(
        output_dir=str(output_dir),
        output_name=sample.output_name,
        epoch=sample.epoch,
        paths=[str(path.absolute())],
        written_at=sample.written_at,
        sample_prompts=_prompts_for(output_dir, config, used_config, prompts_path),
    )
