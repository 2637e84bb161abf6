"""Finding a row the way a person names it: by id, exact name, or unique name prefix.

Runs and test prompts are both found this way (`runs.get_run`, `prompts.get_prompt`), so
`show 12`, `show SD15_PERF` and `prompt score ... cat` resolve alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from psycopg import sql

from ._sqlbuild import like_prefix
from .errors import AmbiguousName, InvalidInput, NotFound
from .pg import Connection

MAX_CANDIDATES = 10  # names listed when a prefix matches several rows


def find_by_ref(
    conn: Connection,
    table: str,
    name_column: str,
    ref: str | int,
    *,
    noun: str,
    nouns: str,
    not_found_hint: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """The row of ``table`` whose id is ``ref`` (digits), whose ``name_column`` is ``ref``,
    or whose name alone starts with ``ref`` (LIKE wildcards in ``ref`` match themselves).

    ``table`` and ``name_column`` are fixed names written in this package. Raises
    InvalidInput for an empty ``ref``, NotFound ("no {noun} named 'x'" plus the hint),
    and AmbiguousName listing up to MAX_CANDIDATES names ("'x' matches several {nouns}").
    """
    text = str(ref).strip()
    if not text:
        raise InvalidInput(f"a {noun} name or id is required")
    table_id, name_id = sql.Identifier(table), sql.Identifier(name_column)
    # an id is ASCII digits that fit a bigint ("²".isdigit() is True, int("²") fails)
    if text.isascii() and text.isdigit() and len(text) <= 18:
        row = conn.execute(
            sql.SQL("SELECT * FROM {} WHERE id = %s").format(table_id), (int(text),)
        ).fetchone()
        if row and isinstance(ref, int):
            return row  # an id, as the code holds it (not typed by a person)
        if row:
            named = conn.execute(
                sql.SQL("SELECT id FROM {} WHERE {} = %s AND id <> %s").format(table_id, name_id),
                (text, row["id"]),
            ).fetchone()
            if named:  # a name of digits: which one is meant is not for this to guess
                raise AmbiguousName(
                    f"{text!r} is the id of {noun} {row[name_column]!r} and the name of "
                    f"{noun} id {named['id']}: give {row[name_column]!r} or {named['id']}"
                )
            return row
    row = conn.execute(
        sql.SQL("SELECT * FROM {} WHERE {} = %s").format(table_id, name_id), (text,)
    ).fetchone()
    if row:
        return row
    rows = conn.execute(
        sql.SQL("SELECT * FROM {t} WHERE {n} LIKE %s ORDER BY {n} LIMIT %s").format(
            t=table_id, n=name_id
        ),
        (like_prefix(text), MAX_CANDIDATES + 1),
    ).fetchall()
    if len(rows) == 1:
        return rows[0]
    if not rows:
        hint = not_found_hint(text) if not_found_hint is not None else ""
        raise NotFound(f"no {noun} named {text!r}{hint}")
    names = ", ".join(r[name_column] for r in rows[:MAX_CANDIDATES])
    more = " ..." if len(rows) > MAX_CANDIDATES else ""
    raise AmbiguousName(f"{text!r} matches several {nouns}: {names}{more}")
