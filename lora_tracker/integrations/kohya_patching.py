"""Patching kohya's classes: the wrappers around NetworkTrainer's and LoRANetwork's methods,
installed once each, after a check that each method takes the parameters its hook reads."""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .kohya_tracker import KohyaTracker

log = logging.getLogger(__name__)

TRAINER_METHODS = ("train", "update_metadata", "epoch_logging", "sample_images")
# The leading parameters (after self) each wrapped method must take, by name: the hooks read
# their arguments by position, so a kohya that renamed or reordered them would feed the hooks
# the wrong values. As in sd-scripts main (commit 48d368fa, 2026-02-16).
EXPECTED_PARAMETERS: dict[str, tuple[str, ...]] = {
    "train": ("args",),
    "update_metadata": ("metadata", "args"),
    "epoch_logging": ("accelerator", "logs", "global_step", "epoch"),
    "sample_images": ("accelerator", "args", "epoch", "global_step"),
    "save_weights": ("file", "dtype", "metadata"),
}
NETWORK_MODULES = ("networks.lora", "networks.lora_flux")


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
        if depth == 0:
            tracker.safely("start", lambda: tracker.begin(args))
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
    missing: list[str] = []
    unexpected: list[str] = []  # there, but not taking the parameters the hooks read
    _hook_trainers(tracker, _trainer_classes(module), missing, unexpected)
    _hook_networks(tracker, missing, unexpected)
    # without update_metadata the run starts from train(args); others need the watcher
    tracker.missing = missing
    for what in missing:
        if what not in unexpected:  # those were warned about with their signature
            log.warning("lora-tracker: this kohya version has no %s; recording files instead", what)
    return missing


def _hook_trainers(
    tracker: KohyaTracker, trainers: list[type], missing: list[str], unexpected: list[str]
) -> None:
    hooks: dict[str, Callable[..., None]] = {
        "update_metadata": lambda self, metadata, args, *a, **k: tracker.start(args, metadata),
        "epoch_logging": lambda self, accelerator, logs, global_step, epoch, *a, **k:
            tracker.after_epoch_logging(logs, epoch),
        "sample_images": lambda self, accelerator, args, epoch, global_step=None, *a, **k:
            tracker.after_samples(epoch, global_step),
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
            if _unexpected_signature(cls.__name__, original, name):
                unexpected.append(f"NetworkTrainer.{name}")
                if f"NetworkTrainer.{name}" not in missing:
                    missing.append(f"NetworkTrainer.{name}")
            elif name == "train":
                setattr(cls, name, _wrap_train(tracker, original))
            else:
                setattr(cls, name, _after(tracker, name, hooks[name])(original))


def _hook_networks(tracker: KohyaTracker, missing: list[str], unexpected: list[str]) -> None:
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
        if getattr(original, "__lora_tracker_wrapped__", False):
            networks += 1
        elif _unexpected_signature(f"{module_name}.LoRANetwork", original, "save_weights"):
            unexpected.append("LoRANetwork.save_weights")
        else:
            network.save_weights = saved_hook(original)  # type: ignore[union-attr]
            networks += 1
    if networks == 0 or "LoRANetwork.save_weights" in unexpected:
        missing.append("LoRANetwork.save_weights")  # another network's hook may still work


def _unexpected_signature(where: str, method: Any, name: str) -> bool:
    """Whether ``method`` does not take the parameters its hook reads (then it counts as
    missing: warned about once, here, and left unwrapped)."""
    expected = EXPECTED_PARAMETERS[name]
    try:
        parameters = list(inspect.signature(method).parameters.values())
    except (TypeError, ValueError):  # a builtin or C method: nothing to compare, trust it
        return False
    positional = [
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ][1 : 1 + len(expected)]  # after self
    if tuple(positional) == expected:
        return False
    log.warning(
        "lora-tracker: this kohya version's %s.%s takes (%s), not (%s); recording files instead",
        where, name, ", ".join(positional), ", ".join(expected),
    )  # fmt: skip
    return True


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
