"""lora-tracker: a complete, queryable record of every LoRA training experiment.

The library is importable without the CLI; heavy modules load on first use so that
``lora-tracker --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .db import Database
    from .errors import LoraTrackerError
    from .tracking import TrackedRun, start_run

__all__ = ["Database", "LoraTrackerError", "TrackedRun", "__version__", "start_run"]

_LAZY = {
    "Database": "db",
    "LoraTrackerError": "errors",
    "TrackedRun": "tracking",
    "start_run": "tracking",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lora_tracker' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
