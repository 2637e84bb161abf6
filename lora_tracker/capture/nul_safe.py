"""PostgreSQL cannot store the NUL character, in text or in jsonb; trainers can write it.

A checkpoint whose metadata holds ``\\u0000`` (or a run name given to the Python API with
one) must still be recorded, not refused whole. On the connections capture writes through,
text parameters lose their NUL characters and jsonb documents keep them escaped as the six
characters ``\\u0000``, so the raw value stays readable in ``checkpoint_metadata`` /
``config``.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from psycopg.abc import Buffer
from psycopg.types.json import set_json_dumps
from psycopg.types.string import StrBinaryDumper, StrDumperUnknown

NUL = "\x00"
ESCAPED_NUL = "\\u0000"


def strip_nul(text: str) -> str:
    return text.replace(NUL, "") if NUL in text else text


def escape_nul(value: Any) -> Any:
    """``value`` with every NUL in its strings (keys included) written as ``\\u0000``."""
    if isinstance(value, str):
        return value.replace(NUL, ESCAPED_NUL) if NUL in value else value
    if isinstance(value, dict):
        return {escape_nul(k): escape_nul(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [escape_nul(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    text = json.dumps(value)
    if "\\u0000" not in text:  # no NUL (json writes one as \u0000): nothing to escape
        return text
    return json.dumps(escape_nul(value))


def make_nul_safe(conn: psycopg.Connection[Any]) -> None:
    """Adapt ``conn`` so no parameter it sends can hold a NUL character."""
    conn.adapters.register_dumper(str, _NulFreeText)
    conn.adapters.register_dumper(str, _NulFreeBinary)
    set_json_dumps(_dumps, context=conn)


# The pure-Python dumpers are subclassable (the C ones are not); these are the same
# dumpers psycopg picks for a ``str`` parameter (unknown type in text, text in binary).
class _NulFreeText(StrDumperUnknown):
    def dump(self, obj: str) -> Buffer | None:
        return super().dump(strip_nul(obj))


class _NulFreeBinary(StrBinaryDumper):
    def dump(self, obj: str) -> Buffer | None:
        return super().dump(strip_nul(obj))
