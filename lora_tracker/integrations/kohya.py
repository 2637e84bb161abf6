"""Recording kohya sd-scripts training from inside the trainer, with kohya unchanged.

``hooks/kohya/lora_tracker_launch.py train_network.py <kohya args>`` imports the kohya
script as a module (so its main block does not run yet), wraps a few methods, then runs
that main block itself:

- ``NetworkTrainer.update_metadata(metadata, args)`` (called before the first step, with
  ``ss_session_id`` set): the run is recorded as in progress with its full configuration
  (command line, ``--config_file`` and ``--dataset_config`` TOMLs);
- ``LoRANetwork.save_weights(file, dtype, metadata)`` (networks/lora.py, lora_flux.py):
  the checkpoint, the moment the file is complete;
- ``epoch_logging(accelerator, logs, global_step, epoch)``: ``loss/epoch_average`` and
  other numbers per epoch (kohya calls it only with ``--log_with``);
- ``sample_images(...)`` (called after a save and the removal of an old checkpoint): the
  epoch's sample images, and checkpoints that were removed;
- ``train(args)``: completed at the end, or failed/cancelled with the exception, which is
  re-raised untouched.

Everything the hooks do is queued for a background thread; a hook never raises into
kohya. Only the main process records. A method missing in this kohya version is reported
and replaced by watching the output folder.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import logging
import os
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

from ..tracking import TrackedRun, config_to_dict, start_run

log = logging.getLogger(__name__)

TRAINER_METHODS = ("train", "update_metadata", "epoch_logging", "sample_images")
NETWORK_MODULES = ("networks.lora", "networks.lora_flux")
RUN_NAME_ENV = "LORA_TRACKER_RUN"
DISABLE_ENV = "LORA_TRACKER_DISABLE"


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

    def __init__(self, run_name: str | None = None, *, enabled: bool = True) -> None:
        self.run_name = run_name
        self.enabled = enabled
        self.run: TrackedRun | None = None
        self.output_dir: str | None = None
        self.output_name: str | None = None
        self.saved: list[str] = []
        self._saved_lock = threading.Lock()
        self._depth = threading.local()
        self.missing: list[str] = []
        self.fallback_watcher: Any = None

    # -- safety ------------------------------------------------------------------------------
    def safely(self, what: str, action: Callable[[], None]) -> None:
        """Run a hook body; a failure is logged, never raised into kohya."""
        if not self.enabled:
            return
        try:
            action()
        except Exception:
            log.exception("lora-tracker: %s failed (training goes on)", what)

    def enter(self, name: str) -> int:
        depth = getattr(self._depth, name, 0)
        setattr(self._depth, name, depth + 1)
        return int(depth)

    def leave(self, name: str) -> None:
        setattr(self._depth, name, getattr(self._depth, name, 1) - 1)

    # -- what the hooks do ---------------------------------------------------------------------
    def start(self, args: Any, metadata: dict[str, Any] | None) -> None:
        if self.run is not None:
            return
        from ..capture.metadata import run_fields_from_metadata
        from ..capture.trainer_config import run_fields_from_config

        arguments = config_to_dict(args)
        self.output_dir = os.path.abspath(str(arguments.get("output_dir") or "."))
        self.output_name = str(arguments.get("output_name") or "last")
        fields = run_fields_from_config(arguments)
        session = None
        if metadata:
            strings = _stringify(metadata)
            fields.update(run_fields_from_metadata(strings))
            session = strings.get("ss_session_id")
        run_key = f"session:{session}" if session else f"hook:{uuid.uuid4()}"
        config = {
            "args": arguments,
            "config_file": _read_toml(arguments.get("config_file")),
            "dataset_config": _read_toml(arguments.get("dataset_config")),
            "command_line": sys.argv,
        }
        fields.pop("output_name", None)
        self.run = start_run(
            self.run_name, {k: v for k, v in config.items() if v is not None},
            output_dir=self.output_dir, output_name=self.output_name, trainer="kohya",
            run_key=run_key, **fields,
        )  # fmt: skip
        if {"LoRANetwork.save_weights", "NetworkTrainer.sample_images"} & set(self.missing):
            self.start_fallback_watcher()

    def after_save(self, file: Any, metadata: Any) -> None:
        if self.run is None:
            return
        path = os.path.abspath(os.fspath(file))
        with self._saved_lock:
            if path not in self.saved:
                self.saved.append(path)
        # save_weights was handed the metadata it wrote (and added the sshs hashes to it):
        # no need to read the file, which kohya may delete a moment later
        self.run.log_saved(path, metadata if isinstance(metadata, dict) else None)

    def after_epoch_logging(self, logs: dict[str, Any], epoch: int) -> None:
        if self.run is None or not isinstance(logs, dict):
            return
        loss = logs.get("loss/epoch_average")
        metrics = {k: v for k, v in logs.items() if k != "loss/epoch_average"}
        self.run.log_epoch(int(epoch), loss=loss, metrics=metrics)

    def after_samples(self, epoch: int) -> None:
        if self.run is None:
            return
        run = self.run
        output_dir = Path(self.output_dir or ".")
        output_name = self.output_name or "last"
        saved = self._saved_so_far()  # now, on this thread: later saves are not our business
        run.submit(
            lambda: (
                self._removed_events(saved)
                + self._sample_events(run, output_dir, output_name, int(epoch))
            )
        )

    def _saved_so_far(self) -> list[str]:
        with self._saved_lock:
            return list(self.saved)

    def _removed_events(self, candidates: list[str]) -> list[Any]:
        """Removals among checkpoints saved before the hook that asks (kohya removes the
        old file right after saving the new one, before sampling)."""
        from ..capture.events import CheckpointRemoved

        with self._saved_lock:
            gone = [p for p in candidates if p in self.saved and not os.path.exists(p)]
            self.saved = [p for p in self.saved if p not in gone]
        return [CheckpointRemoved(path=p) for p in gone]

    @staticmethod
    def _sample_events(run: TrackedRun, output_dir: Path, name: str, epoch: int) -> list[Any]:
        from ..capture.events import EpochLogged, samples_by_epoch

        images = samples_by_epoch(output_dir, name).get(epoch)
        if not images:
            return []
        return [
            EpochLogged(
                run_key=run.run_key, run_name=run.run_name, epoch=epoch, sample_images=images
            )
        ]

    def finish(self, error: BaseException | None) -> None:
        if self.run is None:
            return
        saved = self._saved_so_far()
        self.run.submit(lambda: self._removed_events(saved))
        if error is None:
            self.run.finish("completed")
        elif isinstance(error, KeyboardInterrupt):
            self.run.finish("cancelled", error)
        elif isinstance(error, SystemExit) and error.code in (None, 0):
            self.run.finish("completed")
        else:
            self.run.finish("failed", error)
        self.run.flush(float(os.environ.get("LORA_TRACKER_FLUSH_TIMEOUT", "10")))
        if self.fallback_watcher is not None:
            self.fallback_watcher.stop()

    def start_fallback_watcher(self) -> None:
        """Record files by watching the output folder, for what the hooks cannot see."""
        if self.fallback_watcher is not None or self.output_dir is None:
            return
        from ..capture.delivery import Recorder
        from ..capture.watcher import Watcher

        os.makedirs(self.output_dir, exist_ok=True)
        run = self.run
        watcher = Watcher(
            [Path(self.output_dir)],
            Recorder(target=run.target) if run else Recorder(),
            run_key=run.run_key if run else None,
        )
        watcher.start()
        self.fallback_watcher = watcher
        log.warning("lora-tracker: watching %s for checkpoints instead", self.output_dir)


# -- installing the hooks -----------------------------------------------------------------------


def _after(
    tracker: KohyaTracker, name: str, hook: Callable[..., None]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: call ``hook(self, *args)`` after the original method returns (outermost
    call only, so a subclass calling super() does not record twice)."""

    def decorate(original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            depth = tracker.enter(name)
            try:
                result = original(self, *args, **kwargs)
            finally:
                tracker.leave(name)
            if depth == 0:
                tracker.safely(name, lambda: hook(self, *args, **kwargs))
            return result

        wrapper.__lora_tracker_wrapped__ = True  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _wrap_train(tracker: KohyaTracker, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def train(self: Any, args: Any, *rest: Any, **kwargs: Any) -> Any:
        depth = tracker.enter("train")
        if depth == 0 and "NetworkTrainer.update_metadata" in tracker.missing:
            tracker.safely("start", lambda: tracker.start(args, None))
        try:
            result = original(self, args, *rest, **kwargs)
        except BaseException as error:
            tracker.leave("train")
            if depth == 0:
                tracker.safely("finish", functools.partial(tracker.finish, error))
            raise
        tracker.leave("train")
        if depth == 0:
            tracker.safely("finish", lambda: tracker.finish(None))
        return result

    train.__lora_tracker_wrapped__ = True  # type: ignore[attr-defined]
    return train


def install(tracker: KohyaTracker, module: ModuleType) -> list[str]:
    """Wrap the trainer classes of ``module`` and kohya's LoRA network classes.

    Returns what could not be wrapped (the tracker then watches files instead).
    """
    trainers = _trainer_classes(module)
    missing: list[str] = []
    hooks: dict[str, Callable[..., None]] = {
        "update_metadata": lambda self, metadata, args, *a, **k: tracker.start(args, metadata),
        "epoch_logging": lambda self, accelerator, logs, global_step, epoch, *a, **k:
            tracker.after_epoch_logging(logs, epoch),
        "sample_images": lambda self, accelerator, args, epoch, *a, **k:
            tracker.after_samples(epoch),
    }  # fmt: skip
    if not trainers:
        missing.append("NetworkTrainer")
    for name in TRAINER_METHODS:
        defined = [cls for cls in trainers if name in cls.__dict__]
        if trainers and not defined:
            missing.append(f"NetworkTrainer.{name}")
        for cls in defined:
            original = cls.__dict__[name]
            if getattr(original, "__lora_tracker_wrapped__", False):
                continue
            if name == "train":
                setattr(cls, name, _wrap_train(tracker, original))
            else:
                setattr(cls, name, _after(tracker, name, hooks[name])(original))

    def on_saved(
        self: Any, file: Any, dtype: Any = None, metadata: Any = None, *a: Any, **k: Any
    ) -> None:
        tracker.after_save(file, metadata)

    saved_hook = _after(tracker, "save_weights", on_saved)
    networks = 0
    for module_name in NETWORK_MODULES:
        try:
            network_module = importlib.import_module(module_name)
        except Exception as exc:  # not every kohya version has lora_flux
            log.info("lora-tracker: %s not importable: %s", module_name, exc)
            continue
        network = getattr(network_module, "LoRANetwork", None)
        original = getattr(network, "__dict__", {}).get("save_weights")
        if original is None:
            continue
        if not getattr(original, "__lora_tracker_wrapped__", False):
            network.save_weights = saved_hook(original)  # type: ignore[union-attr]
        networks += 1
    if networks == 0:
        missing.append("LoRANetwork.save_weights")
    # without update_metadata the run starts from train(args); others need the watcher
    tracker.missing = missing
    for what in missing:
        log.warning("lora-tracker: this kohya version has no %s; recording files instead", what)
    return missing


def _trainer_classes(module: ModuleType) -> list[type]:
    base = None
    try:
        base = importlib.import_module("train_network").NetworkTrainer
    except Exception:
        base = getattr(module, "NetworkTrainer", None)
    found: list[type] = []
    for candidate in [base, *vars(module).values()]:
        if (
            isinstance(candidate, type)
            and base is not None
            and issubclass(candidate, base)
            and candidate not in found
        ):
            found.append(candidate)
    return found


def main_block(script: Path) -> CodeType | None:
    """The body of ``if __name__ == "__main__":`` of a script, compiled, or None."""
    tree = ast.parse(script.read_text(encoding="utf-8"), filename=str(script))
    for node in tree.body:
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name)
            and node.test.left.id == "__name__"
            and len(node.test.comparators) == 1
            and isinstance(node.test.comparators[0], ast.Constant)
            and node.test.comparators[0].value == "__main__"
        ):
            body = ast.Module(body=node.body, type_ignores=[])
            return compile(body, str(script), "exec")
    return None


USAGE = """usage: accelerate launch lora_tracker_launch.py TRAIN_SCRIPT [kohya arguments...]

Runs a kohya sd-scripts trainer (train_network.py, sdxl_train_network.py,
flux_train_network.py) unchanged, recording it with lora-tracker.
Environment: LORA_TRACKER_RUN=name (run name), LORA_TRACKER_DATABASE_URL, LORA_TRACKER_HOME,
LORA_TRACKER_DISABLE=1 (run without recording)."""


def main(argv: list[str]) -> int:
    """Entry point of hooks/kohya/lora_tracker_launch.py."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 2
    script = Path(argv[0])
    if not script.is_file():
        print(f"lora-tracker: no such training script: {script}", file=sys.stderr)
        return 2
    sys.argv = [str(script), *argv[1:]]
    folder = str(script.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    enabled = is_main_process() and os.environ.get(DISABLE_ENV, "") in ("", "0")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    tracker = KohyaTracker(os.environ.get(RUN_NAME_ENV) or None, enabled=enabled)
    code: CodeType | None = None
    module: ModuleType | None = None
    if enabled:
        try:
            module = importlib.import_module(script.stem)
            code = main_block(script)
            if code is None:
                log.warning("lora-tracker: %s has no main block; running it untracked", script.name)
            else:
                install(tracker, module)
        except Exception:
            log.exception("lora-tracker: could not hook %s; running it untracked", script.name)
            code = None
    if code is None or module is None:
        import runpy

        runpy.run_path(str(script), run_name="__main__")
        return 0
    exec(code, module.__dict__)
    return 0
