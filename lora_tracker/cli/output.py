"""Printing rows as a readable table, JSON (an array of objects) or CSV with a header."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from ..jsonable import to_jsonable as to_jsonable


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(to_jsonable(value), ensure_ascii=False)
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    return str(value)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table; cells that would be unreadably long are cut with an ellipsis."""
    from tabulate import tabulate

    cells = [[_shorten(_cell(v)) for v in row] for row in rows]
    return tabulate(cells, headers=list(columns), tablefmt="simple", disable_numparse=True)


def _shorten(text: str, width: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def format_json(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    objects = [dict(zip(columns, (to_jsonable(v) for v in row), strict=False)) for row in rows]
    return json.dumps(objects, indent=2, ensure_ascii=False)


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


def echo_records(
    records: Sequence[dict[str, Any]],
    fmt: str | None,
    table_columns: Sequence[str] | None = None,
    *,
    empty: str = "(nothing)",
) -> None:
    """Dict rows: every column as JSON/CSV, the chosen columns as a table."""
    columns = list(records[0]) if records else list(table_columns or [])
    if fmt in ("json", "csv"):
        echo_rows(columns, [[r.get(c) for c in columns] for r in records], fmt)
        return
    if not records:
        click.echo(empty)
        return
    shown = list(table_columns or columns)
    echo_rows(shown, [[r.get(c) for c in shown] for r in records])


def echo_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table") -> None:
    """Print rows in the chosen format: ``table``, ``json`` or ``csv``."""
    if fmt == "json":
        click.echo(format_json(columns, rows))
    elif fmt == "csv":
        click.echo(format_csv(columns, rows), nl=False)
    else:
        click.echo(format_table(columns, rows))
