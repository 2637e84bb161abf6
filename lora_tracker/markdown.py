"""Writing GitHub-flavoured Markdown safely: user text escaped, tables aligned in the source.

Everything recorded (run names, findings, issues, paths) is user text: it may hold ``|``,
backticks, ``*``, ``<`` or newlines, and must come out as the same text, never as
Markdown structure. Plain data in, one string out; nothing here touches the database.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from .control_chars import escape_control

# ASCII punctuation that can start inline structure anywhere in a line
_ALWAYS = frozenset("\\`*[]<|~")
# an HTML entity or numeric character reference, which would be decoded
_ENTITY = re.compile(r"&(#\d+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);")
# a line start that would open a block: heading, quote, list item, setext underline
_BLOCK_START = re.compile(r"^([#>+=-])")
_ORDERED_ITEM = re.compile(r"^(\d{1,9})([.)])")

DASH = "\u2013"  # an en dash: an empty or unknown value


def text(value: Any) -> str:
    """User text as one line of inline Markdown that renders as exactly that text.

    Runs of whitespace, newlines included, become one space (a table cell, a heading or a
    list item holds one line).
    """
    line = " ".join(escape_control(str(value)).split())
    return _escape_line(line)


def paragraph(value: Any, indent: str = "") -> str:
    """User text that may span lines: each line escaped, joined by hard line breaks.

    ``indent`` goes before every line after the first (inside a list item). Blank lines
    are dropped so the text stays one paragraph.
    """
    lines = [" ".join(line.split()) for line in escape_control(str(value)).splitlines()]
    kept = [_escape_line(line) for line in lines if line]
    return ("\\\n" + indent).join(kept)


def _escape_line(line: str) -> str:
    out: list[str] = []
    for index, char in enumerate(line):
        if char in _ALWAYS:
            out.append("\\" + char)
        elif char == "_":
            # intraword underscores (SD15_PERFECT_Nov9) cannot emphasise: keep them readable
            before = line[index - 1] if index else " "
            after = line[index + 1] if index + 1 < len(line) else " "
            out.append("_" if before.isalnum() and after.isalnum() else "\\_")
        elif char == "&" and _ENTITY.match(line, index):
            out.append("\\&")
        else:
            out.append(char)
    escaped = "".join(out)
    escaped = _BLOCK_START.sub(r"\\\1", escaped)
    return _ORDERED_ITEM.sub(r"\1\\\2", escaped)


def code(value: Any, *, in_table: bool = False) -> str:
    """User text as a code span (run names, caption versions, paths).

    The fence is one backtick longer than the longest run inside. In a table a ``|``
    must be written ``\\|`` even inside a code span (GFM splits cells first); text that
    also holds a backslash before a pipe cannot be written so and falls back to ``text``.
    """
    content = " ".join(escape_control(str(value)).split())
    if not content:
        return DASH
    if in_table and "|" in content:
        if "\\|" in content:
            return text(content)
        content = content.replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", content)), default=0)
    fence = "`" * (longest + 1)
    if content.startswith("`") or content.endswith("`") or content.startswith(" "):
        content = f" {content} "
    return f"{fence}{content}{fence}"


def number(value: Any) -> str:
    """A number as people write it: 16 (not 16.0 or 16.00), 4.5, 0.5, 1e-4, 5e-5."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return str(int(value))
        return format(value.normalize(), "f")
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        if value != 0 and abs(value) < 1e-3:
            mantissa, exponent = f"{value:.6e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:.6g}"
    return str(value)


def day(value: datetime) -> str:
    """The UTC date of a timestamp (the same bytes whatever the session's time zone)."""
    return value.astimezone(timezone.utc).date().isoformat()


def width(cell: str) -> int:
    """Columns a string takes in a monospaced editor: wide characters count two."""
    total = 0
    for char in cell:
        if unicodedata.combining(char):
            continue
        total += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return total


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A GFM table, every column padded to its widest cell so the source reads as a table.

    Cells are inline Markdown already (from ``text``, ``code``, ``number``): pipes inside
    them are escaped. ``align``: one letter per column, ``l`` or ``r`` (default all left).
    """
    alignment = align or "l" * len(headers)
    cells = [list(row) for row in rows]
    widths = [
        max([width(headers[i]), 3, *(width(row[i]) for row in cells)]) for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        padded = []
        for i, value in enumerate(values):
            gap = " " * (widths[i] - width(value))
            padded.append(gap + value if alignment[i] == "r" else value + gap)
        return "| " + " | ".join(padded) + " |"

    rule = [
        "-" * (widths[i] - 1) + ":" if alignment[i] == "r" else "-" * widths[i]
        for i in range(len(headers))
    ]
    return "\n".join([line(headers), line(rule), *(line(row) for row in cells)])
