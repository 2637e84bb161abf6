"""Composing INSERT/UPDATE statements from model fields, with identifiers quoted by psycopg.

Column names come from pydantic models, never from user text; values always travel as
parameters.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

JSON_COLUMNS = frozenset(
    {"tag_frequency", "dataset_dirs", "config", "checkpoint_metadata", "metrics"}
)


def adapt(column: str, value: Any) -> Any:
    """Wrap JSON values so psycopg sends them as jsonb."""
    if column in JSON_COLUMNS and value is not None:
        return Jsonb(value)
    return value


def insert(
    table: str,
    values: dict[str, Any],
    returning: str = "*",
    on_conflict: str = "",
) -> tuple[sql.Composed, list[Any]]:
    """``INSERT INTO table (cols) VALUES (%s, ...) [ON CONFLICT ...] RETURNING ...``.

    ``on_conflict`` and ``returning`` are fixed SQL written in this package, never user text.
    """
    columns = list(values)
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) {} RETURNING {}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        sql.SQL(on_conflict),
        sql.SQL(returning),
    )
    return query, [adapt(c, values[c]) for c in columns]


def upsert(
    table: str, keys: dict[str, Any], values: dict[str, Any]
) -> tuple[sql.Composed, list[Any]]:
    """``INSERT ... ON CONFLICT (keys) DO UPDATE SET`` only ``values``, ``RETURNING *``.

    With no values the row is left as it is (a no-op update on a key column), and still
    returned.
    """
    columns = {**keys, **values}
    changed = values or {next(iter(keys)): None}
    updates = sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in changed
    )
    query = sql.SQL(
        "INSERT INTO {table} ({cols}) VALUES ({vals}) "
        "ON CONFLICT ({keys}) DO UPDATE SET {updates} RETURNING *"
    ).format(
        table=sql.Identifier(table),
        cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
        vals=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        keys=sql.SQL(", ").join(map(sql.Identifier, keys)),
        updates=updates,
    )
    return query, [adapt(c, v) for c, v in columns.items()]


def assignments(values: dict[str, Any]) -> tuple[sql.Composed, list[Any]]:
    """``col = %s, ...`` for an UPDATE's SET list, and its parameters."""
    parts = [sql.SQL("{} = %s").format(sql.Identifier(c)) for c in values]
    return sql.SQL(", ").join(parts), [adapt(c, v) for c, v in values.items()]


def like_escape(text: str) -> str:
    """``text`` with LIKE's wildcards (and the escape character) escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def like_prefix(text: str) -> str:
    """A LIKE pattern matching strings that start with ``text``."""
    return like_escape(text) + "%"
