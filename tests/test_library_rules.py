"""The rules that live in the library once: vocabularies against the schema's CHECKs,
judging called directly (as the dashboard will), finding by reference, and the statistics
the dashboard and `stats` share."""

from __future__ import annotations

import re
from typing import Any

import psycopg

from lora_tracker import vocab


def _check_vocabulary(definition: str) -> tuple[str, set[str]] | None:
    """(column, allowed values) of a CHECK that is a list of text values, else None."""
    # PostgreSQL prints `col IN ('a', 'b')` as `(col = ANY (ARRAY['a'::text, 'b'::text]))`
    match = re.fullmatch(r"CHECK \(\(\(?(\w+) = ANY \(ARRAY\[(.*)\]\)\)\)?\)?", definition.strip())
    if not match:
        return None
    return match.group(1), set(re.findall(r"'([^']*)'::text", match.group(2)))


def test_schema_checks_match_python_vocabularies(conn: psycopg.Connection[Any]) -> None:
    """Every list-of-values CHECK in the migrated schema allows exactly vocab.py's values,
    and every vocabulary of vocab.py has its CHECK."""
    rows = conn.execute(
        "SELECT conrelid::regclass::text AS tbl, pg_get_constraintdef(oid) AS def "
        "FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND contype = 'c'"
    ).fetchall()
    found: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        parsed = _check_vocabulary(row["def"])
        if parsed is not None:
            found[(row["tbl"], parsed[0])] = parsed[1]
    expected = {key: set(values) for key, values in vocab.SCHEMA_VOCABULARIES.items()}
    assert found == expected


def test_vocabulary_tuples_follow_the_literals() -> None:
    """The CLI's tuples and pydantic's Literals are one list each (no second spelling)."""
    from typing import get_args

    from lora_tracker import models

    assert models.RunStatus is vocab.RunStatus
    assert get_args(models.ModelType) == vocab.MODEL_TYPES
    assert get_args(vocab.EpochVerdict) == models.EPOCH_VERDICTS
