"""Recorded text shown on a terminal: control characters escaped (no click, no I/O), for
the CLI and for what the library logs into a trainer's console."""

from __future__ import annotations

import re
from typing import Any

# C0 and C1 control characters and DEL, and the bidirectional overrides that make a line
# read differently from what it holds; newline and tab are handled by the caller.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_CONTROL_ALL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def escape_control(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with terminal control characters shown as ``\\xNN`` (newline and tab kept)."""
    pattern = _CONTROL if keep_newlines else _CONTROL_ALL
    return pattern.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def short_repr(value: Any, limit: int) -> str:
    """``repr(value)`` in at most ``limit`` characters (a value a caller gave, in a line
    that says it was left out)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def has_control(text: str) -> bool:
    """Whether ``text`` holds a character `escape_control` shows escaped (a tab and a
    newline too)."""
    return _CONTROL_ALL.search(text) is not None
