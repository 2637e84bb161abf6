"""The background threads a training thread's call starts wait for that call to return.

A training thread waits in ``Thread.start()`` for each thread it starts, and then needs the
interpreter lock back to finish its call. A started thread that goes straight to its
imports (psycopg, pydantic: tens of milliseconds of CPU) holds that lock meanwhile, and the
training thread gets it back only at the next switch (5 ms). So `start_run` holds its
threads (`caller_first`) until it returns; each thread's first step is `after_caller`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

MAX_HOLD_S = 0.05  # a thread waits at most this long (a caller that never says it is done)

_free = threading.Event()
_free.set()


@contextlib.contextmanager
def caller_first() -> Iterator[None]:
    """While this block runs, threads started in it wait (`after_caller`) before working."""
    _free.clear()
    try:
        yield
    finally:
        _free.set()


def after_caller() -> None:
    """A background thread's first step: wait for the call that started it to return (at
    most `MAX_HOLD_S`; at once when no call holds threads)."""
    _free.wait(MAX_HOLD_S)
