"""The per-run tracker of the kohya hook: what each wrapped kohya call records (see
``lora_tracker.integrations.kohya`` for the calls), queued for a background thread, and the
fallback watcher for what the hooks cannot see."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..secrets import mask_secrets
from ..settings import resolve_target
from ..tracking import (
    TrackedRun,
    config_to_dict,
    dispatcher,
    end_status,
    flush_timeout,
    start_run,
)

if TYPE_CHECKING:
    from ..capture.sample_prompts import SamplePromptsFile

log = logging.getLogger(__name__)


def is_main_process() -> bool:
    """accelerate gives each process RANK (global) and LOCAL_RANK; rank 0 records."""
    for variable in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(variable)
        if value is not None:
            return value.strip() in ("", "0")
    return True


def _stringify(metadata: dict[str, Any]) -> dict[str, str]:
    """kohya's metadata values before it converts them: str() them as kohya later does."""
    found = {}
    for key, value in metadata.items():
        if isinstance(value, str):
            found[key] = value
        elif isinstance(value, (dict, list)):
            found[key] = json.dumps(value)
        else:
            found[key] = str(value)
    return found


def _read_toml(path: Any) -> Any:
    """A TOML file, nested as written (None if unreadable): for the stored configuration."""
    if not path:
        return None
    if isinstance(path, (list, tuple)):
        return [_read_toml(p) for p in path]
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    file = Path(str(path))
    if not file.suffix:
        file = file.with_suffix(".toml")  # kohya adds .toml to --config_file itself
    try:
        with open(file, "rb") as handle:
            return tomllib.load(handle)
    except (OSError, ValueError) as exc:
        log.warning("lora-tracker: could not read %s: %s", file, exc)
        return None


class KohyaTracker:
    """State of one kohya training process as seen by the hooks."""

    def __init__(
        self, run_name: str | None = None, *, enabled: bool = True, guard: str = "warn"
    ) -> None:
        self.run_name = run_name
        self.enabled = enabled
        self.guard = guard  # strict / warn / off: the launch check (lora_tracker.guard)
        self._guard_settings: dict[str, Any] | None = None  # the settings checked; None: not yet
        self._guard_done = False  # found a repeat, or could not ask: no second check
        self.run: TrackedRun | None = None
        self.args: Any = None
        self.output_dir: str | None = None
        self.output_name: str | None = None
        self.saved: list[str] = []
        self._saved_lock = threading.Lock()
        self._depth = threading.local()
        self.missing: list[str] = []
        self.fallback_watcher: Any = None
        self.began_at = 0.0  # time.time() when train() was entered
        self.step = 0  # the global step reached
        self.epoch_ends: list[tuple[int, int]] = []  # (epoch, global step at its end)
        self._removal_due = False  # a checkpoint was saved: kohya may remove an old one next
        self._samples_before: set[str] = set()  # sample files already there at launch
        self._samples_seen: set[str] = set()
        self._failures: dict[str, int] = {}
        self._config: dict[str, Any] = {}

    # -- safety ------------------------------------------------------------------------------
    def safely(self, what: str, action: Callable[[], Any]) -> None:
        """Run a hook body; a failure is logged (once per kind, then counted), never raised
        into kohya."""
        if not self.enabled:
            return
        try:
            action()
        except Exception:
            self._failed(what)

    def _failed(self, what: str) -> None:
        count = self._failures.get(what, 0)
        self._failures[what] = count + 1
        if count == 0:
            log.exception("lora-tracker: %s failed (training goes on; said once)", what)

    def _guarded(self, what: str, job: Callable[[], list[Any]]) -> Callable[[], list[Any]]:
        """A background job that, like a hook, reports a failure once per kind."""

        def run() -> list[Any]:
            try:
                return job()
            except Exception:
                self._failed(what)
                return []

        return run

    def enter(self, name: str) -> int:
        depth = getattr(self._depth, name, 0)
        setattr(self._depth, name, depth + 1)
        return int(depth)

    def leave(self, name: str) -> None:
        setattr(self._depth, name, getattr(self._depth, name, 1) - 1)

    # -- what the hooks do ---------------------------------------------------------------------
    def begin(self, args: Any) -> None:
        """``train(args)`` was entered: the run exists from now on, with the parsed arguments
        and TOML files, so a failure while loading the model or caching latents (before
        kohya's ``update_metadata``) is recorded too."""
        if self.run is not None:
            return
        from ..capture.trainer_config import run_fields_from_config

        self.began_at = time.time()
        self.args = args
        arguments = config_to_dict(args)
        self.output_dir = os.path.abspath(str(arguments.get("output_dir") or "."))
        self.output_name = str(arguments.get("output_name") or "last")
        self._samples_before = set(self._sample_files())
        self._config = {
            "args": arguments,
            "config_file": _read_toml(arguments.get("config_file")),
            "dataset_config": _read_toml(arguments.get("dataset_config")),
            "command_line": sys.argv,
        }
        # the command line and the TOMLs may hold a token: masked before stored
        self._config = mask_secrets({k: v for k, v in self._config.items() if v is not None})
        self._check_sample_prompts(arguments)
        fields = run_fields_from_config(arguments)
        check = self._start_guard(fields)  # runs while the run is being set up
        self.run = start_run(
            self.run_name, self._config, output_dir=self.output_dir,
            output_name=self.output_name, trainer="kohya", run_key=f"hook:{uuid.uuid4()}",
            guard="off",  # checked here, on what kohya's arguments say
        )  # fmt: skip
        # what the command line says, until kohya's metadata and checkpoints say better
        self._submit_fields(fields)
        if {"LoRANetwork.save_weights", "NetworkTrainer.sample_images"} & set(self.missing):
            self.start_fallback_watcher()
        self._end_guard(check)

    def _check_sample_prompts(self, arguments: dict[str, Any]) -> None:
        """A --sample_prompts file kohya will not sample from, said once now rather than
        found out after the first epoch (kohya fails there on a .yaml)."""
        path = arguments.get("sample_prompts")
        sampling = ("sample_every_n_epochs", "sample_every_n_steps", "sample_at_first")
        if not isinstance(path, str) or not path or not any(arguments.get(k) for k in sampling):
            return
        from ..kohya_prompts import launch_problem

        problem = launch_problem(path)
        if problem is not None:
            log.warning("lora-tracker: %s", problem)

    # -- the launch check ----------------------------------------------------------------------
    def _start_guard(self, fields: dict[str, Any]) -> Any:
        """Ask whether these settings failed before (None when off, already answered, or
        the same settings were asked already)."""
        if self.guard == "off" or self._guard_done:
            return None
        from ..guard import compared_settings, start_check
        from ..settings import resolve_target

        settings = compared_settings(fields)
        if not settings or settings == self._guard_settings:
            return None
        self._guard_settings = settings
        return start_check(resolve_target(None), lambda: settings)

    def _end_guard(self, check: Any) -> None:
        """Show what the check found (at most TIME_LIMIT_S after it started); in strict mode
        a repeated failure cancels the run and stops kohya with exit status 3."""
        if check is None:
            return
        from ..guard import EXIT_REPEATS_FAILURE, cancel_reason, report

        result = check.result()
        report(result, self.guard, stops=True, emit=_to_console)
        self._guard_done = bool(result.skipped or result.failed or result.succeeded)
        run = self.run
        if self.guard != "strict" or not result.repeats_failure or run is None:
            return
        run.finish("cancelled", cancel_reason(result))
        run.flush(flush_timeout())
        raise SystemExit(EXIT_REPEATS_FAILURE)

    def start(self, args: Any, metadata: dict[str, Any] | None) -> None:
        """``update_metadata(metadata, args)``: kohya's own account of the run (session id,
        base model, resolved settings). The run started at launch takes kohya's session key,
        so a watcher on the same folder finds it."""
        if self.run is None:
            self.begin(args)
        run = self.run
        if run is None or not metadata or not run.enabled:
            return
        from ..capture.checkpoint_metadata import run_fields_from_metadata
        from ..capture.trainer_config import run_fields_from_config

        strings = _stringify(metadata)
        fields = run_fields_from_config(config_to_dict(args))
        found = run_fields_from_metadata(strings)
        if not {"ss_dataset_dirs", "ss_datasets"} & set(strings):
            # kohya adds the dataset keys after this call; ss_num_train_images counts
            # repeats: the image count comes with the first checkpoint
            found.pop("num_images", None)
        fields.update(found)
        session = strings.get("ss_session_id")
        previous = run.run_key
        key = f"session:{session}" if session else previous
        run.run_key = key  # every later event finds the run by kohya's session
        if self.fallback_watcher is not None:
            self.fallback_watcher.run_key = key
        self._submit_fields(fields, previous if key != previous else None)
        # kohya's own account may name the settings otherwise than its command line did
        # (the optimizer's class, the base model's file name): the record keeps these
        self._end_guard(self._start_guard(fields))

    def _submit_fields(self, fields: dict[str, Any], previous_key: str | None = None) -> None:
        """The run's settings as capture read them (a later, better-informed event may
        correct them; a value a person typed stays)."""
        run = self.run
        if run is None or not run.enabled:
            return
        from ..capture.events import RunStarted, this_host
        from ..run_fields import valid_run_fields

        fields = dict(fields)
        fields.pop("output_name", None)
        fields.update(
            trainer="kohya", host=this_host(), output_dir=self.output_dir,
            output_name=self.output_name,
        )  # fmt: skip
        valid = valid_run_fields(fields, mode="json")
        event = RunStarted(
            run_key=run.run_key, run_name=run.run_name, fields=valid,
            config=self._config or None, default_name=self.output_name,
            previous_key=previous_key, captured=True,
        )  # fmt: skip
        run.submit(lambda: [event])

    def after_save(self, file: Any, metadata: Any) -> None:
        if self.run is None:
            return
        path = os.path.abspath(os.fspath(file))
        with self._saved_lock:
            if path not in self.saved:
                self.saved.append(path)
        self._removal_due = True
        # save_weights was handed the metadata it wrote (and added the sshs hashes to it):
        # no need to read the file, which kohya may delete a moment later. One stat() here.
        run = self.run
        at = datetime.now(timezone.utc)
        stat = os.stat(path)
        written = metadata if isinstance(metadata, dict) else {}
        meta = {str(k): v if isinstance(v, str) else str(v) for k, v in written.items()}

        def job() -> list[Any]:
            from ..capture.events import checkpoint_event

            event = checkpoint_event(
                Path(path), stat.st_size, stat.st_mtime, meta, run_key=run.run_key
            )
            event.run_name, event.observed_at = run.run_name, at
            event.samples_by_epoch = {}  # the hook reports the samples its process wrote
            event.sample_prompts = self._sample_prompts() or event.sample_prompts
            return [event]

        run.submit(self._guarded("recording a checkpoint", job))

    def after_epoch_logging(self, logs: dict[str, Any], epoch: int) -> None:
        if self.run is None or not isinstance(logs, dict):
            return
        loss = logs.get("loss/epoch_average")
        metrics = {k: v for k, v in logs.items() if k != "loss/epoch_average"}
        self.run.log_epoch(int(epoch), loss=loss, metrics=metrics)

    def after_samples(self, epoch: Any, global_step: Any) -> None:
        """``sample_images`` is called after every optimisation step (epoch None) and once
        per epoch end (after the epoch's save and removal). The per-step path is cheap: it
        notes the step and looks at the disk only when kohya may have sampled or removed."""
        if self.run is None:
            return
        step = global_step if isinstance(global_step, int) else None
        if step is not None and step > self.step:
            self.step = step
        removals = self._removal_due
        if epoch is None:
            if not removals and not self._samples_at_step(step):
                return
        elif (
            isinstance(epoch, int) and epoch > 0 and step is not None
            and (not self.epoch_ends or epoch > self.epoch_ends[-1][0])
        ):  # fmt: skip
            self.epoch_ends.append((epoch, step))
        self._removal_due = False
        self._submit_scan("sample lookup", removals)

    def _samples_at_step(self, step: int | None) -> bool:
        """kohya's own rule: step samples only with --sample_every_n_steps and without
        --sample_every_n_epochs."""
        every = getattr(self.args, "sample_every_n_steps", None)
        if not step or not isinstance(every, int) or every <= 0:
            return False
        return getattr(self.args, "sample_every_n_epochs", None) is None and step % every == 0

    def _submit_scan(self, what: str, removals: bool) -> None:
        run = self.run
        if run is None:
            return
        saved = self._saved_so_far() if removals else []  # now: later saves are not ours
        ends = list(self.epoch_ends)
        step = self.step

        def job() -> list[Any]:
            events = self._removed_events(saved)  # never lost to a failing sample lookup
            try:
                events += self._sample_events(run, ends, step)
            except Exception:
                self._failed(what)
            return events

        run.submit(self._guarded("removal check", job))

    def _saved_so_far(self) -> list[str]:
        with self._saved_lock:
            return list(self.saved)

    def _removed_events(self, candidates: list[str]) -> list[Any]:
        """Removals among checkpoints saved before the hook that asks (kohya removes the
        old file right after saving the new one)."""
        from ..capture.events import CheckpointRemoved

        with self._saved_lock:
            gone = [p for p in candidates if p in self.saved and not os.path.exists(p)]
            self.saved = [p for p in self.saved if p not in gone]
        return [CheckpointRemoved(path=p) for p in gone]

    def _sample_files(self) -> list[str]:
        try:
            return [e.path for e in os.scandir(Path(self.output_dir or ".") / "sample")]
        except OSError:
            return []

    def _sample_events(
        self, run: TrackedRun, epoch_ends: list[tuple[int, int]], upto: int
    ) -> list[Any]:
        """This process's new sample images, by epoch: files that were not there at launch,
        written (kohya's timestamp) since train() began. Step samples count for the epoch
        in progress at their step (those past ``upto``, the step when this lookup was asked
        for, wait for a later lookup that knows their epoch)."""
        from ..capture.events import EpochLogged
        from ..capture.files import classify_sample

        since = datetime.fromtimestamp(int(self.began_at), tz=timezone.utc)
        found: dict[int, list[str]] = {}
        for path in self._sample_files():
            if path in self._samples_before or path in self._samples_seen:
                continue
            sample = classify_sample(Path(path))
            if sample is None or sample.output_name != self.output_name:
                continue
            if sample.written_at is not None and sample.written_at < since:
                continue
            epoch = sample.epoch
            if epoch is None and sample.step is not None:
                if sample.step > upto:
                    continue
                epoch = _epoch_at(epoch_ends, sample.step)
            if epoch is None:
                continue
            self._samples_seen.add(path)
            found.setdefault(epoch, []).append(os.path.abspath(path))
        prompts = self._sample_prompts() if found else None
        return [
            EpochLogged(
                run_key=run.run_key,
                run_name=run.run_name,
                epoch=e,
                sample_images=sorted(images),
                sample_prompts=prompts,
            )
            for e, images in sorted(found.items())
        ]

    def _sample_prompts(self) -> SamplePromptsFile | None:
        """kohya's --sample_prompts file as it is now (kohya reads it again at every
        sampling: this lookup follows the sampling), or None."""
        path = getattr(self.args, "sample_prompts", None)
        if not isinstance(path, str) or not path:
            return None
        from ..capture.sample_prompts import read_sample_prompts

        return read_sample_prompts(path, "--sample_prompts")

    def finish(self, error: BaseException | None) -> None:
        run = self.run
        if run is None:
            return
        self._submit_scan("final sample lookup", True)
        status = end_status(error)
        if run.enabled and not run.finished:
            from ..capture.events import RunFinished
            from ..tracking import _describe

            run.finished = True
            reason = _describe(error) if status != "completed" and error is not None else None
            steps = self.step or None
            run.submit(
                lambda: [
                    RunFinished(
                        run_key=run.run_key, run_name=run.run_name, status=status,
                        failure_reason=reason, total_steps=steps,
                    )
                ]
            )  # fmt: skip
        repeated = {what: n - 1 for what, n in self._failures.items() if n > 1}
        for what, n in repeated.items():
            log.warning("lora-tracker: %s failed %d more times", what, n)
        run.flush(flush_timeout())
        if self.fallback_watcher is not None:
            self.fallback_watcher.stop()

    def start_fallback_watcher(self) -> None:
        """Record files by watching the output folder, for what the hooks cannot see. The
        watcher delivers through the process's one delivery (the API thread's), which the
        dispatcher closes at exit."""
        if self.fallback_watcher is not None or self.output_dir is None:
            return
        from ..capture.watcher import Watcher

        os.makedirs(self.output_dir, exist_ok=True)
        run = self.run
        target = run.target if run else resolve_target()
        watcher = Watcher(
            [Path(self.output_dir)],
            dispatcher().delivery(target),
            run_key=run.run_key if run else None,
        )
        watcher.start()
        self.fallback_watcher = watcher
        log.warning("lora-tracker: watching %s for checkpoints instead", self.output_dir)


def _to_console(text: str) -> None:
    """The launch guard's banner, as is, on kohya's console (stderr)."""
    print(text, file=sys.stderr, flush=True)


def _epoch_at(epoch_ends: list[tuple[int, int]], step: int) -> int:
    """The 1-based epoch in progress at ``step``: the first epoch that ended at or after
    it, else the one after the last that ended (epoch 1 before any)."""
    for epoch, end in epoch_ends:
        if step <= end:
            return epoch
    return epoch_ends[-1][0] + 1 if epoch_ends else 1
