"""Text that came from files (run names from ``ss_output_name``, metadata values, paths) is
shown with its control characters escaped, so a checkpoint cannot move the cursor, set the
terminal's title or hide what follows."""

from __future__ import annotations

import logging
import re

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides that
# can make a line read differently from what it holds.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every control character written as a visible escape (``\\x1b``)."""
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class PrintableFormatter(logging.Formatter):
    """A log formatter whose lines never carry a control character from the data."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))
