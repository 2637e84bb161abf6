"""Recording kohya sd-scripts training from inside the trainer, with kohya unchanged.

``hooks/kohya/lora_tracker_launch.py train_network.py <kohya args>`` imports the kohya
script as a module (so its main block does not run yet), wraps a few methods, then runs
that main block itself. What each kohya call records (sd-scripts main, 2026-02):

- ``NetworkTrainer.train(args)`` entered: the run, in progress, with its configuration
  (parsed arguments, ``--config_file`` and ``--dataset_config`` TOMLs), so a failure while
  loading the model or caching latents is recorded; at its end completed, or failed /
  cancelled with the exception (shown as kohya would show it), and the step reached;
- ``update_metadata(metadata, args)`` (before the first step, before kohya adds the
  dataset keys): kohya's own account (session id, base model, resolved settings); the run
  takes the session's key, so a watcher on the same folder records into it;
- ``LoRANetwork.save_weights(file, dtype, metadata)`` (networks/lora.py, lora_flux.py):
  the checkpoint, the moment the file is complete (epoch, step and final files);
- ``epoch_logging(accelerator, logs, global_step, epoch)``: ``loss/epoch_average`` and
  other numbers per epoch (kohya calls it only with ``--log_with``);
- ``sample_images(accelerator, args, epoch, global_step, ...)``: called after every step
  (epoch None) and at each epoch end: the step reached, the sample images this process
  wrote (by epoch; step samples in the epoch in progress) and checkpoints removed since
  the last save (``--save_last_n_epochs`` / ``--save_last_n_steps``). The per-step call
  costs a comparison unless kohya sampled or saved at that step.

At ``train(args)`` (and again at ``update_metadata`` when kohya's account names the
settings otherwise) the launch guard asks whether the same configuration already failed
(``lora_tracker.guard``; ``--guard`` / ``LORA_TRACKER_GUARD``): a banner, or in strict
mode the run cancelled and exit status 3 before the first step; at most 0.8 s each.

Everything the hooks do is queued for a background thread; a hook never raises into
kohya (but for the guard's strict stop), and a failure is logged once per kind, then
counted. Only the main process records. A method missing in this kohya version, or one
whose leading parameters are not named as the hook expects (``EXPECTED_PARAMETERS``: the
hooks read arguments by position), is reported once and replaced by watching the output
folder.

Split by job: this module launches (the script imported, its main block run, a traceback
shown as kohya's own); ``kohya_patching`` wraps kohya's methods; ``kohya_tracker`` is the
per-run tracker the wrappers call.
"""

from __future__ import annotations

import ast
import importlib
import logging
import os
import sys
from pathlib import Path
from types import CodeType, ModuleType, TracebackType

from . import kohya_patching, kohya_tracker
from .kohya_patching import EXPECTED_PARAMETERS, _after, install
from .kohya_tracker import KohyaTracker, is_main_process

log = logging.getLogger(__name__)

RUN_NAME_ENV = "LORA_TRACKER_RUN"
DISABLE_ENV = "LORA_TRACKER_DISABLE"


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
            return compile(body, str(script.resolve()), "exec")
    return None


USAGE = """usage: accelerate launch lora_tracker_launch.py [--guard strict|warn|off] TRAIN_SCRIPT
                                                      [kohya arguments...]

Runs a kohya sd-scripts trainer (train_network.py, sdxl_train_network.py,
flux_train_network.py) unchanged, recording it with lora-tracker.
--guard: when the same configuration already failed, warn (default: a banner, training
goes on), strict (stop before the first step, exit status 3) or off (no check); also
LORA_TRACKER_GUARD=strict|warn|off.
Environment: LORA_TRACKER_RUN=name (run name), LORA_TRACKER_DATABASE_URL, LORA_TRACKER_HOME,
LORA_TRACKER_DISABLE=1 (run without recording)."""


def _launcher_options(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--guard MODE`` / ``--guard=MODE`` before the training script (kohya's own
    arguments come after it, untouched). ValueError for a missing value."""
    guard = None
    while argv and (argv[0] == "--guard" or argv[0].startswith("--guard=")):
        if argv[0] == "--guard":
            if len(argv) < 2:
                raise ValueError("--guard needs a value: strict, warn or off")
            guard, argv = argv[1], argv[2:]
        else:
            guard, argv = argv[0].partition("=")[2], argv[1:]
    return guard, argv


def main(argv: list[str]) -> int:
    """Entry point of hooks/kohya/lora_tracker_launch.py."""
    from ..guard import resolve_mode

    try:
        guard_option, argv = _launcher_options(argv)
        guard = resolve_mode(guard_option, source="--guard")
    except ValueError as exc:
        print(f"lora-tracker: {exc}", file=sys.stderr)
        return 2
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
    _quiet_logging()
    tracker = KohyaTracker(os.environ.get(RUN_NAME_ENV) or None, enabled=enabled, guard=guard)
    code, module = _hooked(tracker, script) if enabled else (None, None)
    if code is None or module is None:
        import runpy

        runpy.run_path(str(script), run_name="__main__")
        return 0
    try:
        exec(code, module.__dict__)
    except Exception as error:
        # an uncaught exception, shown as Python shows kohya's own (without the launcher's
        # frames) and the same exit status 1; SystemExit and Ctrl-C pass untouched
        trimmed = _without_our_frames(error.__traceback__)
        if trimmed is None:
            raise
        error.__traceback__ = trimmed
        sys.excepthook(type(error), error, trimmed)
        return 1
    return 0


def _quiet_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    # kohya's root logger is at INFO: lora-tracker says only what needs saying in its
    # console (warnings, and the one line when the embedded server is first created)
    for name, level in (("lora_tracker", logging.WARNING), ("lora_tracker.embedded", logging.INFO)):
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(level)


def _hooked(tracker: KohyaTracker, script: Path) -> tuple[CodeType | None, ModuleType | None]:
    """The script imported as a module with the hooks installed, and its main block
    (None: run it untracked)."""
    try:
        module = importlib.import_module(script.stem)
        code = main_block(script)
        if code is None:
            log.warning("lora-tracker: %s has no main block; running it untracked", script.name)
            return None, module
        install(tracker, module)
    except Exception:
        log.exception("lora-tracker: could not hook %s; running it untracked", script.name)
        return None, None
    return code, module


def _without_our_frames(tb: TracebackType | None) -> TracebackType | None:
    """The traceback without frames of the hook's modules and the launcher script (None if
    it cannot be rebuilt: then it is shown whole)."""
    ours = {__file__, kohya_patching.__file__, kohya_tracker.__file__}
    try:
        frames = []
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename
            if filename not in ours and not filename.endswith("lora_tracker_launch.py"):
                frames.append(tb)
            tb = tb.tb_next
        rebuilt: TracebackType | None = None
        for entry in reversed(frames):
            rebuilt = TracebackType(rebuilt, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
        return rebuilt
    except Exception:
        return None


__all__ = ["EXPECTED_PARAMETERS", "KohyaTracker", "_after", "install", "main", "main_block"]
