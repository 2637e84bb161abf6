"""Printing rows as a readable table, JSON (an array of objects) or CSV with a header.

Tables fit the terminal: on a terminal the columns that fit its width ($COLUMNS when the
shell exports it) are shown, most useful first, long text cut with an ellipsis;
``--columns`` chooses them and ``--wide`` shows all. Piped or redirected output is never
cut, whatever $COLUMNS says (many shells export it), unless $LORA_TRACKER_WIDTH asks for a
width. rich lays the
table out; it is imported only when a table is printed, so ``--help`` stays fast.

Text that came from files or the database is printed with control characters escaped
(``\\x1b``), so a checkpoint's metadata cannot drive the terminal.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import click

from ..control_chars import escape_control as escape_control
from ..jsonable import to_jsonable as to_jsonable

_MIN_TEXT_WIDTH = 10
_UNCUT_WIDTH = 24
_TEXT_WIDTH = 40  # long text gets this much before the columns after it
_GAP = 2


def echo(text: Any = "", *, err: bool = False, nl: bool = True) -> None:
    """click.echo with control characters escaped (for text that holds recorded values)."""
    click.echo(escape_control(str(text)), err=err, nl=nl)


def echo_wrapped(text: str, width: int | None, indent: int = 2) -> None:
    """A line of prose, escaped, wrapped to ``width`` (continuation lines indented by
    ``indent``); as is when there is no width (piped output)."""
    line = escape_control(re.sub(r"[ \t]*\n[ \t]*|\t", " ", text), keep_newlines=False)
    if width is None or len(line) <= width:
        click.echo(line)
        return
    import textwrap

    click.echo(textwrap.fill(line, width=width, subsequent_indent=" " * indent,
                             break_on_hyphens=False))  # fmt: skip


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """'1 run', '5 runs', '1 epoch result', '0 rows'."""
    return f"{count} {noun if count == 1 else (nouns or noun + 's')}"


def human_number(value: float | Decimal | int) -> str:
    """A number as people write it: 16 (not 16.0), 0.5, 0.0001, 1e-05."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return str(value)
        if value == value.to_integral_value():
            return str(int(value))
        text = format(value.normalize(), "f")
        return text
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return re.sub(r"e([+-])0*(\d)", r"e\1\2", repr(value)).replace("e+", "e")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float, Decimal)):
        return human_number(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(to_jsonable(value), ensure_ascii=False)
    if isinstance(value, dt.datetime):
        moment: dt.datetime = value
        if moment.tzinfo is not None:  # local time, as people read a clock
            moment = moment.astimezone().replace(tzinfo=None)
        return moment.isoformat(sep=" ", timespec="minutes")
    return str(value)


def display_cell(value: Any) -> str:
    """One table cell: on one line, control characters escaped."""
    return escape_control(" ".join(_cell(value).split()), keep_newlines=False)


WIDTH_VARIABLE = "LORA_TRACKER_WIDTH"


def terminal_width() -> int | None:
    """The width tables must fit: $LORA_TRACKER_WIDTH when set (piped or not); on a
    terminal, its width ($COLUMNS first, as the shell keeps it); None when output is piped
    or redirected (then nothing is cut, even when the shell exports $COLUMNS)."""
    asked = os.environ.get(WIDTH_VARIABLE, "").strip()
    if asked:
        if not (asked.isascii() and asked.isdigit() and int(asked) > 0):
            raise click.ClickException(
                f"${WIDTH_VARIABLE} must be a number of columns, like 100 (it is {asked!r})"
            )
        return int(asked)
    if stdout_is_terminal():
        import shutil

        return shutil.get_terminal_size().columns
    return None


def confirm_or_stop(question: str) -> None:
    """Ask ``question`` (y/n); "n" stops the command (exit 1). With no answer to read
    (standard input is not a terminal and holds none), say how to go ahead instead of a
    bare "Aborted!"."""
    try:
        answered = click.confirm(question)
    except click.Abort:
        try:
            asked = sys.stdin.isatty()
        except (AttributeError, ValueError, OSError):
            asked = False
        if asked:
            raise  # Ctrl-C at the question
        raise click.ClickException(
            "no answer to the question (standard input is not a terminal): nothing was "
            "changed; --yes goes ahead without asking"
        ) from None
    if not answered:
        raise click.Abort()


def stdout_is_terminal() -> bool:
    """Whether standard output is a terminal (not a pipe, file or test runner)."""
    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _numeric(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None and v != ""]
    return bool(present) and all(
        isinstance(v, (int, float, Decimal)) and not isinstance(v, bool) for v in present
    )


def fit_columns(
    columns: Sequence[str], rows: Sequence[Sequence[str]], width: int | None
) -> tuple[list[int], list[int]]:
    """Which columns fit ``width`` (indexes, most useful first = given order) and the
    width of each. Without a width, every column at its natural width."""
    from rich.cells import cell_len

    natural = [
        max([cell_len(str(h)), *(cell_len(r[i]) for r in rows)]) for i, h in enumerate(columns)
    ]
    if width is None:
        return list(range(len(columns))), natural
    # names, dates and numbers (short) are never cut; long text is, to a readable floor
    minimum = [n if n <= _UNCUT_WIDTH else min(n, _TEXT_WIDTH) for n in natural]
    chosen: list[int] = []
    used = 0
    for i in range(len(columns)):
        gap = _GAP if chosen else 0
        extra = minimum[i] + gap
        if chosen and used + extra > width:
            room = width - used - gap
            # long text, or the second column (the name), is cut to the room left
            if room >= _MIN_TEXT_WIDTH and (natural[i] > _UNCUT_WIDTH or len(chosen) < 2):
                minimum[i] = room
                extra = room + gap
            else:
                continue
        chosen.append(i)
        used += extra
    widths = {i: minimum[i] for i in chosen}
    spare = width - used
    # give the room left to the columns that were cut, in order of usefulness
    for i in chosen:
        if spare <= 0:
            break
        grow = max(0, min(natural[i] - widths[i], spare))
        widths[i] += grow
        spare -= grow
    return chosen, [widths[i] for i in chosen]


def format_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    width: int | None = None,
) -> str:
    """A plain-text table that fits ``width`` (columns dropped from the right, long text
    cut with an ellipsis); with no width, everything at full length."""
    return fitted_table(columns, rows, width)[0]


def fitted_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], width: int | None
) -> tuple[str, list[str]]:
    """`format_table`'s text, and the columns it left out to fit ``width``.

    rich measures and cuts the text (terminal cell widths of wide characters, the
    ellipsis); the lines themselves are simple enough to join here, which costs a fraction
    of a rich Table render (that matters: `stats` prints six tables)."""
    from rich.cells import cell_len

    cells = [[display_cell(v) for v in row] for row in rows]
    headers = [escape_control(str(c), keep_newlines=False) for c in columns]
    chosen, widths = fit_columns(headers, cells, width)
    right = [_numeric([row[index] for row in rows]) for index in chosen]

    def line(texts: list[str]) -> str:
        parts = []
        for text, column_width, align_right in zip(texts, widths, right, strict=True):
            if cell_len(text) > column_width:
                text = _cut(text, column_width)
            padding = " " * (column_width - cell_len(text))
            parts.append(padding + text if align_right else text + padding)
        return "  ".join(parts).rstrip()

    rule = " ".join("-" * (w + 1) for w in widths[:-1])
    rule = (rule + " " if rule else "") + "-" * (widths[-1] if widths else 0)
    lines = [line([headers[i] for i in chosen]), rule.rstrip()]
    lines += [line([row[i] for i in chosen]) for row in cells]
    kept = set(chosen)
    left_out = [header for index, header in enumerate(headers) if index not in kept]
    return "\n".join(lines), left_out


def left_out_line(left_out: Sequence[str], width: int, hint: str) -> str:
    """``(2 columns left out: a, b; HINT)``, naming as many as fit ``width``."""
    head = f"({plural(len(left_out), 'column')} left out: "
    tail = f"; {hint})" if hint else ")"
    for shown in range(len(left_out), 0, -1):
        names = ", ".join(left_out[:shown])
        if shown < len(left_out):
            names += f" and {len(left_out) - shown} more"
        if len(head) + len(names) + len(tail) <= width:
            return head + names + tail
    return f"({plural(len(left_out), 'column')} left out{tail}"


def _cut(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal cells, ending with an ellipsis."""
    from rich.text import Text

    cut = Text(text, no_wrap=True, overflow="ellipsis")
    cut.truncate(width, overflow="ellipsis")
    return cut.plain


def _rule_box() -> Any:
    from rich.box import Box

    return Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)


def format_expanded(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """One field per line, a record header between rows (psql's expanded display)."""
    headers = [escape_control(str(c), keep_newlines=False) for c in columns]
    name_width = max((len(h) for h in headers), default=0)
    lines: list[str] = []
    for number, row in enumerate(rows, 1):
        lines.append(f"-[ RECORD {number} ]" + "-" * max(name_width - 10, 4))
        for header, value in zip(headers, row, strict=False):
            lines.append(f"{header:<{name_width}} | {display_cell(value)}")
    return "\n".join(line.rstrip() for line in lines)


def table_fits(columns: Sequence[str], rows: Sequence[Sequence[Any]], width: int) -> bool:
    """Whether every row fits ``width`` with all its columns at full length."""
    from rich.cells import cell_len

    cells = [[display_cell(v) for v in row] for row in rows]
    natural = [
        max([cell_len(str(h)), *(cell_len(r[i]) for r in cells)]) for i, h in enumerate(columns)
    ]
    return sum(natural) + _GAP * max(len(natural) - 1, 0) <= width


def format_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    objects = [dict(zip(columns, (to_jsonable(v) for v in row), strict=False)) for row in rows]
    return json_text(objects)


def json_text(value: Any) -> str:
    """Indented JSON; C1 control characters written as \\u escapes (json.dumps already
    escapes C0), so the JSON is the same data and safe on a terminal."""
    text = json.dumps(to_jsonable(value), indent=2, ensure_ascii=False)
    return re.sub(r"[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text)


def format_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(v) for v in row])
    return buffer.getvalue()


def _csv_cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(to_jsonable(value), ensure_ascii=False)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    return _cell(value)


F = TypeVar("F", bound=Callable[..., Any])


def format_options(command: F) -> F:
    """--json and --csv on a command, as ``fmt`` (None: a readable table)."""
    command = click.option("--csv", "fmt", flag_value="csv", help="Print CSV with a header.")(
        command
    )
    command = click.option("--json", "fmt", flag_value="json",
                           help="Print a JSON array of objects.")(command)  # fmt: skip
    return command


def layout_options(command: F) -> F:
    """--columns and --wide: which table columns to show (as ``layout``)."""
    command = click.option(
        "--wide", is_flag=True, help="Show every column, however wide the table gets."
    )(command)
    command = click.option(
        "--columns", "columns", metavar="A,B,...",
        help="Show these columns, in this order (see --wide for all).",
    )(command)  # fmt: skip
    return command


class Layout:
    """How a command's tables are laid out: chosen columns, all of them, or what fits."""

    def __init__(self, columns: str | None = None, wide: bool = False) -> None:
        self.wanted = [c.strip() for c in columns.split(",") if c.strip()] if columns else []
        self.wide = wide
        if columns is not None and not self.wanted:
            raise click.BadParameter("name at least one column", param_hint="--columns")

    @property
    def width(self) -> int | None:
        return None if self.wide or self.wanted else terminal_width()

    def select(self, default: Sequence[str], available: Sequence[str]) -> list[str]:
        """The columns to show: --columns (checked against ``available``), all with
        --wide, else ``default``."""
        if self.wanted:
            unknown = [c for c in self.wanted if c not in available]
            if unknown:
                raise click.BadParameter(
                    f"no column {', '.join(unknown)}{_suggest(unknown[0], available)}; "
                    f"columns: {', '.join(available)}",
                    param_hint="--columns",
                )
            return list(self.wanted)
        if self.wide:
            return list(dict.fromkeys([*default, *available]))
        return list(default)


def _suggest(word: str, choices: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def echo_records(
    records: Sequence[dict[str, Any]],
    fmt: str | None,
    table_columns: Sequence[str] | None = None,
    *,
    empty: str = "(nothing)",
    layout: Layout | None = None,
) -> None:
    """Dict rows: every column as JSON/CSV, the chosen columns as a table."""
    columns = list(records[0]) if records else list(table_columns or [])
    if fmt in ("json", "csv"):
        echo_rows(columns, [[r.get(c) for c in columns] for r in records], fmt)
        return
    layout = layout or Layout()
    shown = layout.select(list(table_columns or columns), columns)
    if not records:
        click.echo(empty)
        return
    echo_rows(shown, [[r.get(c) for c in shown] for r in records], layout=layout)


def echo_rows(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: str = "table",
    *,
    layout: Layout | None = None,
    say_left_out: Callable[[list[str]], str] | None = None,
) -> None:
    """Print rows in the chosen format: ``table``, ``json`` or ``csv``. A table cut to the
    width says, on stderr, which columns it left out (``say_left_out``: in its own words)."""
    if fmt == "json":
        click.echo(format_json(columns, rows))
    elif fmt == "csv":
        text = format_csv(columns, rows)
        if stdout_is_terminal():
            text = escape_control(text)
        click.echo(text, nl=False)
    else:
        width = (layout or Layout()).width
        text, left_out = fitted_table(columns, rows, width)
        click.echo(text)
        if left_out and width is not None:  # (on stderr: what a script reads stays a table)
            if say_left_out is not None:
                click.echo(say_left_out(left_out), err=True)
            else:
                hint = "--wide shows them" if layout is not None else ""
                click.echo(left_out_line(left_out, width, hint), err=True)
